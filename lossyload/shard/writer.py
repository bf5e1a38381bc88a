"""Deterministic WebDataset tar writing: fixed mtime/owner/mode, sha256 and size computed while writing,
written under a temporary name and renamed into place only when complete."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import IO

from ..fs import filesystem

MTIME = 0  # fixed header fields make shards byte-identical across runs


class _HashingFile(io.RawIOBase):
    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.size += len(b)
        self.f.write(b)
        return len(b)


class ShardWriter:
    """Write one shard at ``url``: ``add(key, {ext: bytes})`` per sample, then ``close()`` -> (bytes, sha256)."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.fs, self.path = filesystem(url, storage_options)
        self.tmp = self.path + ".partial"
        self._f = self.fs.open(self.tmp, "wb")
        self._h = _HashingFile(self._f)
        self._tar = tarfile.open(fileobj=self._h, mode="w|", format=tarfile.GNU_FORMAT)
        self.samples = 0

    def add(self, key: str, members: dict[str, bytes]) -> None:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), MTIME, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    @property
    def bytes_written(self) -> int:
        return self._h.size

    def close(self) -> tuple[int, str]:
        self._tar.close()
        self._f.close()
        self.fs.mv(self.tmp, self.path)
        return self._h.size, self._h.sha.hexdigest()

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)
