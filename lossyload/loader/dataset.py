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
from torch.utils.data import IterableDataset, get_worker_info

from ..cache import Traffic
from ..errors import LossyloadError, ShardError
from ..fs import register_webdataset_schemes
from . import batch, mix, order, plan, prefetch
from .batch import Built
from .handover import Handover
from .mix import Source
from .order import SHUFFLE_START  # noqa: F401  (also imported from here)
from .order import shuffled as _shuffled
from .resolve import read_assets, resolve_codec  # noqa: F401  (also imported from here)
from .stream import ErrorPolicy, RawSample, Skip, read_range

register_webdataset_schemes()  # webdataset.gopen opens s3:// and gs:// through fsspec too


class LossyDataset(IterableDataset):
    """Stream a shard set, or a mixture: a list of URLs or :class:`~.mix.Source` s drawn in proportion to
    ``weights`` for ``epoch_samples`` per epoch (see :mod:`.order`). With ``batch_size`` it yields collated
    batches ``(x, labels)``; without, samples.

    With ``batch_path`` (default), codecs that decode to fixed-size arrays decode, augment and finalize each
    batch with a few array calls when every transform has a batch form (see :mod:`lossyload.loader.batch`);
    ``batch_path=False`` forces the per-sample path (same samples and order; other augmentation draws).

    ``x`` is a tensor when the codec has one output (e.g. ``rgb``, ``jpeg-dct`` with ``chroma="concat"``) and a
    dict of tensors otherwise. ``len()`` is the number of batches (or samples) this rank yields per epoch
    (fewer in one process when ``on_error="skip"`` skipped samples: the epoch ends early, nothing repeated).
    """

    def __init__(
        self,
        url: str | Source | list[str | Source],
        *,
        weights: list[float] | None = None,
        epoch_samples: int | None = None,
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
        batch_path: bool = True,
        prefetch: bool = True,
    ) -> None:
        super().__init__()
        self.mixture = isinstance(url, (list, tuple))  # keys name their source ("name:key")
        urls = list(url) if self.mixture else [url]
        if not urls:
            raise ValueError("a mixture needs at least one source")
        if weights is not None and not self.mixture:
            raise ValueError("weights= needs a list of sources: make_loader([url_a, url_b], weights=[3, 1], ...)")
        self.sources = [mix.open_source(u, codec=codec, options=options, transforms=transforms, train=train,
                                        storage_options=storage_options, cache_dir=cache_dir, cache_limit=cache_limit)
                        for u in urls]
        mix.unique_names(self.sources)
        mix.check_one_spec(self.sources)
        first = self.sources[0]
        self.root, self.index, self.codec, self.transforms = first.root, first.index, first.codec, first.transforms
        self.layout = order.Layout(tuple(s.sizes for s in self.sources),
                                   order.shares([s.index.samples for s in self.sources],
                                                None if weights is None else [float(w) for w in weights],
                                                epoch_samples))
        self.weights = weights
        self.batch_size = batch_size
        self.shuffle = train if shuffle is None else shuffle
        self.shuffle_buffer = shuffle_buffer if self.shuffle else 0
        self.drop_last = train if drop_last is None else drop_last
        self.seed, self.epoch = seed, 0
        self.world = world
        self.on_error = on_error
        ErrorPolicy(on_error)  # validate early
        self.storage_options = first.storage_options
        # decode, augment and finalize whole batches when the codec and transforms can (lossyload.loader.batch)
        self.batch_path = batch_path
        self.prefetch = prefetch  # remote shards: fetch the next one while this one is parsed (loader.prefetch)
        self.verify = verify  # read each shard whole and check its size and sha256 before delivering from it
        # remote shards through a node-local cache (None: streamed every epoch); see lossyload.cache
        self.cache = first.cache
        self.traffic = Traffic()  # shard bytes fetched / read from the cache by the last iteration (this process)
        self.report = False  # LossyLoader sets it: yield (outputs, labels, report) so skips and positions reach it
        # build batches in the codec's wire form (its stored integers) and leave ``finish`` to :meth:`output`,
        # on the device the loader moves them to (``LossyLoader(device=...)``)
        self.wire = False
        self.handover: Handover | None = None  # LossyLoader's persistent process workers (loader.handover)
        # LossyLoader sets it: worker -> (batches delivered, samples of its stream consumed by them)
        self.resume: dict[int, tuple[int, int]] = {}
        # LossyLoader sets them after an elastic resume: the epoch's finished segments (lossyload.loader.order)
        # and the global positions they left undelivered
        self.segments: list[order.Segment] = []
        self.pending: np.ndarray | None = None
        self.skipped: list[Skip] = []
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

    @property
    def source_labels(self) -> dict[str, list[str]]:
        """Each source's label names (a mixture delivers each source's own labels unless it has a label map)."""
        return {s.name: s.index.labels for s in self.sources}

    @property
    def samples(self) -> int:
        """Samples in an epoch (of every rank together): the shard set's, or the mixture's ``epoch_samples``."""
        return self.layout.total

    def __len__(self) -> int:
        w = self.world or plan.World.detect()
        return plan.batches_per_rank(self.samples, w.world_size, self.batch_size or 1, self.drop_last)

    def segment(self, world_size: int, num_workers: int) -> order.Segment:
        """The topology this dataset is read under now, as an epoch segment."""
        return order.Segment(world_size, num_workers, self.batch_size or 1, self.drop_last)

    def worker_batches(self, world: plan.World) -> list[int]:
        """Batches of each loader worker of ``world.rank`` in the current segment of the epoch."""
        size = self.samples if self.pending is None else len(self.pending)
        return order.worker_batches(size, self.segment(world.world_size, world.num_workers), world.rank,
                                    self.pending is None)

    def __iter__(self) -> Iterator[Any]:
        world = self._world()
        if self.handover is not None and get_worker_info() is not None:  # a persistent worker: this pass's state
            self.epoch, self.resume = self.handover.read()
            return self.handover.grouped(world.worker, self.reported(world))  # packed, in groups
        return self.iter_worker(world)

    def output(self, xs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[Any, Any]:
        """``(x, labels)`` as the caller gets them from a batch's outputs (the codec's ``finish`` applied to a
        wire-form batch): one tensor when the codec has one output, else the dict; one sample unbatched."""
        if self.wire_form():
            xs = self.codec.finished(xs)
        x = next(iter(xs.values())) if len(xs) == 1 else xs
        return _unbatch((x, labels)) if not self.batch_size else (x, labels)

    def wire_form(self) -> bool:
        """Whether batches are built in the codec's wire form (see :attr:`wire`)."""
        return self.wire and len(self.sources) == 1 and self.codec.wire_form(self.transforms)  # mixtures: not yet

    def iter_worker(self, world: plan.World) -> Iterator[Any]:
        """The batches (or samples) of loader worker ``world.worker`` of ``world.num_workers``: ``(x, labels)``,
        or with :attr:`report` ``(outputs, labels, report)`` (``(None, None, report)`` when its share ran out
        before a batch)."""
        for built, report in self.reported(world):
            if not self.report:
                if built is not None:
                    yield self.output(*_tensors(built))
            else:
                yield (None, None, report) if built is None else (*_tensors(built), report)

    def reported(self, world: plan.World) -> Iterator[tuple[Built | None, dict | None]]:
        """``(finished batch or None, report)`` of each batch of worker ``world.worker``; the report (what
        happened since the previous batch, for the loader in the main process) only with :attr:`report`."""
        bs = self.batch_size or 1
        fresh = self.pending is None
        segment = self.segment(world.world_size, world.num_workers)
        span: tuple[int, int] | None = None
        if fresh and len(self.sources) == 1:  # a contiguous range of positions: planned per shard, not per sample
            span = order.worker_span(self.samples, segment, world.rank, world.worker)
            positions = range(*span)
        else:
            entries, _ = order.worker_share(self.samples if fresh else len(self.pending), segment, world.rank,
                                            world.worker, fresh)
            positions = entries if fresh else self.pending[entries]
        policy = ErrorPolicy(self.on_error)
        self.skipped, self.padded, self.traffic = policy.skipped, 0, Traffic()
        # shard bytes per source (this iteration; a single source counts in ``traffic`` itself)
        self.source_traffic = [self.traffic] if len(self.sources) == 1 else [Traffic() for _ in self.sources]
        raw = self._raw(positions, policy, span)
        seg = len(self.segments)
        stream = _shuffled(raw, self.shuffle_buffer, order.shuffle_rng(self.seed, self.epoch, world.rank,
                                                                       world.worker, seg))
        first_batch, consumed = self.resume.get(world.worker, (0, 0))
        seen = padded = 0
        final = -(-len(positions) // bs) - 1
        for k, built, pulled, met, last in self._batches(stream, world, first_batch, consumed, len(positions), bs,
                                                         policy):
            if last or k == final:  # end the last shard's read now, so its bytes are in this batch's traffic
                raw.close()
            if not self.report:
                yield built, None
                continue
            keys = [] if built is None else built.keys if self.batch_size else built.keys[0]
            by_source = [t.take() for t in self.source_traffic]
            total = Traffic()
            for t in by_source:
                total.add(t)
            report = {"worker": world.worker, "batch": k, "consumed": pulled, "keys": keys,
                      "skipped": [str(s) for s in policy.skipped[seen:met]], "padded": self.padded - padded,
                      "traffic": total.take(), "source_traffic": by_source, "last": last}
            seen, padded = met, self.padded
            yield built, report  # built None: this worker's share ran out before batch k (skips, one process)

    def _raw(self, positions: Any, policy: ErrorPolicy, span: tuple[int, int] | None = None) -> Iterator[RawSample]:
        """The raw samples at ``positions`` of the epoch's global order, in that order (each source's shards
        read front to back; remote ones prefetched one ahead unless a cache fetches them or verify reads them
        whole). ``span``: the positions are that range of a single source (planned without per-sample arrays)."""
        if span is not None:
            s = self.sources[0]
            stream = self._read(s, order.span_runs(self.layout, *span, seed=self.seed, epoch=self.epoch,
                                                   shuffle=self.shuffle), policy, self.source_traffic[0])
            if self.mixture or s.lut is not None:
                stream = mix.tagged(stream, 0, s.name if self.mixture else None, s.lut)
            return stream
        src, shard, index = order.locate(self.layout, positions, seed=self.seed, epoch=self.epoch,
                                         shuffle=self.shuffle)
        streams = []
        for i, s in enumerate(self.sources):
            at = src == i if len(self.sources) > 1 else slice(None)
            stream = self._read(s, order.runs(shard[at], index[at]), policy, self.source_traffic[i])
            if self.mixture or s.lut is not None:
                stream = mix.tagged(stream, i, s.name if self.mixture else None, s.lut)
            streams.append(stream)
        return streams[0] if len(streams) == 1 else mix.interleave(streams, src)

    def _read(self, s: mix.Opened, runs: list, policy: ErrorPolicy, traffic: Traffic) -> Iterator[RawSample]:
        ranges = [(shard, first, end) for shard, first, end, _ in runs]
        fetch_ahead = self.prefetch and not self.verify and s.cache is None
        if fetch_ahead and runs and prefetch.worth_it(s.root, s.storage_options):
            held = prefetch.prefetched(s.root, s.index, ranges, s.storage_options)
        else:
            held = ((shard, first, end, None) for shard, first, end in ranges)
        for (shard, first, end, data), run in zip(held, runs):
            yield from read_range(s.root, s.index.shards[shard], first, end, s.index.member, policy,
                                  s.storage_options, self.verify, len(s.index.labels), s.cache, traffic, data,
                                  run[3])

    def _batches(self, stream: Iterator[RawSample], world: plan.World, first_batch: int, consumed: int,
                 planned: int, bs: int, policy: ErrorPolicy) -> Iterator[tuple[int, Built | None, int, int, bool]]:
        """``(batch number, finished batch, stream samples consumed so far, skips met so far, last)`` from
        ``first_batch`` on.
        Batch ``k``'s augmentations draw from a generator seeded by (seed, epoch, rank, worker, k), so a resumed
        epoch repeats them exactly. If skips leave the worker short of its plan: across ranks, samples of its
        first batch are repeated so every rank still yields the planned number of batches (counted in
        ``padded``); in one process (world size 1) nothing is repeated: the worker stops early, its final
        batch partial (dropped with ``drop_last``) and marked ``last`` (each batch is held until the next is
        built, to know; the last one counts what the attempt consumed and met), or ``(k, None, consumed, met,
        True)`` when nothing was left for batch ``k``. Resuming
        (``first_batch > 0``) rebuilds that first batch, then passes over the rest of the ``consumed`` stream
        samples without decoding them."""
        short = policy.mode == "skip" and world.world_size == 1  # a skip shortens the epoch, never repeats
        fused, rest = _fused(self.codec, self.transforms)
        batched = self.batch_path and batch.on_batch_path(self.codec, self.transforms)
        wire = self.wire_form()
        spare: Built | None = None  # the first batch: what short batches are padded with
        pulled = 0  # samples taken from the stream
        segment = [len(self.segments)] if self.segments else []  # a resumed segment draws anew
        mixed = self._mixed_decoding() if len(self.sources) > 1 else None

        def build(k: int) -> Built | None:
            nonlocal pulled
            want = min(bs, planned - k * bs)
            rng = np.random.default_rng([self.seed, self.epoch, world.rank, world.worker, k] + segment)
            cur, samples = None, []
            if mixed is not None:
                cur, n = mix.mixed_batch(*mixed, [s.name for s in self.sources], stream, want, rng, policy)
                pulled += n
            elif batched:
                cur, samples, n = self._batch_path_batch(stream, want, rng, policy, wire)
                pulled += n
            if cur is None and mixed is None:
                for s in stream if len(samples) < want else ():
                    pulled += 1
                    decoded = self._decode(s, fused, rest, rng, policy, wire)
                    if decoded is not None:
                        samples.append(decoded)
                        if len(samples) == want:
                            break
                cur = batch.collate(samples) if samples else None
            if cur is None and spare is None and not (short and k):
                first = f"; first: {self.skipped[0]}" if self.skipped else ""
                raise ShardError(f"no sample of this worker's share could be read ({len(self.skipped)} skipped{first})")
            if short:
                return None if cur is None or (self.drop_last and len(cur) < want) else cur
            out, added = batch.pad(cur, spare, want)
            self.padded += added
            return out

        if first_batch:  # resuming mid-epoch
            spare = build(0)
            for _ in itertools.islice(stream, max(consumed - pulled, 0)):  # pass over without decoding
                pulled += 1
            del policy.skipped[:]  # every skip met so far was reported before the stop (read-ahead included)
            self.padded = 0
        held = None  # short: the batch built last, yielded once the next one shows whether it was the last
        for k in range(first_batch, -(-planned // bs)):
            cur = build(k)
            if k == 0:
                spare = cur
            if not short:
                yield k, cur, pulled, len(policy.skipped), False  # type: ignore[misc]
                continue
            if cur is None:  # the held batch was the last: it reports what the attempt consumed and met
                yield (held[0] if held else k), (held[1] if held else None), pulled, len(policy.skipped), True
                return
            if held is not None:
                yield *held, False
            held = (k, cur, pulled, len(policy.skipped))
        if held is not None:
            yield *held, False

    def _batch_path_batch(self, stream: Iterator[RawSample], want: int, rng: np.random.Generator,
                    policy: ErrorPolicy, wire: bool = False) -> tuple[Built | None, list, int]:
        """One batch by the batch path: ``(batch, [], stream samples pulled)``. When a transform refuses the
        batch (e.g. an image smaller than a crop that may not pad), its samples go through the per-sample path,
        so only the refused ones are skipped: ``(None, their decoded samples, pulled)``; the caller tops up."""
        decoded, good, pulled = batch.pull_decoded(self.codec, stream, want, policy, wire)
        if decoded is None:
            return None, [], pulled
        try:
            return batch.augment_finalize(self.codec, self.transforms, decoded, good, rng, wire), [], pulled
        except (LossyloadError, ValueError):
            redo = [self._decode(s, None, self.transforms, rng, policy, wire) for s in good]
            return None, [x for x in redo if x is not None], pulled

    def _mixed_decoding(self) -> tuple[list[mix.Decoder], list]:
        """Each source's batch decoder and per-sample decoder, for a batch mixing sources."""
        decoders, ones = [], []
        for src in self.sources:
            decoders.append(mix.Decoder(src.codec, src.transforms,
                                        self.batch_path and batch.on_batch_path(src.codec, src.transforms)))
            fused, rest = _fused(src.codec, src.transforms)
            ones.append(lambda s, rng, policy, f=fused, r=rest, c=src.codec: self._decode(s, f, r, rng, policy,
                                                                                          codec=c))
        return decoders, ones

    def _decode(self, s: RawSample, fused, rest: list, rng: np.random.Generator, policy: ErrorPolicy,
                wire: bool = False, codec=None):
        """``(x, label, key)`` of one raw sample decoded to codec level and augmented (its wire form with
        ``wire``; ``codec``: a mixture source's, default the dataset's); ``None`` if skipped."""
        codec = codec or self.codec
        try:
            if fused is not None:
                x = codec.decode_window(s.payload, lambda hm, wm: fused.window(hm, wm, rng))
            else:
                x = codec.stored(s.payload) if wire else codec.decode(s.payload)
            for t in rest:
                x = t(x, rng)
            return (codec.wire(x) if wire else codec.finalize(x)), s.label, s.key
        except (LossyloadError, ValueError) as exc:
            policy.handle(s.url, [s.key], f"{type(exc).__name__}: {exc}", exc)
            return None


def _fused(codec, transforms: list) -> tuple[Any, list]:
    """``(leading crop fused into decoding or None, the other transforms)``: a crop that can say its window is
    fused into decoding (same result, less work)."""
    head = transforms[0] if transforms else None
    fused = head if hasattr(head, "window") and hasattr(codec, "decode_window") else None
    return fused, (transforms[1:] if fused else transforms)


def _tensors(b: Built) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({name: [B, ...]}, labels [B])`` as tensors (sharing the arrays' memory)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.xs.items()}, torch.from_numpy(b.labels)


def _unbatch(batch):
    x, y = batch
    return (x[0] if isinstance(x, torch.Tensor) else {k: v[0] for k, v in x.items()}), int(y[0])
