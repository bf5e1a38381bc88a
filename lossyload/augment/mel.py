"""SpecAugment for the ``mel`` codec: time and frequency masks on a log-mel spectrogram.

A sample is a float log-mel array ``[n_mels, frames]`` (a batch: ``[B, n_mels, frames]``): rows are mel bins,
columns are frames in time. A mask sets a band of whole columns (:class:`TimeMask`) or rows (:class:`FreqMask`)
to ``value``; ``None`` is the sample's mean, as SpecAugment does on a log-mel (zero there would be loud). With
``count`` bands every band takes the mean of the sample as it came in. Pure functions return fresh arrays;
the dataclasses are the serialisable, seeded transforms.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lossyload.augment import bands
from lossyload.augment.registry import register_augment

__all__ = ["FreqMask", "TimeMask", "mel_freq_mask", "mel_time_mask"]


def _check(mel: np.ndarray, ndim: int, what: str) -> None:
    if not isinstance(mel, np.ndarray) or mel.ndim != ndim or not np.issubdtype(mel.dtype, np.floating):
        want = "a log-mel [n_mels, frames]" if ndim == 2 else "a batch of log-mels [B, n_mels, frames]"
        got = f"{mel.dtype} array of shape {mel.shape}" if isinstance(mel, np.ndarray) else type(mel).__name__
        clip = "; a 1-D array is an audio clip, not its log-mel" if getattr(mel, "ndim", 0) == ndim - 1 else ""
        raise ValueError(f"{what} needs {want} of floats, got a {got}{clip}")


def _fill(mel: np.ndarray, value: float | None) -> np.ndarray:
    """``value`` (``None``: the mean of ``mel``) in ``mel``'s dtype."""
    return np.asarray(mel.mean(dtype=np.float64) if value is None else value, dtype=mel.dtype)


def _masked(mel: np.ndarray, axis: int, bands, value: float | None) -> np.ndarray:
    """A copy of ``mel`` with the ``(start, width)`` bands along ``axis`` (clipped to it) set to ``value``
    (``None``: the mean of ``mel`` as it is given)."""
    fill, out = _fill(mel, value), mel.copy()
    for start, width in bands:
        index = [slice(None), slice(None)]
        index[axis] = slice(max(int(start), 0), max(int(start) + int(width), 0))
        out[tuple(index)] = fill
    return out


def mel_time_mask(mel: np.ndarray, start: int, width: int, value: float | None = None) -> np.ndarray:
    """Frames ``[start, start + width)`` (clipped to the spectrogram) set to ``value`` (``None``: the mean)."""
    _check(mel, 2, "mel_time_mask")
    return _masked(mel, 1, [(start, width)], value)


def mel_freq_mask(mel: np.ndarray, start: int, width: int, value: float | None = None) -> np.ndarray:
    """Mel bins ``[start, start + width)`` (clipped to the spectrogram) set to ``value`` (``None``: the mean)."""
    _check(mel, 2, "mel_freq_mask")
    return _masked(mel, 0, [(start, width)], value)


@dataclass(frozen=True, kw_only=True)
class _BandMask:
    """``count`` bands of 0..``max_width`` entries along ``axis`` (0: mel bins, 1: frames) set to ``value``."""

    max_width: int
    count: int = 1
    value: float | None = None
    axis: ClassVar[int]

    def __post_init__(self) -> None:
        if not all(isinstance(n, numbers.Integral) and n >= 0 for n in (self.max_width, self.count)):
            raise ValueError(f"max_width and count must be integers >= 0, got {self.max_width!r} and {self.count!r}")
        if self.value is not None and not (isinstance(self.value, numbers.Real) and math.isfinite(self.value)):
            raise ValueError(f"value must be a finite number or None (the sample's mean), got {self.value!r}")

    def __call__(self, mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(mel, 2, type(self).__name__)
        return self.apply(mel, bands.draw(rng, self.count, self.max_width, mel.shape[self.axis]))

    def apply(self, mel: np.ndarray, p: dict) -> np.ndarray:
        _check(mel, 2, type(self).__name__)
        return _masked(mel, self.axis, zip(p["start"], p["width"]), self.value)

    def params(self, mels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check(mels, 3, type(self).__name__)
        return bands.draw_batch(rng, len(mels), self.count, self.max_width, mels.shape[self.axis + 1])

    def apply_batch(self, mels: np.ndarray, p: dict) -> np.ndarray:
        _check(mels, 3, type(self).__name__)
        masked = bands.batch_mask(mels.shape[self.axis + 1], p, self.axis)
        if self.value is None:  # each sample's own mean, computed as the per-sample path does
            value = np.array([_fill(m, None) for m in mels], mels.dtype)[:, None, None]
        else:
            value = _fill(mels, self.value)
        return np.where(masked, value, mels).astype(mels.dtype, copy=False)


@register_augment("mel_time_mask")
@dataclass(frozen=True, kw_only=True)
class TimeMask(_BandMask):
    """SpecAugment time masking: ``count`` bands of 0..``max_width`` frames set to ``value`` (``None``: the
    sample's mean)."""

    axis: ClassVar[int] = 1


@register_augment("mel_freq_mask")
@dataclass(frozen=True, kw_only=True)
class FreqMask(_BandMask):
    """SpecAugment frequency masking: ``count`` bands of 0..``max_width`` mel bins set to ``value`` (``None``:
    the sample's mean)."""

    axis: ClassVar[int] = 0
