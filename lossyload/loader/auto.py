"""``num_workers="auto"`` and ``worker_type="auto"``: loader workers picked from the codec's cost and the
cores this process may run on. The rule and the measurements behind it are in ``docs/batch-path.md``.

A codec on the batch path (its batches decoded, augmented and finalized with a few array calls) is light:
two worker processes build side by side and beat one (1.2-1.6x of 0 workers against 0.9-1.1x for one, on
2 quiet cores), and more than two add processes for work that two already outrun. A codec on the per-sample
path (JPEG to pixels, JPEG to coefficients, audio to log-mel) is decode-bound: its decoders run without the
GIL, and every core helps.
"""

from __future__ import annotations

import os

from . import batch

KINDS = ("process", "thread")
LIGHT_WORKERS = 2  # process workers for a codec on the batch path (module docstring)


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def light(dataset) -> bool:
    """Whether the dataset's batches take the batch path (see :mod:`lossyload.loader.batch`)."""
    return bool(dataset.batch_path and batch.on_batch_path(dataset.codec, dataset.transforms))


def prefetch(dataset) -> int:
    """Batches each worker builds ahead by default: 4 for light codecs (small batches, quick to build: the
    depth absorbs the moments the consumer is not scheduled), 2 otherwise (torch's default)."""
    return 4 if light(dataset) else 2


def resolve(dataset, num_workers: int | str, worker_type: str) -> tuple[int, str]:
    """``(workers, kind)`` for the loader's arguments, ``"auto"`` replaced by the rule of this module."""
    if worker_type not in (*KINDS, "auto"):
        raise ValueError(f"worker_type must be 'process', 'thread' or 'auto', got {worker_type!r}")
    if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be a count >= 0 or 'auto', got {num_workers!r}")
    n = cores()
    if num_workers == "auto":
        num_workers = (min(n, LIGHT_WORKERS) if light(dataset) else n) if n > 1 else 0
    if worker_type == "auto":
        worker_type = "process"
    return int(num_workers), worker_type
