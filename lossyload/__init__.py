"""lossyload: train on codec-domain data (JPEG DCT coefficients, latents, codec codes) streamed from
WebDataset shards, without decoding back to pixels."""

from __future__ import annotations

from typing import Any

from .errors import LossyloadError

_LAZY = {"LossyDataset": "loader.dataset", "LossyLoader": "loader.loader", "World": "loader.plan",
         "Source": "loader.mix"}


def __getattr__(name: str) -> Any:  # torch is imported only when the loader is used (not by lossyload-shard)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lossyload' has no attribute {name!r}")

__version__ = "0.1.0"


def open_dataset(url: Any, **kwargs: Any):
    """A torch ``IterableDataset`` over the shard set at ``url`` (its directory or ``index.json``), or over a
    mixture: a list of URLs (or :class:`Source` s, which carry their own codec options, transforms, storage
    options, cache and label map) with ``weights=`` (each source's share of an epoch; default: their sizes)
    and ``epoch_samples=`` (default: the sources' total). See ``docs/storage-and-distributed.md``.

    Keyword arguments are those of :class:`LossyDataset`: ``codec`` (default: the index's), ``options``
    (load-time codec options), ``transforms`` (default: the codec's train/eval crops), ``train``,
    ``batch_size``, ``shuffle``, ``shuffle_buffer``, ``seed``, ``drop_last``, ``world``, ``on_error``,
    ``storage_options`` (for ``s3://``, ``gs://`` and other fsspec URLs), ``verify``, and ``cache_dir`` /
    ``cache_limit`` (e.g. ``"50GB"``): keep remote shards in a node-local cache shared by every worker and rank
    of the node, fetched once and checked against the index (see :mod:`lossyload.cache`; default: no cache).
    """
    from .loader.dataset import LossyDataset

    return LossyDataset(url, **kwargs)


def make_loader(url: Any, *, batch_size: int, num_workers: int | str = 0, pin_memory: bool = False,
                prefetch_factor: int | None = None, return_keys: bool = False, backend: str = "torch",
                worker_type: str = "process", device: Any = None, **kwargs: Any):
    """The batched drop-in for a ``DataLoader``: ``for x, labels in make_loader(url, batch_size=64): ...``.

    Every rank yields ``len(loader)`` batches per epoch (``(x, labels, keys)`` with ``return_keys``); its
    ``state_dict()``/``load_state_dict()`` resume an epoch exactly. See :func:`open_dataset` for the other
    arguments. ``worker_type="thread"`` runs the ``num_workers`` workers as threads of this process (the same
    batches; no process boundary to cross: see ``docs/batch-path.md`` for the setting per codec).
    Process workers start on the first pass and persist across epochs. ``num_workers="auto"`` and
    ``worker_type="auto"`` pick them from the codec's cost and the cores (:mod:`lossyload.loader.auto`).
    ``device="cuda"`` moves each batch there as the codec's stored integers (int8 latents, code grids, uint8
    pixels), pinned and non-blocking, and finishes it there (dequantize, bit-planes, normalize): the same
    batches as the host path, fewer bytes over the bus.
    ``backend="dali"``: the same batches from an NVIDIA DALI pipeline
    (:func:`lossyload.dali.make_dali_loader`; extra ``device_id``, local shards, ``vae`` and ``rgb`` only, no
    ``state_dict``)."""
    if backend == "dali":
        from .dali import make_dali_loader

        if not isinstance(url, str):
            raise ValueError("backend='dali' reads one shard set given by its URL; mixtures need backend='torch'")

        return make_dali_loader(url, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                                prefetch_factor=prefetch_factor, return_keys=return_keys, **kwargs)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'dali', got {backend!r}")
    from .loader.dataset import LossyDataset
    from .loader.loader import LossyLoader

    ds = LossyDataset(url, batch_size=batch_size, **kwargs)
    return LossyLoader(ds, num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor,
                       return_keys=return_keys, worker_type=worker_type, device=device)


__all__ = ["open_dataset", "make_loader", "LossyDataset", "LossyLoader", "Source", "World", "LossyloadError"]
