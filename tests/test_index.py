"""``index.json``: round trip, refusal of malformed indexes and unsafe shard URLs (with the index URL in every
message), and :mod:`lossyload.fs` refusing ``pipe:`` URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossyload import fs
from lossyload.errors import IndexFormatError, LossyloadError
from lossyload.index import INDEX_VERSION, Index, ShardInfo, check_relative_url, shard_name


def make_index(**kw) -> Index:
    args = dict(
        codec="jpeg-dct",
        config={"storage": "jpeg", "quality": 90, "keep": [64, 64], "resize": None},
        labels=["cat", "dog", "émeu"],
        member="jpg",
        shards=[
            ShardInfo(url="shard-000000.tar", samples=3, bytes=30720, sha256="a" * 64,
                      transcoded={"cat/x": "png source", "dog/y": "CMYK JPEG"}),
            ShardInfo(url="sub/shard-000001.tar", samples=2, bytes=20480, sha256="b" * 64),
        ],
        skipped={"/src/cat/bad.jpg": "not an image (unrecognised format)"},
    )
    args.update(kw)
    return Index(**args)


def test_round_trip() -> None:
    index = make_index()
    text = index.to_json()
    again = Index.from_json(text)
    assert again == index
    assert again.to_json() == text
    assert Index.from_json(text.encode()) == index  # bytes too
    d = json.loads(text)
    assert d["version"] == INDEX_VERSION
    assert d["codec"] == {"name": "jpeg-dct", "config": index.config}
    assert d["totals"] == {"samples": 5, "bytes": 51200, "shards": 2, "transcoded": 2, "skipped": 1}
    assert index.samples == 5 and index.bytes == 51200


def test_defaults_for_optional_fields() -> None:
    d = json.loads(make_index().to_json())
    del d["skipped"], d["shards"][0]["transcoded"], d["totals"]  # totals are optional too
    index = Index.from_dict(d)
    assert index.skipped == {} and index.shards[0].transcoded == {}


WHERE = "s3://bucket/data/index.json"


def _mutated(mutate) -> str:
    d = json.loads(make_index().to_json())
    mutate(d)
    return json.dumps(d)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        (_mutated(lambda d: d.update(version=2)), "unsupported index version 2"),
        (_mutated(lambda d: d.pop("version")), "unsupported index version None"),
        (_mutated(lambda d: d.update(version="1")), "unsupported index version '1'"),
        (_mutated(lambda d: d.pop("codec")), "no 'codec' field"),
        (_mutated(lambda d: d["codec"].pop("config")), "codec: no 'config' field"),
        (_mutated(lambda d: d.update(codec="jpeg-dct")), "codec must be a JSON object, not str"),
        (_mutated(lambda d: d.pop("member")), "no 'member' field"),
        (_mutated(lambda d: d.pop("labels")), "no 'labels' field"),
        (_mutated(lambda d: d.pop("shards")), "no 'shards' field"),
        (_mutated(lambda d: d["shards"][0].pop("sha256")), "shard #0 .*: no 'sha256' field"),
        (_mutated(lambda d: d["shards"][1].update(samples="many")), "shard #1 .*samples must be a JSON integer"),
        (_mutated(lambda d: d["shards"].append(7)), "shard #2: must be a JSON object"),
        (_mutated(lambda d: d.update(skipped=["a"])), "skipped: must be a JSON object of strings"),
    ],
)
def test_bad_index_is_an_index_format_error_naming_the_url(text, message: str) -> None:
    with pytest.raises(IndexFormatError, match=message) as info:
        Index.from_json(text, where=WHERE)
    assert str(info.value).startswith(f"{WHERE}: ")


BAD_URLS = ["pipe:curl http://x | tar x", "/abs/shard.tar", "../x.tar", "a/../../x.tar", "http://host/x.tar",
            "s3://b/x.tar", "file:///etc/passwd", "", "a/../b.tar", "./x.tar", "a//b.tar", "a\\..\\x.tar", "\\x.tar",
            "C:x.tar"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_unsafe_shard_urls_are_refused(url: str) -> None:
    with pytest.raises(IndexFormatError, match="shard URL"):
        check_relative_url(url)
    text = _mutated(lambda d: d["shards"][1].update(url=url))
    with pytest.raises(IndexFormatError, match="shard URL") as info:
        Index.from_json(text, where=WHERE)
    assert str(info.value).startswith(f"{WHERE}: ")  # which index holds it


@pytest.mark.parametrize("url", ["shard-000000.tar", "train/shard-000001.tar", "a-b_c/d.e.tar"])
def test_plain_relative_urls_are_accepted(url: str) -> None:
    assert check_relative_url(url) == url
    assert fs.join("s3://bucket/data/", url) == f"s3://bucket/data/{url}"


def test_shard_name() -> None:
    assert shard_name(0) == "shard-000000.tar" and shard_name(123456) == "shard-123456.tar"


def test_fs_refuses_pipe_urls(tmp_path: Path) -> None:
    for call in (lambda u: fs.open_url(u), lambda u: fs.filesystem(u), lambda u: fs.read_index(u),
                 lambda u: fs.dataset_root(u)):
        with pytest.raises(LossyloadError, match="'pipe:' URLs are refused"):
            call(f"pipe:touch {tmp_path}/owned")
    assert not (tmp_path / "owned").exists()
    with pytest.raises(IndexFormatError):
        fs.join(str(tmp_path), "pipe:cat x")


def test_read_index(tmp_path: Path) -> None:
    index = make_index()
    (tmp_path / "index.json").write_text(index.to_json())
    for url in (str(tmp_path), str(tmp_path) + "/", str(tmp_path / "index.json"), f"file://{tmp_path}"):
        root, got = fs.read_index(url)
        assert got == index
        assert root.rstrip("/").endswith(str(tmp_path))
    with pytest.raises(IndexFormatError, match=rf"{tmp_path / 'nope'}/index.json: no index.json"):
        fs.read_index(str(tmp_path / "nope"))
    (tmp_path / "index.json").write_text(make_index().to_json().replace('"version": 1', '"version": 9'))
    with pytest.raises(IndexFormatError, match=rf"{tmp_path}/index.json: unsupported index version 9"):
        fs.read_index(str(tmp_path))


def test_dataset_root() -> None:
    assert fs.dataset_root("/data/set") == ("/data/set", "/data/set/index.json")
    assert fs.dataset_root("/data/set/") == ("/data/set", "/data/set/index.json")
    assert fs.dataset_root("/data/set/index.json") == ("/data/set", "/data/set/index.json")
    assert fs.dataset_root("s3://b/set/v2.json") == ("s3://b/set", "s3://b/set/v2.json")
    assert fs.dataset_root("index.json") == (".", "index.json")


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_version_that_only_compares_equal_is_refused(version) -> None:
    d = json.loads(Index(codec="rgb", config={}, labels=["a"], shards=[], member="jpg").to_json())
    d["version"] = version
    with pytest.raises(IndexFormatError, match="unsupported index version"):
        Index.from_dict(d)


# ----------------------------------------------------------------------- the fast path of shard entries
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lossyload.index import _quick  # noqa: E402

from .test_fuzz import fuzz  # noqa: E402

_SEG = st.one_of(st.sampled_from(["shard-000001.tar", "a", "..", ".", "", "a..b", "-x", "_y.tar", ".hidden", "é"]),
                 st.text(st.sampled_from("ab./\\:-_.\n\x00 %"), max_size=8))
_URLS = st.one_of(st.lists(_SEG, min_size=1, max_size=3).map("/".join), st.sampled_from(
    ["pipe:cat x", "/abs.tar", "s3://b/x.tar", "a//b", "a/", "./a", "a/./b", "C:x", "x\\y", "shard.tar\n"]))
_INTS = st.one_of(st.integers(-2, 3000), st.sampled_from([True, False, 2**63, 2**63 - 1, 10**6]), st.floats(0, 2000),
                  st.text(max_size=3), st.none())
_SHAS = st.one_of(st.just("ab" * 32), st.just("AB" * 32), st.just("ab" * 32 + "\n"), st.text("0af", max_size=65),
                  st.integers())
_TRANSCODED = st.one_of(st.just({}), st.just({"k": "resized"}), st.just([]), st.just({"k": 1}), st.none(), st.just(0))
_ENTRY = st.fixed_dictionaries({}, optional={"url": _URLS, "samples": _INTS, "bytes": _INTS, "sha256": _SHAS,
                                             "transcoded": _TRANSCODED, "keys": st.just(["a"])})


@fuzz(400)
@given(_ENTRY)
def test_the_fast_path_accepts_exactly_what_the_checked_path_accepts(entry: dict) -> None:
    quick = _quick(entry)
    try:
        checked = ShardInfo.from_dict(entry)
    except IndexFormatError:
        assert quick is None, entry
        return
    assert quick is None or quick == checked, entry


def test_the_fast_path_takes_the_common_entry_and_shares_the_empty_map() -> None:
    common = {"url": "train/shard-000001.tar", "samples": 3, "bytes": 4096, "sha256": "ab" * 32, "transcoded": {}}
    a, b = _quick(common), _quick({**common, "url": "train/shard-000002.tar"})
    assert a == ShardInfo.from_dict(common) and a.transcoded is b.transcoded
    with pytest.raises(IndexFormatError, match="not 64 lowercase hex digits"):
        ShardInfo.from_dict({**common, "sha256": "ab" * 32 + "\n"})  # "$" would have let the newline through


# ----------------------------------------------------------------------- the streamed read of an index's text
import io  # noqa: E402

from lossyload import index as index_module  # noqa: E402
from lossyload import jsonscan  # noqa: E402
from lossyload.index import _no_constant, _streamed  # noqa: E402

from .test_fuzz import edits, mutate  # noqa: E402


def _plain(text: str | bytes) -> Index | str:
    """What the whole-text parse makes of ``text``: the index, or the error's message."""
    try:
        try:
            d = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise IndexFormatError(f"{WHERE}: not valid JSON ({exc})") from exc
        return Index.from_dict(d, where=WHERE)
    except IndexFormatError as exc:
        return str(exc)


def _read(text: str | bytes) -> Index | str:
    try:
        return Index.from_json(text, where=WHERE)
    except IndexFormatError as exc:
        return str(exc)


def _read_file(data: bytes, chunk: int, longest: int) -> Index | str:
    """Index.read of ``data`` in chunks of ``chunk`` characters, a common entry read whole when the buffer
    holds ``longest`` characters."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonscan, "CHUNK", chunk)
        mp.setattr(index_module, "_LONGEST_ENTRY", longest)
        try:
            return Index.read(io.BytesIO(data), where=WHERE)
        except IndexFormatError as exc:
            return str(exc)


def _same_every_way(text: str | bytes, chunks=((1, 1), (7, 300), (1 << 20, 4096))) -> None:
    want = _plain(text)
    assert _read(text) == want
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if isinstance(text, str) and text.startswith("\ufeff"):
        return  # a str with a BOM is refused as text; its UTF-8 bytes are a valid file (the BOM dropped)
    for chunk, longest in chunks:
        assert _read_file(data, chunk, longest) == want, (chunk, longest)


_SPACED = make_index().to_json()
_COMMON = make_index(shards=[ShardInfo(url=f"d{i}/shard-{i}.tar", samples=i + 1, bytes=512 * (i + 1) + i,
                                       sha256=f"{i:x}" * 64) for i in range(4)]).to_json()
_ONE = '{"url": "a.tar", "samples": 1, "bytes": 512, "sha256": "' + "ab" * 32 + '"'


def _entry(text: str) -> str:
    """_COMMON with ``text`` as its first shard entry (and no totals to disagree with)."""
    d = json.loads(_COMMON)
    del d["totals"]
    return json.dumps(d, indent=1).replace('"shards": [', '"shards": [' + text + ",", 1)


@pytest.mark.parametrize("text", [
    _SPACED, json.dumps(json.loads(_SPACED)), json.dumps(json.loads(_SPACED), indent="\t\r\n "),
    _SPACED.encode("utf-16"), b"\xef\xbb\xbf" + _SPACED.encode(), "\ufeff" + _SPACED,
    _SPACED.replace('"shards": [', '"shards": [], "shards": [', 1),  # a repeated key: the last one counts
    _SPACED.replace('"shards": [', '"shards": 7, "shards": [', 1),
    _SPACED.replace('"labels"', '"shards": [{"url": "x.tar"}], "labels"', 1),
    _SPACED.rstrip() + " x", _SPACED.rstrip()[:-1], "{}", "{ }", "[]", "", " ", '{"shards": []}', '{"shards": [ ]}',
    '{"shards": [1,]}', '{"shards": [1 2]}', '{"shards": NaN}', '{"shards": [{"samples": Infinity}]}', '{1: 2}',
    '{"a" 1}', '{"a": 1,}', '{"a": 1 "b": 2}', '{"shards": ' + "[" * 100_000 + "]" * 100_000 + "}",
    _COMMON, _COMMON.replace("\n", ""), _COMMON.replace("\n", "\t\r\n  "), _entry(_ONE + "}"),
    _entry(_ONE + ', "transcoded": {}}'), _entry(_ONE + ', "transcoded": {"k": "png"}}'),
    _entry(_ONE + ', "keys": ["a"]}'), _entry(_ONE + ', "url": "b.tar"}'), _entry(_ONE.replace("512", "511") + "}"),
    _entry(_ONE.replace('"samples": 1', '"samples": 0') + "}"), _entry(_ONE.replace("512", "01") + "}"),
    _entry(_ONE.replace("512", "9" * 19) + "}"), _entry(_ONE.replace("512", "9" * 20) + "}"),
    _entry(_ONE.replace("512", "512.0") + "}"), _entry(_ONE.replace("512", "-512") + "}"),
    _entry(_ONE.replace("a.tar", "../a.tar") + "}"), _entry(_ONE.replace("a.tar", "a/./b.tar") + "}"),
    _entry(_ONE.replace("a.tar", "a\\u002etar") + "}"), _entry(_ONE.replace("ab", "AB") + "}"),
    _entry(_ONE + "}").replace('"shards": [', '"shards": [' + _ONE + "}", 1),  # listed twice
    _COMMON.replace("},\n  {", "}\n  {", 1), _COMMON.replace("}\n ]", "},\n ]", 1), _COMMON.replace("]\n}", "}", 1),
])
def test_the_streamed_read_equals_the_whole_text_parse(text) -> None:
    _same_every_way(text)
    if text in (_COMMON, _entry(_ONE + "}"), _entry(_ONE + ', "keys": ["a"]}'), _entry(_ONE + ', "url": "b.tar"}')):
        assert isinstance(_read(text), Index)


@fuzz(400)
@given(st.sampled_from([_SPACED, _COMMON]), edits(st.integers(0, len(_COMMON)), max_ops=3))
def test_the_streamed_read_equals_the_whole_text_parse_on_damaged_text(base: str, ops) -> None:
    text = mutate(base.encode(), ops)
    _same_every_way(text, chunks=((5, 60), (1 << 20, 4096)))


def test_the_streamed_read_builds_common_entries_as_it_goes() -> None:
    d = _streamed(_SPACED)
    assert [type(e) for e in d["shards"]] == [dict, ShardInfo]  # the first has transcoded keys: checked later
    assert d["shards"][1] == make_index().shards[1]
    assert _streamed("[1]") is None and _streamed("{") is None
    assert all(type(e) is ShardInfo for e in _streamed(_COMMON)["shards"])


@pytest.mark.parametrize("chunk, longest", [(1, 1), (3, 500), (64, 4096)])
def test_a_file_is_read_in_chunks_without_falling_back(chunk: int, longest: int, monkeypatch) -> None:
    monkeypatch.setattr(jsonscan, "CHUNK", chunk)
    monkeypatch.setattr(index_module, "_LONGEST_ENTRY", longest)
    for text in (_SPACED, _COMMON, _COMMON.replace("\n", "")):
        reads: list[int] = []
        first, more = jsonscan.chunks(io.BytesIO(text.encode("utf-16")))  # a multi-byte encoding, cut anywhere
        d = _streamed(first, lambda n: reads.append(n) or more(n))
        assert d is not None and len(reads) > 2
        assert Index.from_dict(d) == Index.from_json(text)
        assert type(d["shards"][-1]) is ShardInfo
