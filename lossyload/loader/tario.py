"""A small, strict, fast reader for the tar shards lossyload writes (ustar/GNU headers, GNU long names).

Python's ``tarfile`` costs ~150 us per member, more than decoding a pre-extracted coefficient sample, so the
loader reads headers itself: one 512-byte header, checksum verified, then the payload. Member names must
be relative and free of ``..``; member sizes are bounded. Anything else raises :class:`ShardError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from ..errors import ShardError

BLOCK = 512
MAX_MEMBER = 1 << 30  # a member declaring more than this is refused (bounded memory)
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"5", b"1", b"2", b"3", b"4", b"6", b"g")  # dirs, links, devices, pax global headers


def _octal(field: bytes, url: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if text.strip(b"01234567"):  # not only octal digits: int() would also take a sign, "0o" or "_" (a size of -1)
        raise ShardError(f"{url}: corrupt tar header (numeric field {field!r})")
    return int(text, 8) if text else 0


def _checksum_ok(h: bytes) -> bool:
    stored = h[148:156].split(b"\0", 1)[0].strip()
    try:
        return int(stored, 8) == sum(h[:148]) + 256 + sum(h[156:])
    except ValueError:
        return False


def members(f: IO[bytes], url: str, max_member: int = MAX_MEMBER) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of each regular member of the tar stream ``f``."""
    long_name: str | None = None
    while True:
        h = f.read(BLOCK)
        if not h or h == bytes(BLOCK):
            return
        if len(h) < BLOCK:
            raise ShardError(f"{url}: truncated tar header")
        if not _checksum_ok(h):
            raise ShardError(f"{url}: corrupt tar header (bad checksum)")
        size, kind = _octal(h[124:136], url), h[156:157]
        if size > max_member:
            raise ShardError(f"{url}: member declares {size} bytes, more than the {max_member} allowed")
        data = f.read(size)
        if len(data) < size:
            raise ShardError(f"{url}: truncated tar member ({len(data)} of {size} bytes)")
        f.read(-size % BLOCK)
        if kind == b"L":  # GNU long name for the next member
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if kind == b"x":  # pax header: only 'path' matters to us
            long_name = _pax_path(data) or long_name
            continue
        if kind == b"K":  # GNU long link target of the next member, a link (skipped)
            continue
        name = long_name or _ustar_name(h)
        long_name = None
        if kind in _SKIPPED:
            continue
        if kind not in _REGULAR:
            raise ShardError(f"{url}: unsupported tar member type {kind!r} ({name})")
        if name.startswith("/") or ".." in name.split("/"):
            raise ShardError(f"{url}: unsafe member name {name!r}")
        yield name, data


def _ustar_name(h: bytes) -> str:
    name = h[0:100].split(b"\0", 1)[0]
    if h[257:262] == b"ustar" and h[345:346] != b"\0":
        name = h[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "replace")


def _pax_path(data: bytes) -> str | None:
    for line in data.split(b"\n"):
        _, _, rec = line.partition(b" ")
        key, _, value = rec.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "replace")
    return None


def samples(f: IO[bytes], url: str, max_member: int = MAX_MEMBER) -> Iterator[dict[str, bytes | str]]:
    """Group consecutive members by key (WebDataset rule: the name up to the first dot of its basename)."""
    cur: dict[str, bytes | str] | None = None
    for name, data in members(f, url, max_member):
        slash = name.rfind("/") + 1
        dot = name.find(".", slash)
        if dot < 0:
            continue
        key, ext = name[:dot], name[dot + 1 :].lower()
        if cur is None or cur["__key__"] != key:
            if cur is not None:
                yield cur
            cur = {"__key__": key}
        if ext in cur:
            raise ShardError(f"{url}: duplicate member {name!r}")
        cur[ext] = data
    if cur is not None:
        yield cur
