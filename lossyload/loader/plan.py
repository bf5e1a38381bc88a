"""Who reads what, as pure functions of (shard sizes, seed, epoch, world).

The epoch's global sample order is the shards in a seeded order, concatenated. Each rank takes one
contiguous run of that order, all runs the same length (``drop_last``: the remainder is dropped; otherwise
the order wraps around and the last ranks repeat a few samples from its start). A rank's run is cut into
batches, and each loader worker takes a contiguous range of those batches, so every rank produces the same
number of batches and at most one partial batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class World:
    """The reader's place in the job: distributed rank and data-loader worker."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(f"invalid world {self}")

    @classmethod
    def detect(cls) -> World:
        """Rank from ``torch.distributed`` (when initialised) and worker from the DataLoader worker info."""
        import torch.distributed as dist
        from torch.utils.data import get_worker_info

        rank, size = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        info = get_worker_info()
        return cls(rank=rank, world_size=size, worker=info.id if info else 0, num_workers=info.num_workers if info else 1)


def shard_order(n_shards: int, *, seed: int, epoch: int, shuffle: bool, source: int = 0) -> list[int]:
    """The shards of one pass, in order (``source``: which source of a mixture; each draws its own order)."""
    if not shuffle:
        return list(range(n_shards))
    key = [seed, epoch, 0x5EED] + ([source] if source else [])
    return [int(i) for i in np.random.default_rng(key).permutation(n_shards)]


def samples_per_rank(total: int, world_size: int, drop_last: bool) -> int:
    return total // world_size if drop_last else math.ceil(total / world_size)


def batches_per_rank(total: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    n = samples_per_rank(total, world_size, drop_last)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def worker_span(total: int, world: World, batch_size: int, drop_last: bool) -> tuple[int, int]:
    """``[start, stop)`` in the epoch's global order (may run past ``total``: wrap around) for this worker."""
    n = samples_per_rank(total, world.world_size, drop_last)
    nb = batches_per_rank(total, world.world_size, batch_size, drop_last)
    b0 = world.worker * nb // world.num_workers
    b1 = (world.worker + 1) * nb // world.num_workers
    base = world.rank * n
    return base + min(b0 * batch_size, n), base + min(b1 * batch_size, n)


def shard_ranges(order: list[int], sizes: list[int], start: int, stop: int) -> list[tuple[int, int, int]]:
    """``[(shard, first, end)]``: the sample ranges inside shards covering global positions [start, stop)."""
    total = sum(sizes)
    out: list[tuple[int, int, int]] = []
    if total == 0 or stop <= start:
        return out
    bounds = np.cumsum([0] + [sizes[i] for i in order])
    pos = start
    while pos < stop:
        p = pos % total
        j = int(np.searchsorted(bounds, p, side="right")) - 1
        first = p - int(bounds[j])
        take = min(int(bounds[j + 1]) - p, stop - pos)
        out.append((order[j], first, first + take))
        pos += take
    return out
