"""Deterministic WebDataset tar writing: fixed mtime/owner/mode, sha256 and size computed while writing.
A shard appears only when complete: local files are written under a temporary name and renamed; on object
stores the (multipart) upload is published when it is closed and aborted by ``abort()``."""

from __future__ import annotations

import io
import tarfile

from ..fs import filesystem, is_local
from ..integrity import HashingWriter

MTIME = 0  # fixed header fields make shards byte-identical across runs


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Write one shard at ``url``: ``add(key, {ext: bytes})`` per sample, then ``close()`` -> (bytes, sha256)."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.fs, self.path = filesystem(url, storage_options)
        self.local = is_local(self.fs)
        self.tmp = self.path + ".partial" if self.local else self.path
        self._f = self.fs.open(self.tmp, "wb")
        self._h = HashingWriter(self._f)
        self._tar = tarfile.open(fileobj=self._h, mode="w|", format=tarfile.GNU_FORMAT)
        self.samples = 0

    def add(self, key: str, members: dict[str, bytes]) -> None:
        for ext, data in members.items():
            self._tar.addfile(_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self.samples += 1

    @property
    def bytes_written(self) -> int:
        """Bytes flushed to the file so far (the tar stream buffers up to a record)."""
        return self._h.digest.size

    def size_if_added(self, key: str, members: dict[str, bytes]) -> int:
        """The exact size of the closed shard if ``add(key, members)`` came next (headers, block and record
        padding, end-of-archive blocks included)."""
        offset = self._tar.offset
        for ext, data in members.items():
            header = _info(f"{key}.{ext}", len(data)).tobuf(tarfile.GNU_FORMAT, self._tar.encoding, self._tar.errors)
            offset += len(header) + -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        offset += 2 * tarfile.BLOCKSIZE
        return -(-offset // tarfile.RECORDSIZE) * tarfile.RECORDSIZE

    def close(self) -> tuple[int, str]:
        self._tar.close()
        self._f.close()
        if self.local:
            self.fs.mv(self.tmp, self.path)
        return self._h.digest.size, self._h.digest.hexdigest()

    def abort(self) -> None:
        try:
            try:  # close the tar stream too, else its __del__ later flushes into the closed file
                self._tar.close()
            except Exception:  # noqa: BLE001 - the file is thrown away; it may be what failed
                pass
            if not self.local and hasattr(self._f, "discard"):
                self._f.discard()  # abort the multipart upload: nothing is published
                self._f.closed = True  # or its finaliser would try to complete the upload
            else:
                try:  # flushing what the stream buffered can fail again (disk still full): the error is known
                    self._f.close()
                except OSError:
                    pass
        finally:
            if self.local and self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)
