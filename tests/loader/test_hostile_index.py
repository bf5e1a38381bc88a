"""A hostile or damaged ``index.json`` and shard folder, as every reader meets it: the loader, ``verify``,
``inspect`` (and DALI where installed) refuse it when the index is read, with the index and shard named,
instead of delivering a wrong number of samples; a shard file that links outside the dataset is refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lossyload import make_loader
from lossyload.cli import main as cli_main
from lossyload.errors import IndexFormatError, ShardError
from lossyload.index import INDEX_NAME
from lossyload.verify import verify

from .conftest import N_SAMPLES, SIZES

pytestmark = pytest.mark.usefixtures("one_thread")


def edit_index(ds: Path, edit) -> None:
    d = json.loads((ds / INDEX_NAME).read_text())
    edit(d)
    (ds / INDEX_NAME).write_text(json.dumps(d))


def shard0(**changes):
    def edit(d):
        d["shards"][0].update(changes)
        d.pop("totals")  # so that only the shard's own field is wrong
    return edit


def delivered(ds: Path, **kw) -> list[int]:
    ld = make_loader(str(ds), batch_size=8, train=False, options={"crop": 32}, **kw)
    return [int(v) for _, y in ld for v in y]


def test_the_untouched_copy_delivers_every_sample_once(jpeg_copy: Path) -> None:
    assert sorted(delivered(jpeg_copy)) == list(range(N_SAMPLES))


@pytest.mark.parametrize("value, message", [
    (-5, "samples = -5 is out of range"),
    (0, "samples = 0 is out of range"),
    (7.9, "samples must be a JSON integer, not float"),
    (True, "samples must be a JSON integer, not bool"),
    (" 7 ", "samples must be a JSON integer, not str"),
    (None, "samples must be a JSON integer, not NoneType"),
])
def test_a_bad_sample_count_is_refused_when_the_index_is_read(jpeg_copy: Path, value, message: str) -> None:
    """Before: -5 delivered 35 of 60 samples with on_error="raise", 0 delivered 40, and 20.9, true, " 20 " were
    taken as numbers; now every reader refuses the index, naming it and the shard."""
    edit_index(jpeg_copy, shard0(samples=value))
    for read in (lambda: delivered(jpeg_copy), lambda: verify(str(jpeg_copy))):
        with pytest.raises(IndexFormatError, match=message) as info:
            read()
        assert f"{jpeg_copy}/index.json: shard #0 ('shard-000000.tar')" in str(info.value)


@pytest.mark.parametrize("samples", [10**9, 2**63 - 1, 2**64])
def test_a_huge_sample_count_fails_at_once_naming_the_shard(jpeg_copy: Path, samples: int) -> None:
    """Before: 10**9 ran 27 s into a MemoryError, 2**63-1 never finished."""
    edit_index(jpeg_copy, shard0(samples=samples))
    t0 = time.perf_counter()
    with pytest.raises(IndexFormatError, match=r"shard #0 \('shard-000000.tar'\): (index says \d+ samples, but "
                                               r"[\d,]+ bytes hold at most \d+|samples = \d+ is out of range)"):
        delivered(jpeg_copy, on_error="skip")
    assert time.perf_counter() - t0 < 5


def test_a_shard_listed_twice_is_refused(jpeg_copy: Path) -> None:
    """Before: its samples were delivered twice without a word, and verify said OK."""
    edit_index(jpeg_copy, lambda d: (d["shards"].append(dict(d["shards"][0])), d.pop("totals")))
    for read in (lambda: delivered(jpeg_copy), lambda: verify(str(jpeg_copy))):
        with pytest.raises(IndexFormatError, match=r"shards #0 \('shard-000000.tar'\) and #8 \('shard-000000.tar'\) "
                                                   r"have the same url"):
            read()


def test_two_urls_with_one_sha256_are_refused(jpeg_copy: Path) -> None:
    edit_index(jpeg_copy, shard0(sha256=json.loads((jpeg_copy / INDEX_NAME).read_text())["shards"][1]["sha256"]))
    with pytest.raises(IndexFormatError, match=r"shards #0 \('shard-000000.tar'\) and #1 \('shard-000001.tar'\) have "
                                               r"the same sha256"):
        delivered(jpeg_copy)


def test_totals_must_be_the_sums(jpeg_copy: Path) -> None:
    edit_index(jpeg_copy, lambda d: d["totals"].update(samples=N_SAMPLES + 1))
    with pytest.raises(IndexFormatError, match=f"totals say samples = {N_SAMPLES + 1}, the shards add up to "
                                               f"{N_SAMPLES}"):
        delivered(jpeg_copy)


def test_nan_in_the_codec_config_is_refused_by_every_reader(jpeg_copy: Path, capsys) -> None:
    """Before: a VAE index with offset [NaN, ...] delivered all-NaN latents and verify said OK."""
    text = (jpeg_copy / INDEX_NAME).read_text().replace('"quality": 90', '"quality": 90, "offset": [NaN, 0.0]')
    (jpeg_copy / INDEX_NAME).write_text(text)
    with pytest.raises(IndexFormatError, match="NaN is not a number an index may hold"):
        delivered(jpeg_copy)
    for command in ("verify", "inspect"):
        assert cli_main([command, str(jpeg_copy)]) == 2
        err = capsys.readouterr().err
        assert f"lossyload {command}: error: {jpeg_copy}/index.json: not valid JSON (NaN is not a number" in err
        assert "Traceback" not in err


def test_a_float_in_an_integer_config_field_is_refused(jpeg_copy: Path) -> None:
    edit_index(jpeg_copy, lambda d: d["codec"]["config"].update(max_pixels=True))
    with pytest.raises(Exception, match=f"{jpeg_copy}: codec 'jpeg-dct' config: max_pixels = True must be an "
                                        "integer"):
        delivered(jpeg_copy)
    assert any("max_pixels = True must be an integer" in p.what for p in verify(str(jpeg_copy)).problems)


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_nul_byte_in_a_shard_url_is_a_clean_error(jpeg_copy: Path, command: str, capsys) -> None:
    """Before: a raw traceback (ValueError: embedded null byte)."""
    edit_index(jpeg_copy, shard0(url="shard-000000.tar\x00.txt"))
    assert cli_main([command, str(jpeg_copy)]) == 2
    err = capsys.readouterr().err
    assert "shard URL 'shard-000000.tar\\x00.txt' must be a plain path relative to the index" in err
    assert err.startswith(f"lossyload {command}: error: {jpeg_copy}/index.json") and "Traceback" not in err


@pytest.fixture
def linked_out(jpeg_copy: Path, tmp_path: Path) -> Path:
    """Shard 1 replaced by a link to a copy of itself outside the dataset folder."""
    outside = tmp_path / "outside.tar"
    (jpeg_copy / "shard-000001.tar").rename(outside)
    os.symlink(outside, jpeg_copy / "shard-000001.tar")
    return jpeg_copy


def test_a_shard_linking_outside_the_dataset_is_refused(linked_out: Path) -> None:
    """Before: read without remark (docs/reliability.md says such links are refused)."""
    with pytest.raises(ShardError, match=r"shard-000001.tar.*a link to .*outside.tar, outside the dataset folder"):
        delivered(linked_out)
    ld = make_loader(str(linked_out), batch_size=8, train=False, options={"crop": 32}, on_error="skip")
    got = [int(v) for _, y in ld for v in y]
    assert len(ld.skipped) == SIZES[1] and all("outside the dataset folder" in s for s in ld.skipped)
    assert sorted(set(got)) == [i for i in range(N_SAMPLES) if not SIZES[0] <= i < SIZES[0] + SIZES[1]]
    problems = verify(str(linked_out)).problems
    assert [(Path(p.url).name, "outside the dataset folder" in p.what) for p in problems] == [("shard-000001.tar", True)]


def test_a_link_inside_the_dataset_is_read(jpeg_copy: Path) -> None:
    (jpeg_copy / "store").mkdir()
    (jpeg_copy / "shard-000001.tar").rename(jpeg_copy / "store" / "s1.tar")
    os.symlink("store/s1.tar", jpeg_copy / "shard-000001.tar")
    assert sorted(delivered(jpeg_copy)) == list(range(N_SAMPLES))


def test_dali_refuses_a_shard_linking_outside_the_dataset(linked_out: Path) -> None:
    pytest.importorskip("nvidia.dali")
    with pytest.raises(ShardError, match="outside the dataset folder"):
        make_loader(str(linked_out), batch_size=8, backend="dali", codec="rgb", device_id=None, options={"crop": 32})
