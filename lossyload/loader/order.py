"""The epoch's global sample order, for one shard set or a weighted mixture, and how it is cut into rank and
worker shares, also after an elastic resume. Pure functions of (shard sizes, weights, seed, epoch, topology).

**Sources.** Each source is read as an endless stream of passes over its shards; pass ``q`` lists the shards
in the seeded order :func:`~.plan.shard_order` gives for ``q``, their samples in shard order. Epoch ``e``
takes the source's share ``c`` (its weight's share of the epoch's samples) from stream position ``e * c``
on: a share larger than the source repeats it with a fresh shard order; a smaller one subsamples it, and
successive epochs cover all of it. A single source whose share is its size reads pass ``e`` in epoch ``e``.

**Global order.** Position ``p < T`` (``T``: the epoch's samples) belongs to source ``ids[p]``, a seeded
permutation holding each source's share exactly; it is that source's next sample. Any contiguous run of
global positions is therefore, per source, a contiguous run of its stream: whole shards are read front to
back.

**Segments.** An epoch is read in segments, one per topology (world size, loader workers, batch size): the
first shares out the global order as :mod:`.plan` describes (contiguous per rank, then per worker, batch
aligned). A state saved under one topology and loaded under another ends its segment; what the old ranks
had not delivered (computed for every old rank from one rank's batch counts: ranks move in lockstep) is the
next segment's *pending* list, shared out the same way. Padding (entries repeated so that ranks get equal
batches) is never pending again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..errors import LossyloadError
from .plan import batches_per_rank, samples_per_rank, shard_order

T = TypeVar("T")

SHUFFLE_START = 128  # samples in the shuffle buffer when it starts delivering (it then grows to its size)
_DRAWS = 256  # uniform draws taken from the generator at a time


@dataclass(frozen=True)
class Layout:
    """What the epoch order depends on besides (seed, epoch): each source's shard sizes and its share."""

    sizes: tuple[tuple[int, ...], ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Segment:
    """One topology an epoch was (or is) read under; ``batches``: per worker, batches delivered in it."""

    world_size: int
    num_workers: int
    batch_size: int
    drop_last: bool
    batches: tuple[int, ...] = ()


def shares(totals: list[int], weights: list[float] | None, epoch_samples: int | None) -> tuple[int, ...]:
    """Samples per source per epoch: ``epoch_samples`` (default: the sources' total) split in proportion to
    ``weights`` (default: the sources' sizes), rounded by largest remainder so they sum exactly."""
    if weights is None:
        if epoch_samples is None or not sum(totals):
            return tuple(totals) if epoch_samples is None else tuple(0 for _ in totals)
        weights = [float(t) for t in totals]
    if len(weights) != len(totals):
        raise ValueError(f"{len(weights)} weights for {len(totals)} sources")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {list(weights)}")
    n = sum(totals) if epoch_samples is None else int(epoch_samples)
    if n < 0:
        raise ValueError(f"epoch_samples must be >= 0, got {epoch_samples}")
    for t, w in zip(totals, weights):
        if w > 0 and t == 0:
            raise LossyloadError("a source with a positive weight holds no samples")
    exact = [n * w / sum(weights) for w in weights]
    out = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(out)), key=lambda i: (out[i] - exact[i], i))[: n - sum(out)]:
        out[i] += 1
    return tuple(out)


def source_ids(layout: Layout, seed: int, epoch: int) -> np.ndarray | None:
    """The source of each global position (``None`` for a single source)."""
    if len(layout.counts) == 1:
        return None
    ids = np.repeat(np.arange(len(layout.counts), dtype=np.int16), layout.counts)
    np.random.default_rng([seed, epoch, 0x313]).shuffle(ids)
    return ids


def locate(layout: Layout, positions: np.ndarray, *, seed: int, epoch: int,
           shuffle: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(source, shard, sample in shard)`` of each global position (positions past ``T`` wrap around)."""
    p = np.asarray(positions, np.int64) % max(layout.total, 1)
    ids = source_ids(layout, seed, epoch)
    if ids is None:
        src, k = np.zeros(len(p), np.int16), p
    else:
        rank_in = np.empty(len(ids), np.int64)
        for i in range(len(layout.counts)):
            at = ids == i
            rank_in[at] = np.arange(int(at.sum()))
        src, k = ids[p], rank_in[p]
    shard, index = np.zeros(len(p), np.int64), np.zeros(len(p), np.int64)
    for i, sizes in enumerate(layout.sizes):
        at = np.flatnonzero(src == i)
        if not len(at):
            continue
        stream = epoch * layout.counts[i] + k[at]  # position in the source's endless stream of passes
        size = sum(sizes)
        passes, within = stream // size, stream % size
        for q in np.unique(passes):
            order = shard_order(len(sizes), seed=seed, epoch=int(q), shuffle=shuffle, source=i)
            bounds = np.cumsum([0] + [sizes[s] for s in order])
            sel = at[passes == q]
            w = within[passes == q]
            j = np.searchsorted(bounds, w, side="right") - 1
            shard[sel] = np.asarray(order)[j]
            index[sel] = w - bounds[j]
    return src, shard, index


def span_runs(layout: Layout, start: int, stop: int, *, seed: int, epoch: int,
              shuffle: bool) -> list[tuple[int, int, int, frozenset[int] | None]]:
    """:func:`runs` of the global positions ``[start, stop)`` of a single source (a fresh epoch's rank or worker
    share), computed per shard from the passes' bounds: no array per sample, so a rank's plan costs the same
    at 10 million samples as at ten thousand. Equal to ``runs(*locate(layout, arange(start, stop))[1:])``."""
    if len(layout.counts) != 1:
        raise ValueError("span_runs: a single source only")
    sizes, count, total = layout.sizes[0], layout.counts[0], max(layout.total, 1)
    size = sum(sizes)
    pieces: list[tuple[int, int, int]] = []
    orders: dict[int, tuple[list[int], np.ndarray]] = {}
    p = start
    while p < stop:
        wrapped = p % total  # positions past the epoch's total wrap around (padding)
        take = min(stop - p, total - wrapped)
        s, end = epoch * count + wrapped, epoch * count + wrapped + take
        while s < end:
            q, w0 = divmod(s, size)
            w1 = min(size, w0 + end - s)
            if q not in orders:
                shards = shard_order(len(sizes), seed=seed, epoch=q, shuffle=shuffle)
                orders[q] = shards, np.cumsum([0] + [sizes[i] for i in shards])
            shards, bounds = orders[q]
            first, last = np.searchsorted(bounds, [w0, w1 - 1], "right") - 1
            for j in range(int(first), int(last) + 1):
                lo, hi = max(w0, int(bounds[j])), min(w1, int(bounds[j + 1]))
                pieces.append((shards[j], lo - int(bounds[j]), hi - int(bounds[j])))
            s += w1 - w0
        p += take
    return _grouped(pieces)


def _grouped(pieces: list[tuple[int, int, int]]) -> list[tuple[int, int, int, frozenset[int] | None]]:
    """Runs ``(shard, first, end)`` joined as :func:`runs` joins samples: contiguous reads of one shard into one
    read, a later run of the same shard after it into one read with a gap."""
    out: list[tuple[int, int, int, frozenset[int] | None]] = []
    for s, first, end in pieces:
        if out and out[-1][0] == s and out[-1][3] is None and first == out[-1][2]:
            out[-1] = (s, out[-1][1], end, None)
        elif out and out[-1][0] == s and first >= out[-1][2]:
            prev = out[-1]
            kept = prev[3] if prev[3] is not None else frozenset(range(prev[1], prev[2]))
            out[-1] = (s, prev[1], end, kept | frozenset(range(first, end)))
        else:
            out.append((s, first, end, None))
    return out


def worker_span(size: int, seg: Segment, rank: int, worker: int) -> tuple[int, int]:
    """A fresh epoch's :func:`worker_share` as the range ``[start, stop)`` of global positions it holds."""
    bs = seg.batch_size
    m = samples_per_rank(size, seg.world_size, seg.drop_last)
    nb = batches_per_rank(size, seg.world_size, bs, seg.drop_last)
    n = min(nb * bs, m)
    b0, b1 = worker * nb // seg.num_workers, (worker + 1) * nb // seg.num_workers
    return rank * m + min(b0 * bs, n), rank * m + min(b1 * bs, n)


def runs(shard: np.ndarray, index: np.ndarray) -> list[tuple[int, int, int, frozenset[int] | None]]:
    """Consecutive samples of one shard grouped: ``[(shard, first, end, wanted)]``, in order. ``wanted`` is
    ``None`` for a contiguous run, else the samples of ``[first, end)`` to read (a resumed epoch's leftovers)."""
    if not len(shard):
        return []
    cut = np.flatnonzero((np.diff(shard) != 0) | (np.diff(index) != 1)) + 1
    return _grouped([(int(shard[a]), int(index[a]), int(index[b - 1]) + 1)
                     for a, b in zip(np.r_[0, cut], np.r_[cut, len(shard)])])


# ------------------------------------------------------------------------------------------- shares
def rank_share(size: int, seg: Segment, rank: int, fresh: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """``(entries, real, batches)`` of ``rank``: indices into the segment's list of ``size`` entries (a fresh
    epoch's global order, or the pending list), whether each is its first delivery (not padding), and the
    rank's batch count. A fresh epoch follows ``drop_last``; a resumed segment drops nothing and pads its last
    batch to full size under ``drop_last``."""
    bs = seg.batch_size
    if fresh:
        m = samples_per_rank(size, seg.world_size, seg.drop_last)
        nb = batches_per_rank(size, seg.world_size, bs, seg.drop_last)
        n = min(nb * bs, m)
    else:
        m = -(-size // seg.world_size)
        nb = -(-m // bs)
        n = nb * bs if seg.drop_last else m
    j = np.arange(n, dtype=np.int64)
    e = rank * m + j
    real = (j < m) & (e < size)
    return (e if fresh else e % max(size, 1)), real, nb


def worker_share(size: int, seg: Segment, rank: int, worker: int, fresh: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(entries, real)`` of one loader worker: a contiguous run of its rank's batches."""
    e, real, nb = rank_share(size, seg, rank, fresh)
    b0, b1 = worker * nb // seg.num_workers, (worker + 1) * nb // seg.num_workers
    a, b = min(b0 * seg.batch_size, len(e)), min(b1 * seg.batch_size, len(e))
    return e[a:b], real[a:b]


def worker_batches(size: int, seg: Segment, rank: int, fresh: bool) -> list[int]:
    """Batches of each loader worker of ``rank`` in the segment."""
    if fresh:  # from the ranges alone
        return [-(-(hi - lo) // seg.batch_size) for lo, hi in (worker_span(size, seg, rank, w)
                                                               for w in range(seg.num_workers))]
    return [-(-len(worker_share(size, seg, rank, w, fresh)[0]) // seg.batch_size) for w in range(seg.num_workers)]


def shuffle_rng(seed: int, epoch: int, rank: int, worker: int, segment: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, rank, worker, 0x5F] + ([segment] if segment else []))


def pending(total: int, segments: list[Segment], *, seed: int, epoch: int, shuffle_buffer: int) -> np.ndarray | None:
    """The global positions not yet delivered after the finished ``segments`` (``None``: no segment finished,
    the epoch's whole order is to come). Each old worker's delivered samples are the first ``batches x
    batch_size`` of its shuffled stream, replayed here on positions alone."""
    if not segments:
        return None
    todo: np.ndarray | None = None
    for k, seg in enumerate(segments):
        size = total if todo is None else len(todo)
        left = []
        for rank in range(seg.world_size):
            for w in range(seg.num_workers):
                e, real = worker_share(size, seg, rank, w, todo is None)
                pulled = min(seg.batches[w] * seg.batch_size, len(e)) if w < len(seg.batches) else 0
                done = np.zeros(len(e), bool)
                rng = shuffle_rng(seed, epoch, rank, w, k)
                done[list(itertools.islice(shuffled(iter(range(len(e))), shuffle_buffer, rng), pulled))] = True
                keep = e[real & ~done]
                left.append(keep if todo is None else todo[keep])
        todo = np.concatenate(left) if left else np.zeros(0, np.int64)
    return todo


def shuffled(src: Iterator[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """A seeded shuffle buffer of ``size`` samples. It delivers once it holds :data:`SHUFFLE_START` (so the
    first batch never waits for a buffer larger than the data), then grows by one sample per delivered one
    until it holds ``size``; each delivery is a uniform pick among what it holds. Pure function of ``rng``."""
    if size <= 1:
        yield from src
        return
    start = min(size, SHUFFLE_START)
    buf: list[T] = []
    draws, j = rng.random(_DRAWS), 0
    it = iter(src)
    for s in it:
        buf.append(s)
        if len(buf) < size:  # still growing: take one more
            more = next(it, None)
            if more is not None:
                buf.append(more)
        if len(buf) < start:
            continue
        if j == _DRAWS:
            draws, j = rng.random(_DRAWS), 0
        i = int(draws[j] * len(buf))
        j += 1
        buf[i], buf[-1] = buf[-1], buf[i]
        yield buf.pop()
    rng.shuffle(buf)  # type: ignore[arg-type]
    yield from buf
