"""``LossyLoader``: the batched drop-in for a ``DataLoader`` over a :class:`LossyDataset`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from .dataset import LossyDataset

log = logging.getLogger("lossyload")


class LossyLoader:
    """Iterate ``(x, labels)`` batches; batching happens inside the workers. Each full pass advances the
    epoch (or call ``set_epoch``). Skipped samples of the last epoch are in ``skipped`` (``"url [key]:
    reason"``), the number of decoded samples repeated in their place in ``padded``; both are logged as a
    warning when the epoch ends."""

    def __init__(self, dataset: LossyDataset, *, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None) -> None:
        self.dataset = dataset
        self.dataset.report = True
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor if num_workers else None
        self.epoch = 0
        self.skipped: list[str] = []
        self.padded = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        self.dataset.set_epoch(self.epoch)
        self.skipped, self.padded = [], 0
        dl = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                        prefetch_factor=self.prefetch_factor)
        for x, y, report in dl:
            self.skipped.extend(report["skipped"])
            self.padded += report["padded"]
            yield x, y
        if self.skipped:
            reasons = Counter(s.rsplit("]: ", 1)[-1].split(":")[0] for s in self.skipped)
            log.warning("epoch %d: skipped %d samples %s; %d repeated to keep batches equal across ranks",
                        self.epoch, len(self.skipped), dict(reasons), self.padded)
        self.epoch += 1
