"""A node-local cache of remote shards, shared by every loader worker and rank on the node.

Layout under ``dir``: ``shards/<sha256>.tar`` (complete, verified shards, named by the sha256 the index gives
them, so two datasets never mix and a shard shared by two datasets is stored once), ``tmp/<sha256>.partial``
(a download in progress) and ``locks/<sha256>.read``, ``locks/<sha256>.fetch`` plus ``cache.lock``
(``fcntl.flock`` locks; the kernel drops them when a process dies).

- A shard is fetched once per node: the fetcher holds its shard's fetch lock exclusively, so a second process
  asking for the same shard waits and then finds it cached.
- A download is written to ``tmp/`` and renamed into ``shards/`` only once its size and sha256 match the
  index: a reader never sees a half-written shard, and a process killed mid-download leaves only a partial
  file, which is never used and is removed by the next eviction pass.
- Every use of a cached shard checks its size and sha256 before any sample is read; a shard that no longer
  matches is fetched again.
- Readers hold their shard's read lock shared; eviction (least recently used first, by modification time, which a
  hit refreshes) takes only shards whose lock it can take exclusively at once, so a shard being read is never
  evicted. Room for a download is reserved (``posix_fallocate``) before it starts, under ``cache.lock``, so the
  cache stays under ``limit`` even while several processes fetch at once. A shard that cannot get room (larger
  than the limit, every other shard in use, disk full) is streamed from the remote store instead: nothing is
  lost, one warning is logged per process. A fetch lock another process holds longer than ``fetch_wait``
  seconds (a stuck download) is given up on the same way: the shard is streamed.
- Files are opened without following links (``O_NOFOLLOW``) and must be regular files; a partial download is
  created exclusively (``O_EXCL``), so it is a new file this process made. Anything else under those names (a
  link, a FIFO, a folder), planted by whoever else can write the cache folder, is removed and replaced, or the
  shard is streamed; the cache never writes through a link. The cache's folders themselves must be real
  folders, not links. Cached shards are only read, and only after their sha256 matched the index.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import IO, Any

from .errors import LossyloadError, ShardError
from .fs import filesystem, is_local, open_url
from .index import ShardInfo
from .integrity import Digest, bounded_chunks, file_digest

log = logging.getLogger("lossyload")
CHUNK = 4 << 20  # bytes moved per call while fetching a shard into the cache
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_SHA = re.compile(r"[0-9a-f]{64}")  # fullmatch


def parse_size(size: int | str) -> int:
    """Bytes from an int or a text such as ``"50GB"``, ``"512MiB"``, ``"800k"`` (units are powers of 1024)."""
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE.match(str(size))
        if not m:
            raise LossyloadError(f"cache size {size!r}: expected a number of bytes or e.g. '50GB', '512MB'")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise LossyloadError(f"cache size {size!r} must be positive")
    return value


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """Where the node-local shard cache lives and how many bytes it may hold (``None``: no limit).
    ``fetch_wait``: seconds to wait for another process's download of a shard before streaming it instead."""

    dir: str
    limit: int | None = None
    fetch_wait: float = 300.0

    def __post_init__(self) -> None:
        if self.limit is not None:
            object.__setattr__(self, "limit", parse_size(self.limit))


@dataclass
class Traffic:
    """Shard bytes by where they came from: ``remote_bytes`` fetched from the remote store (downloads into the
    cache and shards streamed past it), ``cache_bytes`` read from cached shards; and the shards fetched
    (``fetched``) and found in the cache (``hits``). Local datasets count in neither."""

    remote_bytes: int = 0
    cache_bytes: int = 0
    fetched: int = 0
    hits: int = 0

    def add(self, other: Traffic | dict[str, int] | None) -> None:
        if other is None:
            return
        d = other if isinstance(other, dict) else vars(other)
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(d.get(f.name, 0)))

    def take(self) -> dict[str, int]:
        """The counts so far, as a dict, and zero them (what a worker reports with each batch)."""
        out = dict(vars(self))
        for f in fields(self):
            setattr(self, f.name, 0)
        return out


class ShardCache:
    """The cache at ``config.dir``; :meth:`create` makes one, or returns ``None`` (one warning) when the
    directory cannot be used, so the loader streams as it would without a cache."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.dir = os.path.abspath(os.path.expanduser(config.dir))
        self._warned = False

    @classmethod
    def create(cls, config: CacheConfig) -> ShardCache | None:
        cache = cls(config)
        try:
            for sub in ("shards", "tmp", "locks"):
                folder = os.path.join(cache.dir, sub)
                os.makedirs(folder, exist_ok=True)
                if not stat.S_ISDIR(os.lstat(folder).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder (a link?)", folder)
                probe = os.path.join(folder, f".probe-{os.getpid()}")
                _remove(probe)
                os.close(_open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                os.remove(probe)
        except OSError as exc:
            log.warning("shard cache %s cannot be used (%s: %s): shards are streamed from the remote store, "
                        "not cached", cache.dir, type(exc).__name__, exc)
            return None
        return cache

    # -- paths --------------------------------------------------------------------------------------------
    def path(self, shard: ShardInfo) -> str:
        return os.path.join(self.dir, "shards", f"{_sha(shard)}.tar")

    def _partial(self, sha: str) -> str:
        return os.path.join(self.dir, "tmp", f"{sha}.partial")

    def _lock(self, sha: str, kind: str) -> str:
        return os.path.join(self.dir, "locks", f"{sha}.{kind}")

    def usage(self) -> int:
        """Bytes the cache holds now: complete shards and downloads in progress (their reserved size)."""
        return sum(size for _, size, _ in self._entries("shards", ".tar") + self._entries("tmp", ".partial"))

    def _fetch_lock(self, shard: ShardInfo) -> IO | None:
        """The shard's fetch lock, held exclusively; ``None`` when another process holds it for longer than
        ``fetch_wait`` seconds (said once, when the wait starts, and again when it is given up)."""
        path = self._lock(_sha(shard), "fetch")
        deadline, pause, said = time.monotonic() + self.config.fetch_wait, 0.01, False
        while True:
            try:
                return _flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                log.warning("shard cache %s: %s: another process has held its fetch lock (%s) for over %g s; "
                            "streaming the shard instead", self.dir, shard.url, path, self.config.fetch_wait)
                return None
            if not said:
                said = True
                log.info("shard cache %s: %s is being fetched by another process (fetch lock %s); waiting up to "
                         "%g s", self.dir, shard.url, path, self.config.fetch_wait)
            time.sleep(pause)
            pause = min(2 * pause, 1.0)

    # -- reading ------------------------------------------------------------------------------------------
    def get(self, url: str, shard: ShardInfo, storage_options: dict[str, Any] | None,
            traffic: Traffic) -> tuple[IO[bytes], IO] | None:
        """``(open cached shard, its held read lock)``, fetching it first if needed; ``None`` when the shard
        cannot be cached (the caller streams it). Close both when done; the lock keeps the shard from eviction.

        Two locks per shard: readers hold its read lock shared (eviction takes it exclusively, without
        waiting); a fetch holds its fetch lock exclusively, so a second process waits for the first's download
        and then finds the shard cached."""
        sha = _sha(shard)
        try:
            lock = _flock(self._lock(sha, "read"), fcntl.LOCK_SH)
        except OSError as exc:  # e.g. the cache was made read-only since it was opened
            return self._no_room(shard, f"{type(exc).__name__}: {exc}")
        try:
            f = self._hit(shard, quiet=True)
            fetched = False
            if f is None:
                fetch_lock = self._fetch_lock(shard)
                if fetch_lock is None:
                    lock.close()
                    return None
                with fetch_lock:
                    f = self._hit(shard)  # fetched meanwhile by another process? (a damaged copy is removed)
                    if f is None:
                        f, fetched = self._fetch(url, shard, storage_options, traffic), True
            if f is None:
                lock.close()
                return None
        except BaseException:
            lock.close()
            raise
        if not fetched:
            traffic.cache_bytes += shard.bytes
            traffic.hits += 1
        return f, lock

    def _hit(self, shard: ShardInfo, quiet: bool = False) -> IO[bytes] | None:
        """The cached shard, open at its start, if it is there, a regular file (not a link) and matches the
        index (size, sha256)."""
        path = self.path(shard)
        try:  # O_NONBLOCK: a FIFO planted here must not block the open
            f = os.fdopen(_open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP (a link), or a regular file is not what is there
            f, why = None, f"not a regular file ({exc.strerror or exc})"
        else:
            why = "does not match the index (size or sha256)"
        if f is not None:
            os.set_blocking(f.fileno(), True)
            if os.fstat(f.fileno()).st_size == shard.bytes and file_digest(f, shard.bytes).matches(shard.bytes,
                                                                                             shard.sha256):
                f.seek(0)
                try:
                    os.utime(f.fileno())  # most recently used
                except OSError:
                    pass  # a read-only cache still serves hits
                return f
            f.close()
        if not quiet:  # under the fetch lock: replace it
            log.warning("%s: cached copy %s %s; fetching it again", shard.url, path, why)
            try:
                _remove(path)
            except OSError:
                pass  # e.g. a folder: renaming the download there fails, and the shard is streamed
        return None

    def _fetch(self, url: str, shard: ShardInfo, storage_options: dict[str, Any] | None,
               traffic: Traffic) -> IO[bytes] | None:
        """Download ``url`` into the cache (caller holds the shard's fetch lock); the open cached copy, or
        ``None`` when there is no room. A download that does not match the index raises :class:`ShardError`."""
        sha = _sha(shard)
        partial = self._partial(sha)
        try:
            out = self._reserve(sha, shard.bytes)
        except OSError as exc:
            return self._no_room(shard, f"{type(exc).__name__}: {exc}")
        if isinstance(out, str):
            return self._no_room(shard, out)
        try:
            with out:
                digest = self._download(url, shard, storage_options, out)
                out.truncate(digest.size)
            traffic.remote_bytes += digest.size
            problems = digest.problems(shard.bytes, shard.sha256, bounded=True)
            if problems:
                raise ShardError(f"{url}: {problems[0]} (fetching into the shard cache)")
            try:
                os.replace(partial, self.path(shard))  # a link planted at the destination is replaced, not followed
                f = os.fdopen(_open(self.path(shard), os.O_RDONLY), "rb")
            except OSError as exc:  # e.g. shards/ is not writable: the shard is streamed
                raise _WriteFailed() from exc
        except _WriteFailed as exc:
            _remove(partial)
            return self._no_room(shard, f"{type(exc.__cause__).__name__}: {exc.__cause__}")
        except BaseException:
            _remove(partial)
            raise
        traffic.fetched += 1
        return f

    def _download(self, url: str, shard: ShardInfo, storage_options: dict[str, Any] | None,
                  out: IO[bytes]) -> Digest:
        """Copy ``url`` into ``out``, at most one byte more than the index's size; the digest of what came."""
        digest = Digest()
        with open_url(url, "rb", storage_options, size=shard.bytes) as src:
            for chunk in bounded_chunks(src, shard.bytes, CHUNK):
                digest.update(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _WriteFailed() from exc
        return digest

    def _no_room(self, shard: ShardInfo, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("shard cache %s: %s cannot be cached (%s); streaming it from the remote store (this "
                        "warning is shown once per process)", self.dir, shard.url, why)
        return None

    # -- room ---------------------------------------------------------------------------------------------
    def _reserve(self, sha: str, size: int) -> IO[bytes] | str:
        """The partial file of shard ``sha`` with ``size`` bytes reserved, after evicting least recently used
        shards that no one reads as needed to stay under the limit; if that is not enough, why not (text)."""
        with _flock(os.path.join(self.dir, "cache.lock"), fcntl.LOCK_EX):
            self._drop_stale_partials(keep=sha)
            if self.config.limit is not None:
                limit = self.config.limit
                if size > limit:
                    return f"the shard ({size:,} bytes) is larger than the cache limit ({limit:,} bytes)"
                shards = sorted(self._entries("shards", ".tar"), key=lambda e: e[2])  # oldest use first
                partials = [e for e in self._entries("tmp", ".partial") if e[0] != f"{sha}.partial"]
                over = sum(s for _, s, _ in shards + partials) + size - limit
                held = 0
                for name, nbytes, _ in shards:
                    if over <= 0:
                        break
                    if self._evict(name[: -len(".tar")]):
                        over -= nbytes
                    else:
                        held += nbytes
                if over > 0:
                    return (f"no room under the limit of {limit:,} bytes for its {size:,}: {held:,} bytes are shards "
                            f"being read, {sum(s for _, s, _ in partials):,} downloads in progress")
            _remove(self._partial(sha))  # a stale partial (its fetch lock is ours now), or a link planted there
            out = os.fdopen(_open(self._partial(sha), os.O_RDWR | os.O_CREAT | os.O_EXCL), "w+b")
            try:
                _allocate(out, size)
            except OSError:
                out.close()
                _remove(self._partial(sha))
                raise
            return out

    def _evict(self, sha: str) -> bool:
        """Remove cached shard ``sha`` unless someone holds its read lock (reads it, or is fetching it)."""
        return _remove_unless_locked(self._lock(sha, "read"), os.path.join(self.dir, "shards", f"{sha}.tar"))

    def _drop_stale_partials(self, keep: str) -> None:
        """Partial files whose fetch lock is free were left by a process that died mid-download; a
        ``.partial`` not named by a sha256 was not made by the cache (no download ever uses it)."""
        for name, nbytes, _ in self._entries("tmp", ".partial"):
            sha = name[: -len(".partial")]
            if not _SHA.fullmatch(sha):
                _remove(os.path.join(self.dir, "tmp", name))
                log.warning("shard cache %s: removed tmp/%s (%s bytes), which no download of the cache made",
                            self.dir, name, f"{nbytes:,}")
            elif sha != keep and self._evict_partial(sha):
                log.info("shard cache %s: removed %s, left by an interrupted download", self.dir, name)

    def _evict_partial(self, sha: str) -> bool:
        return _remove_unless_locked(self._lock(sha, "fetch"), self._partial(sha))

    def _entries(self, sub: str, suffix: str) -> list[tuple[str, int, float]]:
        """``(name, bytes, mtime)`` of the files in ``sub`` ending in ``suffix``."""
        out = []
        with os.scandir(os.path.join(self.dir, sub)) as it:
            for e in it:
                if e.name.endswith(suffix):
                    try:
                        st = e.stat(follow_symlinks=False)  # a link counts as itself, and is evicted as itself
                    except FileNotFoundError:  # removed meanwhile by another process
                        continue
                    out.append((e.name, st.st_size, st.st_mtime))
        return out


class _WriteFailed(Exception):
    """Writing into the cache failed (disk full, quota): the shard is streamed instead."""


def _sha(shard: ShardInfo) -> str:
    if not _SHA.fullmatch(shard.sha256):
        raise ShardError(f"{shard.url}: the index gives no valid sha256 ({shard.sha256!r}); it cannot be cached")
    return shard.sha256


def _open(path: str, flags: int, *, replace: bool = False) -> int:
    """A descriptor of ``path``, never through a link (``O_NOFOLLOW``), refused (``OSError``) unless it is a
    regular file. With ``replace``, whatever else is at ``path`` (a link, a FIFO) is removed first."""
    if replace:
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                log.warning("shard cache: %s is not a regular file (a link?); replacing it", path)
                os.remove(path)  # removes a link itself, never its target
        except FileNotFoundError:
            pass
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock(path: str, how: int) -> IO:
    """``path`` (created if missing; never through a link, anything but a regular file there is replaced)
    locked with ``flock(how)``. Read-only: a lock file is never written."""
    f = os.fdopen(_open(path, os.O_RDONLY | os.O_CREAT, replace=True), "rb")
    try:
        fcntl.flock(f, how)
    except BaseException:
        f.close()
        raise
    return f


def _allocate(f: IO[bytes], size: int) -> None:
    """Reserve ``size`` bytes for ``f`` (disk full shows now, not halfway through the download)."""
    if size:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            f.truncate(size)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_unless_locked(lock_path: str, path: str) -> bool:
    """Remove ``path`` while holding ``lock_path`` exclusively; False (nothing removed) when another process
    holds that lock."""
    try:
        lock = _flock(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    with lock:
        _remove(path)
    return True


@contextmanager
def open_shard(url: str, shard: ShardInfo, storage_options: dict[str, Any] | None, *,
               cache: ShardCache | None = None, traffic: Traffic | None = None) -> Iterator[tuple[IO[bytes], bool]]:
    """``(file, verified)`` of a shard: through ``cache`` when it is remote and there is a cache (``verified``:
    its size and sha256 matched the index), else streamed (``verified`` False)."""
    traffic = traffic if traffic is not None else Traffic()
    remote = not is_local(filesystem(url, storage_options)[0])
    got = cache.get(url, shard, storage_options, traffic) if cache is not None and remote else None
    if got is not None:
        f, lock = got
        with lock, f:
            yield f, True
        return
    with open_url(url, "rb", storage_options, size=shard.bytes) as f:
        try:
            yield f, False
        finally:
            if remote:  # what the stream fetched (a buffered reader over lossyload's resumable reader)
                traffic.remote_bytes += f.raw.tell() if hasattr(f, "raw") else 0
