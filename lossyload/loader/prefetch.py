"""Buckets that keep up: while a worker parses one shard, the next is fetched whole in a background thread
(remote storage only; bounded: the shard being parsed and one more, and only shards up to
:data:`PREFETCH_MAX` bytes, larger ones are streamed). The fetch uses the shard size from the index, so no
metadata request is made. A fetch that fails is not an error here: that shard is then streamed as usual, and
the stream reports and counts what cannot be read, exactly as without prefetching."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import LossyloadError
from ..fs import filesystem, is_local, join, open_url
from ..index import Index

PREFETCH_MAX = 256 << 20  # bytes: larger shards are streamed, not held whole


def _fetch(url: str, size: int, storage_options: dict[str, Any] | None) -> bytes | None:
    try:
        with open_url(url, "rb", storage_options, size=size) as f:
            data = f.read(size + 1)  # one byte more than the index says: a longer shard is read as streamed
        return data if len(data) == size else None
    except (OSError, LossyloadError, ValueError):
        return None


def worth_it(root: str, storage_options: dict[str, Any] | None) -> bool:
    """Whether shards under ``root`` are remote (local files gain nothing from a second copy)."""
    fs, _ = filesystem(root, storage_options)
    return not is_local(fs)


def prefetched(root: str, index: Index, ranges: list[tuple[int, int, int]],
               storage_options: dict[str, Any] | None) -> Iterator[tuple[int, int, int, bytes | None]]:
    """``(shard, first, end, bytes or None)`` of each range, the next range's shard fetched meanwhile."""
    def submit(i: int) -> Future | None:
        info = index.shards[ranges[i][0]]
        if info.bytes > PREFETCH_MAX:
            return None
        return pool.submit(_fetch, join(root, info.url), info.bytes, storage_options)

    with ThreadPoolExecutor(1, thread_name_prefix="lossyload-prefetch") as pool:
        pending = submit(0) if ranges else None
        for i, (shard, first, end) in enumerate(ranges):
            current, pending = pending, (submit(i + 1) if i + 1 < len(ranges) else None)
            yield shard, first, end, current.result() if current is not None else None
            del current
        if pending is not None:
            pending.cancel()
