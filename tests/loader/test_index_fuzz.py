"""Fuzzing ``index.json``'s fields over a real shard set: shard entries with other sample counts, byte
sizes, URLs and sha256s (of other kinds, out of range, of another shard), shards listed twice or left out,
totals changed. Each index is either refused when read (:class:`IndexFormatError` naming it) or read by the
loader (``on_error="skip"``) without a silent loss or duplicate: every delivered sample is a real one, none
comes twice unless counted as padding, and what the index lists is delivered or counted as skipped.

tests/test_fuzz.py fuzzes the tar bytes and the index's JSON; this fuzzes what the index's numbers make the
loader do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lossyload import make_loader
from lossyload.errors import IndexFormatError
from lossyload.index import INDEX_NAME

from ..test_fuzz import fuzz
from .conftest import build

pytestmark = pytest.mark.usefixtures("one_thread")
N = 12  # samples: shards of 7 and 5


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return build(tmp_path_factory, "fuzz-index", N)


def field_values(shards: list[dict], name: str) -> st.SearchStrategy:
    """Values for one field of a shard entry: other shards' values, nearby and extreme numbers, other kinds."""
    others = st.sampled_from([s[name] for s in shards])
    kinds = st.sampled_from([None, True, False, 7.0, 7.5, "7", " 7 ", [], {}, float("inf")])
    if name in ("samples", "bytes"):
        return (others | st.integers(-3, 20) | st.sampled_from([10**9, 2**63 - 1, 2**64, -(2**63)]) | kinds
                | others.map(lambda v: v * 2))
    if name == "url":
        return others | st.sampled_from(["missing.tar", "shard-000000.tar\x00", "../x.tar", "", "a/../b.tar"]) | kinds
    return others | st.sampled_from(["0" * 64, "A" * 64, "a" * 63, ""]) | kinds  # sha256


_REAL: dict[Path, set[str]] = {}


def real_keys(ds: Path) -> set[str]:
    if ds not in _REAL:
        _REAL[ds] = {k for _, _, batch in make_loader(str(ds), batch_size=4, train=False, options={"crop": 32},
                                                      return_keys=True) for k in batch}
        assert len(_REAL[ds]) == N
    return _REAL[ds]


@st.composite
def edited_index(draw, doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    shards = doc["shards"]
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["field", "field", "field", "duplicate", "drop", "totals"]))
        i = draw(st.integers(0, len(shards) - 1)) if shards else None
        if what == "field" and i is not None:
            name = draw(st.sampled_from(["samples", "bytes", "url", "sha256"]))
            shards[i][name] = draw(field_values(shards, name))
        elif what == "duplicate" and i is not None:
            shards.append(dict(shards[i]))
        elif what == "drop" and i is not None:
            del shards[i]
        elif what == "totals":
            doc["totals"][draw(st.sampled_from(["samples", "bytes", "shards"]))] = draw(st.integers(-1, 100))
    if draw(st.booleans()):
        doc.pop("totals")
    return doc


@fuzz(60, 5000)
@given(data=st.data())
def test_an_edited_index_is_refused_or_read_without_silent_loss(small: Path, tmp_path_factory, data) -> None:
    original = json.loads((small / INDEX_NAME).read_text())
    doc = data.draw(edited_index(original))
    ds = tmp_path_factory.mktemp("edited")
    for p in small.iterdir():
        if p.name != INDEX_NAME:
            shutil.copy(p, ds / p.name)
    (ds / INDEX_NAME).write_text(json.dumps(doc))
    try:
        ld = make_loader(str(ds), batch_size=4, train=False, options={"crop": 32}, on_error="skip", return_keys=True)
    except IndexFormatError as exc:
        assert str(exc).startswith(f"{ds}/index.json: ")
        return
    listed = sum(s["samples"] for s in doc["shards"])
    keys = [k for _, _, batch in ld for k in batch]
    assert set(keys) <= real_keys(small)  # never a sample that is not in the shards
    assert len(keys) <= listed  # never more than the index lists (a skip shortens a one-process epoch)
    assert len(keys) - len(set(keys)) <= ld.padded  # a repeat is only ever a counted pad
    assert len(set(keys)) + len(ld.skipped) >= listed  # each listed sample delivered or counted as skipped
    for s in doc["shards"]:  # an accepted index: plain shard entries with unique names and hashes
        assert type(s["samples"]) is int and 1 <= s["samples"] <= s["bytes"] // 512
    assert len({s["url"] for s in doc["shards"]}) == len({s["sha256"] for s in doc["shards"]}) == len(doc["shards"])
