"""A small, strict, fast reader for the tar shards lossyload writes (ustar/GNU headers, GNU long names).

Python's ``tarfile`` costs ~150 us per member, more than decoding a pre-extracted coefficient sample, so the
loader reads headers itself, with two reads per member (its data; its padding and the next header together)
and no copy beyond the one each read makes. Header checksums are verified in groups of :data:`GROUP`, one numpy
pass for the group, before any member of the group is delivered. Every check of a one-header-at-a-time reader
is kept, with the same errors in the same order: header checksum, numeric fields, member sizes (bounded
before anything is read), member names (relative, no ``..``), member types. Anything else raises
:class:`ShardError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from ..errors import ShardError

BLOCK = 512
MAX_MEMBER = 1 << 30  # a member declaring more than this is refused (bounded memory)
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"5", b"1", b"2", b"3", b"4", b"6", b"g")  # dirs, links, devices, pax global headers
_ZERO = bytes(BLOCK)
_DIGITS = b"01234567"
_POW8 = 8 ** np.arange(7, -1, -1, dtype=np.int64)


def _octal(field: bytes, url: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if text.strip(_DIGITS):  # not only octal digits: int() would also take a sign, "0o" or "_" (a size of -1)
        raise ShardError(f"{url}: corrupt tar header (numeric field {field!r})")
    return int(text, 8) if text else 0


def _checksum_ok(h: bytes) -> bool:
    stored = h[148:156].split(b"\0", 1)[0].strip()
    try:
        return int(stored, 8) == sum(h[:148]) + 256 + sum(h[156:])
    except ValueError:
        return False


def _strict_size(h: bytes, url: str, max_member: int) -> int:
    """The one-header checks in their order (checksum, size field, size bound): the member's size."""
    if not _checksum_ok(h):
        raise ShardError(f"{url}: corrupt tar header (bad checksum)")
    size = _octal(h[124:136], url)
    if size > max_member:
        raise ShardError(f"{url}: member declares {size} bytes, more than the {max_member} allowed")
    return size


def _first_bad_checksum(buf: bytes, offsets: list[int]) -> int | None:
    """Index in ``offsets`` (block-aligned offsets in ``buf``) of the first header whose checksum does not
    match; ``None`` if all do. One row gather and a few sums for all headers; a checksum field written in an
    unusual form is checked by the one-header rule."""
    if not offsets:
        return None
    blocks = np.frombuffer(buf, np.uint8, len(buf) // BLOCK * BLOCK).reshape(-1, BLOCK)
    rows = blocks[np.asarray(offsets) // BLOCK]
    field = rows[:, 148:156].astype(np.int64)
    computed = rows.sum(axis=1, dtype=np.int64) - field.sum(axis=1) + 8 * 32
    # the usual form: 6 or 7 octal digits, then NUL and/or space ("%06o\0 ", "%07o\0")
    digit = (field >= 48) & (field <= 55)
    six = digit[:, :6].all(axis=1) & ((field[:, 6] == 0) | (field[:, 6] == 32)) & ((field[:, 7] == 0) | (field[:, 7] == 32))
    seven = digit[:, :7].all(axis=1) & ((field[:, 7] == 0) | (field[:, 7] == 32))
    stored = np.where(seven, (field[:, :7] - 48) @ _POW8[1:], (field[:, :6] - 48) @ _POW8[2:])
    ok = (six | seven) & (stored == computed)
    for i in np.flatnonzero(~(six | seven)):  # unusual fields: the one-header rule decides
        ok[i] = _checksum_ok(bytes(rows[i]))
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else None


GROUP = 64  # headers whose checksums are verified together, before any of their members is delivered


def _take(h: bytes, f: IO[bytes], url: str, max_member: int) -> tuple[bytes, bytes, Exception | None]:
    """``(data, next header, error)`` of the member whose header is ``h``: its data and the next header in
    two reads (padding and header together). Its checksum is left to the group check unless something is
    unusual (then every check of the one-header reader runs, in its order)."""
    text = h[124:135]
    size = -1 if text.strip(_DIGITS) or h[135] not in (0, 32) else int(text, 8)
    if size < 0 or size > max_member:
        try:
            size = _strict_size(h, url, max_member)
        except ShardError as exc:
            return b"", b"", exc
    data = f.read(size)
    if len(data) < size:
        if not _checksum_ok(h):
            return b"", b"", ShardError(f"{url}: corrupt tar header (bad checksum)")
        return b"", b"", ShardError(f"{url}: truncated tar member ({len(data)} of {size} bytes)")
    pad = -size % BLOCK
    nxt = f.read(pad + BLOCK)
    return data, nxt[pad:], None


def _groups(f: IO[bytes], url: str, max_member: int) -> Iterator[tuple[list[tuple[bytes, bytes]], Exception | None]]:
    """``([(header, data)], error)``: up to :data:`GROUP` members whose header checksums were verified
    together, then (last) the error that stops the stream after them."""
    h = f.read(BLOCK)
    group: list[tuple[bytes, bytes]] = []
    error: Exception | None = None
    while h and h != _ZERO:
        if len(h) < BLOCK:
            error = ShardError(f"{url}: truncated tar header")
            break
        data, nxt, error = _take(h, f, url, max_member)
        if error is not None:
            break
        group.append((h, data))
        h = nxt
        if len(group) == GROUP:
            bad = _first_bad_checksum(b"".join(g for g, _ in group), list(range(0, GROUP * BLOCK, BLOCK)))
            if bad is not None:
                yield group[:bad], ShardError(f"{url}: corrupt tar header (bad checksum)")
                return
            yield group, None
            group = []
    bad = _first_bad_checksum(b"".join(g for g, _ in group), [i * BLOCK for i in range(len(group))])
    if bad is not None:
        group, error = group[:bad], ShardError(f"{url}: corrupt tar header (bad checksum)")
    yield group, error


@dataclass
class _Names:
    """A GNU long name or pax path waiting for the member it names (it may be in the next group)."""

    long_name: str | None = None


def _regular(group: list[tuple[bytes, bytes]], url: str, names: _Names,
             check_names: bool = True) -> tuple[list[tuple[str, bytes]], Exception | None]:
    """``([(name, data)] of the regular members of the group, error at the first bad one)``; without
    ``check_names`` an absolute or ``..`` name is delivered for the caller to refuse."""
    out: list[tuple[str, bytes]] = []
    for h, data in group:
        kind = h[156:157]
        if kind in _REGULAR and names.long_name is None:  # the common case first
            name = _ustar_name(h)
        elif kind == b"L":  # GNU long name for the next member
            names.long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        elif kind == b"x":  # pax header: only 'path' matters to us
            names.long_name = _pax_path(data) or names.long_name
            continue
        elif kind == b"K":  # GNU long link target of the next member, a link (skipped)
            continue
        else:
            name = names.long_name or _ustar_name(h)
            names.long_name = None
            if kind in _SKIPPED:
                continue
            if kind not in _REGULAR:
                return out, ShardError(f"{url}: unsupported tar member type {kind!r} ({name})")
        if check_names and unsafe_name(name):
            return out, ShardError(f"{url}: unsafe member name {name!r}")
        out.append((name, data))
    return out, None


def unsafe_name(name: str) -> bool:
    """An absolute member name or one with a ``..`` part."""
    return name[:1] == "/" or (".." in name and ".." in name.split("/"))


def _member_lists(f: IO[bytes], url: str, max_member: int,
                  check_names: bool = True) -> Iterator[list[tuple[str, bytes]]]:
    """The regular members, a list per group; an error is raised after the members before it."""
    names = _Names()
    for group, error in _groups(f, url, max_member):
        got, bad = _regular(group, url, names, check_names)
        if got:
            yield got
        if bad is not None or error is not None:
            raise bad or error  # type: ignore[misc]


def members(f: IO[bytes], url: str, max_member: int = MAX_MEMBER) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of each regular member of the tar stream ``f``."""
    for chunk in _member_lists(f, url, max_member):
        yield from chunk


def _ustar_name(h: bytes) -> str:
    name = h[0:100].split(b"\0", 1)[0]
    if h[345] != 0 and h[257:262] == b"ustar":
        name = h[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "replace")


def _pax_path(data: bytes) -> str | None:
    for line in data.split(b"\n"):
        _, _, rec = line.partition(b" ")
        key, _, value = rec.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "replace")
    return None


def samples(f: IO[bytes], url: str, max_member: int = MAX_MEMBER,
            check_names: bool = True) -> Iterator[dict[str, bytes | str]]:
    """Group consecutive members by key (WebDataset rule: the name up to the first dot of its basename). An
    absolute or ``..`` member name is a :class:`ShardError`, unless ``check_names`` is False (source tars
    from elsewhere, whose reader skips such a sample and counts it)."""
    cur: dict[str, bytes | str] | None = None
    key = None
    for chunk in _member_lists(f, url, max_member, check_names):
        for name, data in chunk:
            dot = name.find(".", name.rfind("/") + 1)
            if dot < 0:
                continue
            k, ext = name[:dot], name[dot + 1 :].lower()
            if k != key:
                if cur is not None:
                    yield cur
                cur, key = {"__key__": k}, k
            if ext in cur:  # type: ignore[operator]
                raise ShardError(f"{url}: duplicate member {name!r}")
            cur[ext] = data  # type: ignore[index]
    if cur is not None:
        yield cur
