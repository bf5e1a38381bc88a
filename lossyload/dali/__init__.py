"""NVIDIA DALI backend: the same shards, index and batches as the torch loader, decoded by a DALI pipeline.

    loader = lossyload.make_loader(url, batch_size=64, backend="dali")               # CPU
    loader = lossyload.make_loader(url, batch_size=64, backend="dali", device_id=0)  # GPU

Needs ``pip install 'lossyload[dali]'`` and local shards (or ``cache_dir=``: remote shards through the node-local
cache). ``lossyload dali-index URL`` writes the DALI index
files once (else the loader indexes the shards at start-up, in a temporary directory). Codecs with a DALI
form: ``vae`` and ``rgb``; the others raise :class:`~lossyload.errors.DaliUnsupportedError`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_dali_loader", "DaliLoader"]


def make_dali_loader(url: str, *, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                     prefetch_factor: int | None = None, return_keys: bool = False, **kwargs: Any):
    """:func:`lossyload.make_loader`'s signature over a DALI pipeline: ``num_workers`` sets DALI's CPU threads
    (at least 1), ``prefetch_factor`` its prefetch queue depth; ``pin_memory`` has no effect (DALI manages its
    buffers). Extra keywords: ``device_id`` (``"auto"``, the default: the first GPU when there is
    one, else the CPU; ``None``: CPU only; ``0``: the first GPU) and ``index_dir``;
    the rest are :class:`~lossyload.LossyDataset`'s. With ``cache_dir`` (and ``cache_limit``) a remote
    shard set is read through the node-local cache (see :mod:`lossyload.dali.cached`)."""
    from .loader import DaliLoader

    return DaliLoader(url, batch_size=batch_size, num_threads=max(1, num_workers),
                      prefetch_queue_depth=prefetch_factor or 2, return_keys=return_keys, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "DaliLoader":
        from .loader import DaliLoader

        return DaliLoader
    raise AttributeError(f"module 'lossyload.dali' has no attribute {name!r}")
