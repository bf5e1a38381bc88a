"""``lossyload.loader.tario``: the strict fast tar reader, checked against Python's ``tarfile``."""

from __future__ import annotations

import io
import tarfile

import pytest

from lossyload.errors import ShardError
from lossyload.loader import tario

URL = "mem://shard-000003.tar"


def _tar(members, fmt=tarfile.GNU_FORMAT, extra=None) -> bytes:
    """A tar of ``[(name, bytes)]`` regular files; ``extra(tar)`` may add other member types."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if extra:
            extra(tar)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _with_tarfile(raw: bytes):
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def _members(raw: bytes, **kw):
    return list(tario.members(io.BytesIO(raw), URL, **kw))


LONG = "d" * 60 + "/" + "e" * 70 + "/" + "sample-" + "x" * 120  # > 100 and > 255 characters
MEMBERS = [
    ("a.jpg", b"\xff\xd8jpeg-a"),
    ("a.cls", b"3"),
    ("dir/b.jpg", b""),  # empty member
    ("dir/b.cls", b"12"),
    ("p" * 90 + "/" + "q" * 40 + ".jpg", bytes(range(256)) * 5),  # ustar prefix field territory
    (LONG + ".jpg", b"x" * 513),  # crosses a block boundary
    (LONG + ".cls", b"0"),
    ("n\u00e9e.jpg", b"utf8 name"),
]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_reads_like_tarfile(fmt):
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [m for m in MEMBERS if len(m[0]) < 200 and m[0].isascii()]
    raw = _tar(members, fmt)
    assert _members(raw) == _with_tarfile(raw) == members


def test_long_names_exceed_the_header_field():
    raw = _tar([(LONG + ".jpg", b"1")], tarfile.GNU_FORMAT)
    assert len(LONG) > 255
    assert _members(raw) == [(LONG + ".jpg", b"1")]
    raw = _tar([(LONG + ".jpg", b"1")], tarfile.PAX_FORMAT)
    assert _members(raw) == [(LONG + ".jpg", b"1")]


def test_skips_directories_links_and_pax_globals():
    def extra(tar):
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        s = tarfile.TarInfo("dir/link.jpg")
        s.type, s.linkname = tarfile.SYMTYPE, "../a.jpg"
        tar.addfile(s)
        h = tarfile.TarInfo("dir/hard.jpg")
        h.type, h.linkname = tarfile.LNKTYPE, "a.jpg"
        tar.addfile(h)

    members = [("dir/a.jpg", b"A"), ("dir/a.cls", b"1")]
    raw = _tar(members, tarfile.GNU_FORMAT, extra)
    assert _members(raw) == members
    raw = _tar(members, tarfile.PAX_FORMAT, extra)
    assert _members(raw) == members
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _members(buf.getvalue()) == members


def test_skips_a_symlink_with_a_long_target():
    """GNU tar stores a long link target in a 'K' record before the link; the link is skipped like any."""

    def extra(tar):
        s = tarfile.TarInfo("link.jpg")
        s.type, s.linkname = tarfile.SYMTYPE, "t" * 150 + ".jpg"
        tar.addfile(s)

    members = [("a.jpg", b"A"), ("a.cls", b"1")]
    assert _members(_tar(members, tarfile.GNU_FORMAT, extra)) == members


def test_the_shard_writer_output_reads_back(tmp_path):
    from lossyload.shard.writer import ShardWriter

    w = ShardWriter(str(tmp_path / "s.tar"))
    w.add("k/" + "z" * 150, {"jpg": b"payload", "cls": b"4"})
    w.add("k2", {"dct.zst": b"\0" * 1000, "cls": b"5"})
    w.close()
    with open(tmp_path / "s.tar", "rb") as f:
        got = list(tario.samples(f, URL))
    assert got == [
        {"__key__": "k/" + "z" * 150, "jpg": b"payload", "cls": b"4"},
        {"__key__": "k2", "dct.zst": b"\0" * 1000, "cls": b"5"},
    ]


# ------------------------------------------------------------------------------------------- refusals


def test_bad_checksum():
    raw = bytearray(_tar([("a.jpg", b"A" * 600), ("b.jpg", b"B")]))
    raw[0:1] = b"z"  # first header's name: checksum no longer matches
    with pytest.raises(ShardError, match="bad checksum") as e:
        _members(bytes(raw))
    assert URL in str(e.value)


def test_bad_checksum_in_a_later_header_stops_after_the_good_members():
    raw = bytearray(_tar([("a.jpg", b"A" * 600), ("b.jpg", b"B")]))
    raw[3 * 512 + 10] ^= 0xFF  # header of b.jpg (a.jpg: header + 2 data blocks)
    it = tario.members(io.BytesIO(bytes(raw)), URL)
    assert next(it) == ("a.jpg", b"A" * 600)
    with pytest.raises(ShardError, match="checksum"):
        next(it)


def test_payload_corruption_is_not_a_header_error():
    """Bytes inside a member are the codec's business (tar has no payload checksum)."""
    raw = bytearray(_tar([("a.jpg", b"A" * 600)]))
    raw[512 + 5] = ord("Z")
    assert _members(bytes(raw)) == [("a.jpg", b"AAAAAZ" + b"A" * 594)]


@pytest.mark.parametrize("cut", [100, 511])
def test_truncated_header(cut):
    raw = _tar([("a.jpg", b"A" * 600), ("b.jpg", b"B")])
    with pytest.raises(ShardError, match="truncated tar header") as e:
        _members(raw[: 3 * 512 + cut])
    assert URL in str(e.value)


def test_truncated_member():
    raw = _tar([("a.jpg", b"A" * 600)])
    with pytest.raises(ShardError, match=r"truncated tar member \(300 of 600 bytes\)") as e:
        _members(raw[: 512 + 300])
    assert URL in str(e.value)


def test_truncated_long_name_record():
    raw = _tar([(LONG + ".jpg", b"1")], tarfile.GNU_FORMAT)
    with pytest.raises(ShardError, match="truncated"):
        _members(raw[: 512 + 100])


class _Guarded(io.BytesIO):
    """Fails the test if the reader asks for more than ``limit`` bytes at once (it must not allocate them)."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def read(self, n=-1):
        assert 0 <= n <= self.limit, f"read({n}) on a tiny file"
        return super().read(n)


def _header(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[124:136] = size_field
    h[156:157] = kind
    h[257:263] = b"ustar\0"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


@pytest.mark.parametrize(
    "size_field",
    [
        b"\x80" + (1 << 40).to_bytes(11, "big"),  # GNU base-256: 1 TiB
        b"77777777777\0",  # octal: 8 GiB - 1
    ],
)
def test_huge_member_is_refused_without_reading_it(size_field):
    raw = _header(b"a.jpg", size_field) + b"A" * 1024
    with pytest.raises(ShardError, match="more than") as e:
        list(tario.members(_Guarded(raw, 512), URL))
    assert URL in str(e.value)


def test_max_member_limit_is_enforced():
    raw = _tar([("a.jpg", b"A" * 2000)])
    with pytest.raises(ShardError, match="2000 bytes"):
        list(tario.members(_Guarded(raw, 1024), URL, max_member=1000))
    assert _members(raw, max_member=2000) == [("a.jpg", b"A" * 2000)]


def test_hand_made_header_is_valid():
    """The helper above builds headers tarfile accepts, so the refusals test the size and nothing else."""
    raw = _header(b"a.jpg", b"00000000003\0") + b"abc".ljust(512, b"\0") + bytes(1024)
    assert _members(raw) == [("a.jpg", b"abc")] == _with_tarfile(raw)


def test_garbage_numeric_field():
    raw = _header(b"a.jpg", b"12x45\0\0\0\0\0\0\0") + bytes(1024)
    with pytest.raises(ShardError, match="numeric field"):
        _members(raw)


@pytest.mark.parametrize("name", ["../evil.jpg", "a/../../evil.jpg", "/etc/evil.jpg", "a/..", ".."])
def test_unsafe_names_are_refused(name):
    raw = _tar([(name, b"x")])
    with pytest.raises(ShardError, match="unsafe member name") as e:
        _members(raw)
    assert URL in str(e.value)


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/evil.jpg", "a/../../evil.jpg"])
def test_unsafe_names_are_delivered_when_the_caller_checks_them(name):
    raw = _tar([(name, b"x"), ("ok.jpg", b"y")])
    got = list(tario.samples(io.BytesIO(raw), URL, check_names=False))
    assert [g["__key__"] for g in got] == [name.rsplit(".", 1)[0], "ok"]
    assert tario.unsafe_name(str(got[0]["__key__"])) and not tario.unsafe_name("ok")


def test_unsafe_long_name_is_refused():
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        raw = _tar([("../" + "x" * 200 + ".jpg", b"x")], fmt)
        with pytest.raises(ShardError, match="unsafe"):
            _members(raw)


def test_names_with_dots_that_are_not_parent_refs_are_fine():
    members = [("a..b/c.jpg", b"1"), ("./d.jpg", b"2"), ("...e.jpg", b"3")]
    assert _members(_tar(members)) == members


def test_unsupported_member_type():
    raw = _header(b"a.jpg", b"00000000000\0", kind=b"S")  # GNU sparse
    with pytest.raises(ShardError, match="unsupported tar member type"):
        _members(raw + bytes(1024))


def test_empty_archive_and_end_marker():
    assert _members(b"") == []
    assert _members(bytes(1024)) == []
    raw = _tar([("a.jpg", b"A")]) + b"trailing garbage after the end-of-archive marker"
    assert _members(raw) == [("a.jpg", b"A")]


# ------------------------------------------------------------------------------------------- samples


def test_samples_group_consecutive_members_by_key():
    raw = _tar(
        [
            ("a/x.jpg", b"1"),
            ("a/x.CLS", b"7"),
            ("a/x.dct.zst", b"z"),
            ("b.d/y.jpg", b"2"),  # a dot in a folder does not split the key
            ("README", b"no extension: not a sample member"),
            ("y.jpg", b"3"),
        ]
    )
    got = list(tario.samples(io.BytesIO(raw), URL))
    assert got == [
        {"__key__": "a/x", "jpg": b"1", "cls": b"7", "dct.zst": b"z"},
        {"__key__": "b.d/y", "jpg": b"2"},
        {"__key__": "y", "jpg": b"3"},
    ]


def test_duplicate_member_in_one_sample():
    raw = _tar([("a.jpg", b"1"), ("a.cls", b"1"), ("a.jpg", b"2")])
    it = tario.samples(io.BytesIO(raw), URL)
    with pytest.raises(ShardError, match="duplicate member 'a.jpg'") as e:
        next(it)
    assert URL in str(e.value)
    # case-insensitive extensions collide as well
    raw = _tar([("a.jpg", b"1"), ("a.JPG", b"2")])
    with pytest.raises(ShardError, match="duplicate"):
        list(tario.samples(io.BytesIO(raw), URL))


@pytest.mark.parametrize("bad", [0, 63, 64, 150])
def test_a_bad_header_in_a_checksum_group_delivers_exactly_the_members_before_it(bad):
    """Checksums are verified in groups: a bad header anywhere (first, last or inside a group) still yields
    every member before it, and none after."""
    members = [(f"k{i:04d}.jpg", bytes([i % 251]) * (i % 700)) for i in range(200)]
    raw = bytearray(_tar(members))
    offset = 0
    for _, data in members[:bad]:  # header offset of member `bad`
        offset += 512 + -(-len(data) // 512) * 512
    raw[offset + 3] ^= 0x20
    got = []
    with pytest.raises(ShardError, match="bad checksum"):
        for m in tario.members(io.BytesIO(bytes(raw)), URL):
            got.append(m)
    assert got == members[:bad]
