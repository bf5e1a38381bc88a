""""These bytes are the ones the index names": size and sha256, checked one way everywhere.

The shard writer records a shard's size and sha256 while writing (:class:`HashingWriter`); every reader checks
them against the index the same way, with the same wording: the loader's ``verify`` mode
(:func:`read_checked`), the shard cache (its hits with :func:`file_digest`, its downloads with :class:`Digest`),
``lossyload verify`` (:class:`HashingReader` around its tar walk), the DALI loader and a resumed shard job
(:func:`file_digest`). Reads are bounded by the size the index gives, so a file longer than its record is
found out without reading it whole.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import IO

from .errors import ShardError

CHUNK = 1 << 22  # bytes per read when hashing a file


class Digest:
    """The size and sha256 of the bytes given to :meth:`update` so far."""

    def __init__(self) -> None:
        self.sha, self.size = hashlib.sha256(), 0

    def update(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()

    def problems(self, size: int, sha256: str, *, bounded: bool = False) -> list[str]:
        """What differs from a record of ``size`` bytes with ``sha256`` (empty when they match): the size first,
        then the hash. ``bounded``: the read stopped one byte past ``size`` (:func:`file_digest` with a limit,
        :func:`read_checked`), so a longer file is reported as "more than" ``size`` bytes."""
        out = []
        if self.size != size:
            got = f"more than {size}" if bounded and self.size > size else str(self.size)
            out.append(f"{got} bytes, index says {size}")
        if self.hexdigest() != sha256:
            out.append("sha256 does not match the index")
        return out

    def matches(self, size: int, sha256: str) -> bool:
        return self.size == size and self.hexdigest() == sha256


def digest_bytes(data: bytes) -> Digest:
    d = Digest()
    d.update(data)
    return d


def bounded_chunks(f: IO[bytes], limit: int | None, chunk: int = CHUNK) -> Iterator[bytes]:
    """What ``f`` holds from its position on, in chunks, at most ``limit + 1`` bytes in all (so a file longer
    than ``limit`` shows as such without being read whole); everything when ``limit`` is None."""
    got = 0
    while limit is None or got <= limit:
        data = f.read(chunk if limit is None else min(chunk, limit + 1 - got))
        if not data:
            return
        got += len(data)
        yield data


def file_digest(f: IO[bytes], limit: int | None = None) -> Digest:
    """The digest of what ``f`` holds from its position on, reading at most ``limit + 1`` bytes."""
    d = Digest()
    for data in bounded_chunks(f, limit):
        d.update(data)
    return d


def read_checked(f: IO[bytes], url: str, size: int, sha256: str, context: str) -> bytes:
    """The whole of ``f`` once its size and sha256 equal the record (at most ``size + 1`` bytes are read), else
    :class:`ShardError` naming ``url`` and ``context`` (e.g. "verify")."""
    chunks, d = [], Digest()
    for chunk in bounded_chunks(f, size, 1 << 24):
        chunks.append(chunk)
        d.update(chunk)
    problems = d.problems(size, sha256, bounded=True)
    if problems:
        raise ShardError(f"{url}: {problems[0]} ({context})")
    return b"".join(chunks)


class HashingReader:
    """A read-only stream that hashes and counts what passes through it (:attr:`digest`)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.digest = f, Digest()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read (and hash) the rest."""
        while self.read(CHUNK):
            pass


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it to ``f`` (:attr:`digest`)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.digest = f, Digest()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.digest.update(b)
        self.f.write(b)
        return len(b)
