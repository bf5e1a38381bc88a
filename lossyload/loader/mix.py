"""Mixtures: several shard sets read as one dataset, each with its own codec options, transforms, storage
options, cache and label map, their outputs one spec. The order they are drawn in is :mod:`.order`'s; this
module opens the sources, tags their samples and decodes a batch that holds samples of several of them."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass
from itertools import islice
from typing import Any

import numpy as np

from ..cache import CacheConfig, ShardCache
from ..codecs import Codec
from ..errors import CodecError, LossyloadError
from ..fs import read_index
from ..index import Index
from . import batch
from .batch import Built
from .resolve import resolve_codec
from .stream import ErrorPolicy, RawSample


@dataclass(frozen=True)
class Source:
    """One shard set of a mixture: ``make_loader([Source(url_a, options=...), url_b], weights=[3, 1])``.
    ``None`` takes the loader's own argument of that name. ``name`` (default: the URL's last part) prefixes
    the keys ``return_keys`` gives (``"name:key"``). ``label_map`` maps this source's labels (names from its
    index, or label numbers) to the labels delivered; without it a source's labels are its own."""

    url: str
    _: KW_ONLY
    name: str | None = None
    codec: str | None = None
    options: dict[str, Any] | Any | None = None
    transforms: list | None = None
    storage_options: dict[str, Any] | None = None
    cache_dir: str | None = None
    cache_limit: int | str | None = None
    label_map: dict[str | int, int] | None = None


@dataclass
class Opened:
    """A source as the dataset reads it."""

    name: str
    root: str
    index: Index
    codec: Codec
    transforms: list
    storage_options: dict[str, Any] | None
    cache: ShardCache | None
    lut: np.ndarray | None  # source label -> delivered label

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(s.samples for s in self.index.shards)


def open_source(src: str | Source, *, codec: str | None, options: Any, transforms: list | None, train: bool,
                storage_options: dict[str, Any] | None, cache_dir: str | None,
                cache_limit: int | str | None) -> Opened:
    """Read the index, build the codec and transforms and attach the cache of one source."""
    if isinstance(src, str):
        src = Source(src)
    pick = lambda mine, shared: shared if mine is None else mine  # noqa: E731
    so = pick(src.storage_options, storage_options)
    root, index = read_index(src.url, so)
    cdc = resolve_codec(index, pick(src.codec, codec), pick(src.options, options), root, so)
    ts = pick(src.transforms, transforms)
    ts = list(cdc.default_transforms(train) if ts is None else ts)
    cdir, climit = pick(src.cache_dir, cache_dir), pick(src.cache_limit, cache_limit)
    cache = ShardCache.create(CacheConfig(dir=cdir, limit=climit)) if cdir else None
    name = src.name or posixpath.basename(root.rstrip("/")) or root
    return Opened(name, root, index, cdc, ts, so, cache, _lut(name, index, src.label_map))


def _lut(name: str, index: Index, label_map: dict[str | int, int] | None) -> np.ndarray | None:
    if label_map is None:
        return None
    names = index.labels
    lut = np.full(len(names), -1, np.int64)
    for k, v in label_map.items():
        i = names.index(k) if isinstance(k, str) and k in names else k
        if not isinstance(i, int) or not 0 <= i < len(names):
            raise LossyloadError(f"source {name!r}: label_map names {k!r}, not a label of this source "
                                 f"({len(names)} labels: {', '.join(names[:10])})")
        if not isinstance(v, int) or v < 0:
            raise LossyloadError(f"source {name!r}: label_map[{k!r}] = {v!r} is not a label number >= 0")
        lut[i] = v
    missing = [names[i] for i in np.flatnonzero(lut < 0)]
    if missing:
        raise LossyloadError(f"source {name!r}: label_map leaves labels unmapped: {', '.join(missing[:10])}")
    return lut


def unique_names(sources: list[Opened]) -> None:
    """Give sources with the same name a ``-N`` suffix (N: their place in the mixture)."""
    names = [s.name for s in sources]
    for i, s in enumerate(sources):
        if names.count(s.name) > 1:
            s.name = f"{s.name}-{i}"


def check_one_spec(sources: list[Opened]) -> None:
    """Every source's codec must give the same outputs (names, dtypes, layouts, fixed sizes)."""
    def spec(s: Opened) -> dict[str, tuple]:
        return {k: (v.dtype, v.layout, v.shape) for k, v in s.codec.output_spec().items()}

    first = spec(sources[0])
    for s in sources[1:]:
        other = spec(s)
        same = first.keys() == other.keys() and all(
            first[k][:2] == other[k][:2] and len(first[k][2]) == len(other[k][2])
            and all(a is None or b is None or a == b for a, b in zip(first[k][2], other[k][2])) for k in first)
        if not same:
            raise CodecError(f"a mixture's sources must give one output spec: source {sources[0].name!r} "
                             f"({sources[0].codec.name}) gives {_describe(sources[0])}, source {s.name!r} "
                             f"({s.codec.name}) gives {_describe(s)}")


def _describe(s: Opened) -> str:
    return "{" + ", ".join(f"{k}: {v.describe()}" for k, v in s.codec.output_spec().items()) + "}"


def tagged(stream: Iterator[RawSample], i: int, name: str | None, lut: np.ndarray | None) -> Iterator[RawSample]:
    """The samples of source ``i``, marked with it, keys prefixed ``name:`` (when given), labels mapped."""
    for s in stream:
        yield s._replace(key=f"{name}:{s.key}" if name is not None else s.key,
                         label=int(lut[s.label]) if lut is not None else s.label, source=i)


def interleave(streams: list[Iterator[RawSample]], ids: np.ndarray) -> Iterator[RawSample]:
    """One sample of source ``ids[j]`` after another (a source whose stream ended early is passed over: its
    lost samples were counted as skipped where they were read)."""
    try:
        for i in ids.tolist():
            s = next(streams[i], None)
            if s is not None:
                yield s
    finally:  # closed early (the worker's last batch is built): end every source's shard read now
        for stream in streams:
            stream.close()  # type: ignore[attr-defined]


@dataclass
class Decoder:
    """How a source's raw samples become batch rows: batch path when usable, per-sample otherwise."""

    codec: Codec
    transforms: list
    batched: bool  # on the batch path (batch.on_batch_path)

    def build(self, samples: list[RawSample], rng: np.random.Generator, policy: ErrorPolicy, one) -> Built | None:
        """Rows of the good ones of ``samples`` (bad payloads handled by ``policy``); ``one(s, rng, policy)``
        decodes a single sample as the per-sample path does."""
        if self.batched:
            parts, good = batch.decode_group(self.codec, samples, policy)
            if not parts:
                return None
            try:
                return batch.augment_finalize(self.codec, self.transforms, self.codec.join_batches(parts), good, rng)
            except (LossyloadError, ValueError):
                samples = good
        rows = [r for r in (one(s, rng, policy) for s in samples) if r is not None]
        if not rows:
            return None
        return Built({k: np.stack([r[0][k] for r in rows]) for k in rows[0][0]},
                     np.array([r[1] for r in rows], np.int64), [r[2] for r in rows])


def mixed_batch(decoders: list[Decoder], ones: list, names: list[str], stream: Iterator[RawSample], want: int,
                rng: np.random.Generator, policy: ErrorPolicy) -> tuple[Built | None, int]:
    """Up to ``want`` rows from ``stream``, each source's samples decoded by its own decoder (rows grouped by
    source, in source order); ``(batch or None, stream samples pulled)``."""
    parts: dict[int, list[Built]] = {}
    have = pulled = 0
    while have < want:
        chunk = list(islice(stream, want - have))
        if not chunk:
            break
        pulled += len(chunk)
        for i in sorted({s.source for s in chunk}):
            b = decoders[i].build([s for s in chunk if s.source == i], rng, policy, ones[i])
            if b is not None:
                parts.setdefault(i, []).append(b)
                have += len(b)
    if not parts:
        return None, pulled
    flat = [(i, b) for i in sorted(parts) for b in parts[i]]
    try:
        xs = {k: np.concatenate([b.xs[k] for _, b in flat]) for k in flat[0][1].xs}
    except (ValueError, KeyError) as exc:
        shapes = "; ".join(f"{names[i]}: " + ", ".join(f"{k} {v.dtype}{list(v.shape[1:])}" for k, v in b.xs.items())
                           for i, b in dict(flat).items())
        raise CodecError(f"a mixture's sources give outputs that cannot be batched together ({shapes}): give "
                         "them transforms with the same output size") from exc
    return Built(xs, np.concatenate([b.labels for _, b in flat]), [k for _, b in flat for k in b.keys]), pulled
