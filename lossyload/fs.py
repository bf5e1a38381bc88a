"""Every byte lossyload reads or writes goes through these functions (fsspec underneath).

Local paths and fsspec URLs work the same: ``s3://bucket/prefix`` (s3fs), ``gs://bucket/prefix`` (gcsfs) and
``http(s)://`` (read only) with the ``cloud`` extra. Storage options (endpoint, credentials, profile...) are
passed explicitly as ``storage_options``, a dict handed to the fsspec filesystem, e.g.
``{"endpoint_url": "http://127.0.0.1:9000", "key": ..., "secret": ...}`` for an S3-compatible server.

Remote reads stream with fsspec's read-ahead cache (several times faster for tar streaming than its default
"adaptive" cache) and survive transient failures: a broken stream is reopened after a backoff and resumed
from the byte offset it had reached. ``pipe:`` and other shell-executing schemes are refused.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import fsspec

from .errors import IndexFormatError, LossyloadError, MissingDependencyError, ShardError
from .index import INDEX_NAME, Index, check_relative_url

log = logging.getLogger("lossyload")
T = TypeVar("T")

_REFUSED = ("pipe:",)
_EXTRA = {"s3": "cloud", "s3a": "cloud", "gs": "cloud", "gcs": "cloud", "http": "cloud", "https": "cloud"}
READ_AHEAD = 8 << 20  # bytes fetched per remote request while streaming a shard
BUFFER = 1 << 20  # bytes moved per call from the remote stream into the reader's buffer
_PERMANENT = {errno.EINVAL, errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
              errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}  # OSErrors never retried


@dataclass(frozen=True)
class RetryPolicy:
    """How remote reads ride out transient failures (connection reset, server restarting, 5xx, timeouts):
    up to ``attempts`` tries per open or read, waiting ``backoff`` seconds, doubled each time up to
    ``max_backoff``. Missing objects and refused credentials are never retried."""

    attempts: int = 8
    backoff: float = 0.25
    max_backoff: float = 8.0

    def delays(self):
        d = self.backoff
        for _ in range(self.attempts - 1):
            yield d
            d = min(2 * d, self.max_backoff)


DEFAULT_RETRY = RetryPolicy()


class GaveUp(OSError):
    """Transient errors outlasted the retry policy (never retried again by an outer loop)."""


def _check(url: str) -> str:
    if url.startswith(_REFUSED):
        raise LossyloadError(f"{url!r}: 'pipe:' URLs are refused (lossyload never runs shell commands)")
    return url


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``url``; unknown schemes and missing backends are clear errors."""
    url = _check(str(url))
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        scheme = url.split("://", 1)[0]
        how = f"pip install 'lossyload[{_EXTRA[scheme]}]'" if scheme in _EXTRA else "install the package fsspec names"
        raise MissingDependencyError(f"{url}: {scheme}:// needs an fsspec backend that is not installed: {how} ({exc})") from exc
    except ValueError as exc:
        if "protocol" in str(exc).lower():
            raise LossyloadError(f"{url}: unknown URL scheme ({exc})") from exc
        raise


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth a retry: connection-level trouble and server-side errors, not a missing object,
    refused credentials or bad input."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, GaveUp)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # botocore, aiohttp and gcsfs connection errors do not derive from OSError
    if names & {"BotoCoreError", "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError",
                "ServerTimeoutError", "TransportError"}:
        return True
    status = getattr(exc, "status", None) or getattr(exc, "code", None)  # aiohttp: status; gcsfs: code
    if isinstance(status, int):
        return status in (408, 429) or status >= 500
    return isinstance(exc, OSError) and exc.errno not in _PERMANENT


def with_retries(what: str, fn: Callable[[], T], retry: RetryPolicy = DEFAULT_RETRY) -> T:
    """``fn()``, retried on transient errors; the last error is re-raised as an ``OSError`` naming ``what``."""
    delays = retry.delays()
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not transient(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                raise GaveUp(f"{what}: giving up after {retry.attempts} attempts ({type(exc).__name__}: {exc})") from exc
            log.warning("%s: %s: %s; retrying in %.2g s", what, type(exc).__name__, exc, delay)
            time.sleep(delay)


class ResumableReader(io.RawIOBase):
    """A forward-streaming remote file that reopens itself at the offset reached when a read fails."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str, retry: RetryPolicy,
                 block_size: int = READ_AHEAD, size: int | None = None) -> None:
        super().__init__()
        self.fs, self.path, self.url, self.retry, self.block_size = fs, path, url, retry, block_size
        self.size = size  # known (from the index): saves a metadata request per open
        self.offset = 0
        self.reopens = 0
        self._f: Any = None
        with_retries(url, self._open, retry)

    def _open(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except Exception:  # noqa: BLE001 - the broken stream is being replaced
                pass
        self._f = None
        f = self.fs.open(self.path, "rb", cache_type="readahead", block_size=self.block_size, size=self.size)
        if self.offset:
            f.seek(self.offset)
        self._f = f

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        def attempt() -> bytes:
            if self._f is None:
                self.reopens += 1
                self._open()
            try:
                return self._f.read(n)
            except Exception:
                self._f = None  # reopen at self.offset on the next attempt
                raise

        data = with_retries(self.url, attempt, self.retry)
        self.offset += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.offset

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().close()


def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None,
             retry: RetryPolicy = DEFAULT_RETRY, size: int | None = None) -> IO[bytes]:
    """Open ``url`` for streaming. Remote reads use read-ahead and resume after transient failures; pass the
    ``size`` when it is known (a shard's, from the index) to spare a metadata request."""
    fs, path = filesystem(url, storage_options)
    if mode == "rb" and not is_local(fs):
        # the C buffer serves the tar reader's many small reads without a Python call each
        reader = ResumableReader(fs, path, url, retry, size=size)
        return io.BufferedReader(reader, buffer_size=BUFFER)  # type: ignore[return-value]
    return fs.open(path, mode)


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a whole file so that readers see it complete or not at all: local files go through a
    ``.partial`` name and a rename; object stores publish an upload only when it completes."""
    if not is_local(fs):
        with fs.open(path, "wb") as f:
            f.write(data)
        return
    try:
        with fs.open(path + ".partial", "wb") as f:
            f.write(data)
    except OSError:
        try:
            fs.rm(path + ".partial")
        except OSError:
            pass  # the first error is the one to report
        raise
    fs.mv(path + ".partial", path)


def join(base: str, rel: str) -> str:
    """Resolve ``rel`` (a checked relative path) against the directory URL ``base``."""
    return posixpath.join(base.rstrip("/"), check_relative_url(rel))


def check_inside(root: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Refuse (:class:`ShardError`) a local file ``url`` that resolves, through links, outside the dataset
    folder ``root``; object stores have no links."""
    fs, path = filesystem(url, storage_options)
    if not is_local(fs):
        return
    base = os.path.realpath(filesystem(root, storage_options)[1])
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        raise ShardError(f"{url}: a link to {real}, outside the dataset folder {base}: refused")


def dataset_root(url: str) -> tuple[str, str]:
    """``(directory URL, index URL)`` for a dataset given by its directory or its ``index.json``."""
    url = _check(str(url))
    if url.endswith(".json"):
        return url.rsplit("/", 1)[0] if "/" in url else ".", url
    return url.rstrip("/"), posixpath.join(url.rstrip("/"), INDEX_NAME)


def read_index(url: str, storage_options: dict[str, Any] | None = None) -> tuple[str, Index]:
    """Read and validate the index of the dataset at ``url``; returns ``(root URL, Index)``."""
    root, index_url = dataset_root(url)
    try:
        with open_url(index_url, "rb", storage_options) as f:
            return root, Index.read(f, where=index_url)
    except FileNotFoundError as exc:
        raise IndexFormatError(f"{index_url}: no index.json (is this a lossyload dataset?)") from exc
    except PermissionError as exc:
        raise LossyloadError(f"{index_url}: access denied (check the credentials in storage_options) ({exc})") from exc
    except OSError as exc:
        raise LossyloadError(f"{index_url}: cannot be read ({exc})") from exc


def _webdataset_opener(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    return open_url(url, mode, kw.get("storage_options"))


def register_webdataset_schemes() -> None:
    """Make ``webdataset.gopen`` open ``s3://``, ``gs://`` and ``gcs://`` through fsspec (it would otherwise
    refuse ``s3://`` and shell out to ``gsutil`` for ``gs://``). Done when the loader is imported (importing
    webdataset imports torch, which the shard tool and the CLI's light commands do without)."""
    import importlib

    gopen = importlib.import_module("webdataset.gopen")  # the module (the package re-exports a function of that name)
    for scheme in ("s3", "gs", "gcs"):
        gopen.gopen_schemes[scheme] = _webdataset_opener
