"""The batch path of a worker: decode a whole batch with a few array calls (``Codec.decode_many``), augment
it with the transforms' batch forms (each sample's random parameters drawn as arrays from the batch's
generator), finalize it once (``Codec.finalize_batch``). Used when the codec decodes to fixed-size arrays and
every transform has a batch form; otherwise the worker decodes sample by sample.

A payload the codec refuses inside a batch is found by decoding that batch's payloads one by one; only it is
skipped (and counted), and the batch is topped up from the stream. :func:`collate` stacks the samples of the
per-sample path into the same :class:`Built` form.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from ..augment import has_batch_form, transform_batch
from ..codecs import Codec
from ..errors import CodecError, LossyloadError
from .stream import ErrorPolicy, RawSample


@dataclass
class Built:
    """A finished batch before it becomes tensors: outputs ``{name: [B, ...]}``, labels and keys."""

    xs: dict[str, np.ndarray]
    labels: np.ndarray
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, index: np.ndarray) -> Built:
        return Built({k: v[index] for k, v in self.xs.items()}, self.labels[index], [self.keys[i] for i in index])


def collate(samples: list) -> Built:
    """Stack ``(x, label, key)`` samples into one batch."""
    keys = samples[0][0].keys()
    try:
        xs = {k: np.stack([s[0][k] for s in samples]) for k in keys}
    except ValueError as exc:
        shapes = sorted({str(tuple(s[0][k].shape)) for s in samples for k in keys})
        raise CodecError(f"samples of different shapes {shapes} cannot be batched: add a crop transform") from exc
    return Built(xs, np.array([s[1] for s in samples], np.int64), [s[2] for s in samples])


def on_batch_path(codec: Codec, transforms: list) -> bool:
    """Whether the batch path applies: a batch-decoding codec and transforms that all have a batch form."""
    return codec.batch_decoding() and all(has_batch_form(t) for t in transforms)


def decode_group(codec: Codec, samples: list[RawSample], policy: ErrorPolicy,
                 wire: bool = False) -> tuple[list[Any], list[RawSample]]:
    """``(decoded parts, the samples they hold)``: one part for the whole group, or, when a payload is refused,
    one part per good sample (the bad ones handled by ``policy``). ``wire``: the codec's stored form
    (``Codec.stored_many``)."""
    decode = codec.stored_many if wire else codec.decode_many
    try:
        return [decode([s.payload for s in samples])], samples
    except (LossyloadError, ValueError):
        pass
    parts, good = [], []
    for s in samples:
        try:
            parts.append(decode([s.payload]))
            good.append(s)
        except (LossyloadError, ValueError) as exc:
            policy.handle(s.url, [s.key], f"{type(exc).__name__}: {exc}", exc)
    return parts, good


def pull_decoded(codec: Codec, stream: Iterator[RawSample], want: int, policy: ErrorPolicy,
                 wire: bool = False) -> tuple[Any, list[RawSample], int]:
    """``(decoded batch or None, its samples, stream samples pulled)``: up to ``want`` good samples."""
    parts: list[Any] = []
    good: list[RawSample] = []
    pulled = 0
    while len(good) < want:
        chunk = list(islice(stream, want - len(good)))
        if not chunk:
            break
        pulled += len(chunk)
        more, ok = decode_group(codec, chunk, policy, wire)
        parts += more
        good += ok
    return (codec.join_batches(parts) if parts else None), good, pulled


def augment_finalize(codec: Codec, transforms: list, batch: Any, samples: list[RawSample],
                     rng: np.random.Generator, wire: bool = False) -> Built:
    """The batch's transforms (batch forms) and ``finalize_batch`` (``wire_batch`` with ``wire``)."""
    for t in transforms:
        batch = transform_batch(t, batch, rng)
    xs = codec.wire_batch(batch) if wire else codec.finalize_batch(batch)
    return Built(xs, np.array([s.label for s in samples], np.int64), [s.key for s in samples])


def pad(cur: Built | None, spare: Built | None, want: int) -> tuple[Built, int]:
    """``cur`` topped up to ``want`` rows with rows of ``cur`` then ``spare`` (the epoch's first batch), in
    the order the per-sample path repeats them; ``(batch, rows added)``."""
    have = len(cur) if cur is not None else 0
    if have >= want:
        return cur, 0  # type: ignore[return-value]
    pool = [b for b in (cur, spare) if b is not None and len(b)]
    size = sum(len(b) for b in pool)
    index = np.concatenate([np.arange(have), [(want - n) % size for n in range(have, want)]]).astype(np.int64)
    joined = pool[0] if len(pool) == 1 else Built(
        {k: np.concatenate([b.xs[k] for b in pool]) for k in pool[0].xs},
        np.concatenate([b.labels for b in pool]), [k for b in pool for k in b.keys])
    return joined.rows(index), want - have
