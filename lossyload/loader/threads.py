"""Thread workers: each loader worker's share of the epoch built in a thread of this process.

numpy, zstd, libjpeg-turbo and torch release the GIL in their inner loops, and a batch built in a thread
reaches the training loop without crossing a process boundary (no pickling, no shared-memory handles): for
the fast codecs, whose per-batch work is a few array calls, that hand-over is what process workers cost
most. Worker ``w`` of ``n`` reads exactly what process worker ``w`` would (same plan, seeds, resume), so
batches and ``state_dict`` are the same whichever kind of worker made them.
"""

from __future__ import annotations

import copy
import dataclasses
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from .dataset import LossyDataset

_DONE = object()


@dataclasses.dataclass
class _Failed:
    error: BaseException


def _run(ds: LossyDataset, worker: int, workers: int, out: queue.Queue, stop: threading.Event) -> None:
    """Build worker ``worker``'s batches into ``out`` (bounded) until done or told to stop."""
    try:
        mine = copy.copy(ds)  # its own counters, like a process worker's copy
        world = dataclasses.replace(ds._world(), worker=worker, num_workers=workers)
        for item in mine.iter_worker(world):
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(_DONE)
    except BaseException as exc:  # noqa: BLE001  (re-raised in the consuming thread)
        out.put(_Failed(exc))


def thread_batches(ds: LossyDataset, workers: int, depth: int, order: Iterable[int]) -> Iterator[Any]:
    """The items of ``workers`` thread workers (each at most ``depth`` batches ahead), taken in ``order``
    (worker numbers, the uninterrupted epoch's round robin); a worker's error is raised here."""
    queues: list[queue.Queue] = [queue.Queue(maxsize=max(1, depth)) for _ in range(workers)]
    stop = threading.Event()
    threads = [threading.Thread(target=_run, args=(ds, w, workers, queues[w], stop), daemon=True,
                                name=f"lossyload-worker-{w}") for w in range(workers)]
    for t in threads:
        t.start()
    finished: set[int] = set()  # workers whose share ran out before their turns did (skips, one process)
    try:
        for w in order:
            if w in finished:
                continue
            item = queues[w].get()
            if isinstance(item, _Failed):
                raise item.error
            if item is _DONE:
                finished.add(w)
                continue
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
