"""``LossyDataset``: a torch ``IterableDataset`` over a lossyload shard set.

Per worker: plan its range -> read raw samples -> shuffle buffer -> decode to codec level -> augment ->
finalize -> collate into batches. The shuffle buffer's randomness is a pure function of (seed, epoch, rank,
worker), each batch's augmentation randomness of (seed, epoch, rank, worker, batch).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..cache import CacheConfig, ShardCache, Traffic
from ..errors import CodecError, LossyloadError, ShardError
from ..fs import read_index, register_webdataset_schemes
from . import plan
from .resolve import read_assets, resolve_codec  # noqa: F401  (also imported from here)
from .stream import ErrorPolicy, RawSample, Skip, read_range

register_webdataset_schemes()  # webdataset.gopen opens s3:// and gs:// through fsspec too


class LossyDataset(IterableDataset):
    """Stream a shard set. With ``batch_size`` it yields collated batches ``(x, labels)``; without, samples.

    ``x`` is a tensor when the codec has one output (e.g. ``rgb``, ``jpeg-dct`` with ``chroma="concat"``) and a
    dict of tensors otherwise. ``len()`` is the number of batches (or samples) this rank yields per epoch.
    """

    def __init__(
        self,
        url: str,
        *,
        codec: str | None = None,
        options: dict[str, Any] | Any | None = None,
        transforms: list | None = None,
        train: bool = True,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        drop_last: bool | None = None,
        world: plan.World | None = None,
        on_error: str = "raise",
        storage_options: dict[str, Any] | None = None,
        verify: bool = False,
        cache_dir: str | None = None,
        cache_limit: int | str | None = None,
    ) -> None:
        super().__init__()
        self.root, self.index = read_index(url, storage_options)
        self.codec = resolve_codec(self.index, codec, options, self.root, storage_options)
        self.transforms = list(self.codec.default_transforms(train) if transforms is None else transforms)
        self.batch_size = batch_size
        self.shuffle = train if shuffle is None else shuffle
        self.shuffle_buffer = shuffle_buffer if self.shuffle else 0
        self.drop_last = train if drop_last is None else drop_last
        self.seed, self.epoch = seed, 0
        self.world = world
        self.on_error = on_error
        ErrorPolicy(on_error)  # validate early
        self.storage_options = storage_options
        self.verify = verify  # read each shard whole and check its size and sha256 before delivering from it
        # remote shards through a node-local cache (None: streamed every epoch); see lossyload.cache
        self.cache = ShardCache.create(CacheConfig(dir=cache_dir, limit=cache_limit)) if cache_dir else None
        self.traffic = Traffic()  # shard bytes fetched / read from the cache by the last iteration (this process)
        self.report = False  # LossyLoader sets it: yield (x, y, report) so skips and positions reach it
        # LossyLoader sets it: worker -> (batches delivered, samples of its stream consumed by them)
        self.resume: dict[int, tuple[int, int]] = {}
        self.skips: list[Skip] = []
        self.padded = 0

    @property
    def labels(self) -> list[str]:
        return self.index.labels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _world(self) -> plan.World:
        w = plan.World.detect()
        if self.world is not None:
            w = dataclasses.replace(w, rank=self.world.rank, world_size=self.world.world_size)
        return w

    def __len__(self) -> int:
        w = self.world or plan.World.detect()
        return plan.batches_per_rank(self.index.samples, w.world_size, self.batch_size or 1, self.drop_last)

    def __iter__(self) -> Iterator[Any]:
        world = self._world()
        bs = self.batch_size or 1
        start, stop = plan.worker_span(self.index.samples, world, bs, self.drop_last)
        order = plan.shard_order(len(self.index.shards), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)
        ranges = plan.shard_ranges(order, [s.samples for s in self.index.shards], start, stop)
        policy = ErrorPolicy(self.on_error)
        self.skips, self.padded, self.traffic = policy.skips, 0, Traffic()
        raw = (
            s
            for shard, first, end in ranges
            for s in read_range(self.root, self.index.shards[shard], first, end, self.index.member, policy,
                                self.storage_options, self.verify, len(self.index.labels), self.cache, self.traffic)
        )
        shuffle_rng = np.random.default_rng([self.seed, self.epoch, world.rank, world.worker, 0x5F])
        stream = _shuffled(raw, self.shuffle_buffer, shuffle_rng)
        first_batch, consumed = self.resume.get(world.worker, (0, 0))
        seen = padded = 0
        for k, samples, pulled in self._batches(stream, world, first_batch, consumed, stop - start, bs, policy):
            x, y = _collate(samples)
            if not self.batch_size:
                x, y = _unbatch((x, y))
            if self.report:  # what happened since the previous batch, for the loader in the main process
                keys = [s[2] for s in samples] if self.batch_size else samples[0][2]
                report = {"worker": world.worker, "batch": k, "consumed": pulled, "keys": keys,
                          "skipped": [str(s) for s in policy.skips[seen:]], "padded": self.padded - padded,
                          "traffic": self.traffic.take()}
                seen, padded = len(policy.skips), self.padded
                yield x, y, report
            else:
                yield x, y

    def _batches(self, stream: Iterator[RawSample], world: plan.World, first_batch: int, consumed: int,
                 planned: int, bs: int, policy: ErrorPolicy) -> Iterator[tuple[int, list, int]]:
        """``(batch number, decoded samples, stream samples consumed so far)`` from ``first_batch`` on. Batch
        ``k``'s augmentations draw from a generator seeded by (seed, epoch, rank, worker, k), so a resumed epoch
        repeats them exactly. If skips
        leave the worker short of its plan, samples of its first batch are repeated so every rank still yields
        the planned number of batches (counted in ``padded``). Resuming (``first_batch > 0``) rebuilds that
        first batch, then passes over the rest of the ``consumed`` stream samples without decoding them."""
        head = self.transforms[0] if self.transforms else None
        # A leading crop that can say its window is fused into decoding (same result, less work).
        fused = head if hasattr(head, "window") and hasattr(self.codec, "decode_window") else None
        rest = self.transforms[1:] if fused else self.transforms
        spare: list = []  # the first batch: what short batches are padded with
        pulled = 0  # samples taken from the stream

        def batch(k: int) -> list:
            nonlocal pulled
            want = min(bs, planned - k * bs)
            rng = np.random.default_rng([self.seed, self.epoch, world.rank, world.worker, k])
            cur: list = []
            for s in stream:
                pulled += 1
                decoded = self._decode(s, fused, rest, rng, policy)
                if decoded is not None:
                    cur.append(decoded)
                    if len(cur) == want:
                        break
            pool = cur + spare
            if len(cur) < want and not pool:
                first = f"; first: {self.skips[0]}" if self.skips else ""
                raise ShardError(f"no sample of this worker's share could be read ({len(self.skips)} skipped{first})")
            while len(cur) < want:
                cur.append(pool[(want - len(cur)) % len(pool)])
                self.padded += 1
            return cur

        if first_batch:  # resuming mid-epoch
            spare = batch(0)
            for _ in itertools.islice(stream, max(consumed - pulled, 0)):  # pass over without decoding
                pulled += 1
            del policy.skips[:]  # every skip met so far was reported before the stop (read-ahead included)
            self.padded = 0
        for k in range(first_batch, -(-planned // bs)):
            cur = batch(k)
            if k == 0:
                spare = cur
            yield k, cur, pulled

    def _decode(self, s: RawSample, fused, rest: list, rng: np.random.Generator, policy: ErrorPolicy):
        """``(x, label, key)`` of one raw sample decoded to codec level and augmented; ``None`` if skipped."""
        try:
            if fused is not None:
                x = self.codec.decode_window(s.payload, lambda hm, wm: fused.window(hm, wm, rng))
            else:
                x = self.codec.decode(s.payload)
            for t in rest:
                x = t(x, rng)
            return self.codec.finalize(x), s.label, s.key
        except (LossyloadError, ValueError) as exc:
            policy.handle(s.url, [s.key], f"{type(exc).__name__}: {exc}", exc)
            return None


def _shuffled(src: Iterator[RawSample], size: int, rng: np.random.Generator) -> Iterator[RawSample]:
    if size <= 1:
        yield from src
        return
    buf: list[RawSample] = []
    for s in src:
        if len(buf) < size:
            buf.append(s)
            continue
        i = int(rng.integers(size))
        buf[i], s = s, buf[i]
        yield s
    rng.shuffle(buf)  # type: ignore[arg-type]
    yield from buf


def _collate(samples: list) -> tuple[Any, torch.Tensor]:
    """Stack ``(x, label, key)`` samples into ``(x [B, ...] or {name: [B, ...]}, labels [B])``."""
    keys = samples[0][0].keys()
    try:
        xs = {k: torch.from_numpy(np.stack([s[0][k] for s in samples])) for k in keys}
    except ValueError as exc:
        shapes = sorted({str(tuple(s[0][k].shape)) for s in samples for k in keys})
        raise CodecError(f"samples of different shapes {shapes} cannot be batched: add a crop transform") from exc
    labels = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    return (next(iter(xs.values())) if len(xs) == 1 else xs), labels


def _unbatch(batch):
    x, y = batch
    return (x[0] if isinstance(x, torch.Tensor) else {k: v[0] for k, v in x.items()}), int(y[0])
