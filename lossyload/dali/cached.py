"""Remote shard sets for the DALI backend, through the node-local shard cache.

DALI reads local files only, and all of a rank's shards over an epoch. With ``cache_dir``, every shard is
fetched into the cache (once per node, verified, see :mod:`lossyload.cache`) and held there for the loader's
life (shared locks: eviction cannot take them), and DALI reads a local view of the dataset: a folder under the
cache holding ``index.json`` and, under each shard's relative name, a link to its cached file.
"""

from __future__ import annotations

import hashlib
import os
from typing import IO, Any

from ..cache import CacheConfig, ShardCache, Traffic
from ..errors import LossyloadError
from ..fs import filesystem, is_local, join
from ..index import INDEX_NAME, Index


def cached_root(root: str, index: Index, storage_options: dict[str, Any] | None, cache_dir: str | None,
                cache_limit: int | str | None) -> tuple[str, list[IO], Traffic]:
    """``(local root, held locks, traffic)``: ``root`` itself when it is local or there is no cache, else the
    cache's local view of it (every shard fetched and held until the locks are closed)."""
    traffic = Traffic()
    if not cache_dir or is_local(filesystem(root, storage_options)[0]):
        return root, [], traffic
    cache = ShardCache.create(CacheConfig(dir=cache_dir, limit=cache_limit))
    if cache is None:
        raise LossyloadError(f"{root}: the DALI backend reads remote shards through the cache only, and "
                             f"{cache_dir} cannot be used (see the warning above)")
    pins: list[IO] = []
    try:
        for shard in index.shards:
            got = cache.get(join(root, shard.url), shard, storage_options, traffic)
            if got is None:
                raise LossyloadError(f"{root}: the DALI backend holds every shard in the cache at once, and "
                                     f"{index.bytes} bytes do not fit cache_limit={cache.config.limit} at "
                                     f"{cache.dir} beside the shards in use; raise the limit")
            f, lock = got
            f.close()
            pins.append(lock)
        return _view(cache, index), pins, traffic
    except BaseException:
        for lock in pins:
            lock.close()
        raise


def _view(cache: ShardCache, index: Index) -> str:
    """The folder ``views/<index hash>`` of links to the cached shards, plus the index (made once, atomically
    per file, so processes building it together agree)."""
    text = index.to_json()
    view = os.path.join(cache.dir, "views", hashlib.sha256(text.encode()).hexdigest()[:24])
    for shard in index.shards:
        dest = os.path.join(view, shard.url)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.{os.getpid()}.link"
        os.symlink(cache.path(shard), tmp)
        os.replace(tmp, dest)
    tmp = os.path.join(view, f"{INDEX_NAME}.{os.getpid()}.partial")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(view, INDEX_NAME))
    return view
