"""Code-domain augmentations of audio code grids (``vq`` and ``encodec`` canonical samples).

A sample is an int16 array ``[rows, frames]``: rows are mel bands of codes (``vq``) or RVQ levels
(``encodec``), columns are code frames in time. ``MASK`` (-1) is the dedicated value of a masked entry; each
codec's ``finalize`` turns it into its own output convention (``codebook_size``, a zero bit-plane, a zero
vector). Pure functions return fresh arrays; the dataclasses are the serialisable, seeded transforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lossyload.augment import bands
from lossyload.augment.registry import register_augment

__all__ = [
    "MASK", "CenterTimeCrop", "FreqMask", "LevelDropout", "RandomTimeCrop", "TimeMask", "TimeShift", "default_time_crop",
    "drop_levels", "mask_rows", "mask_time", "shift_time", "time_crop", "time_crop_batch",
]

MASK = -1


def time_crop(codes: np.ndarray, start: int, frames: int) -> np.ndarray:
    """Frames ``[start, start + frames)``; frames past either end are ``MASK``."""
    if frames < 1:
        raise ValueError(f"frames must be positive, got {frames}")
    out = np.full((codes.shape[0], frames), MASK, np.int16)
    lo, hi = max(start, 0), min(start + frames, codes.shape[1])
    if hi > lo:
        out[:, lo - start : hi - start] = codes[:, lo:hi]
    return out


def shift_time(codes: np.ndarray, shift: int) -> np.ndarray:
    """Move the content ``shift`` frames later (earlier when negative); vacated frames are ``MASK``."""
    return time_crop(codes, -shift, codes.shape[1])


def mask_time(codes: np.ndarray, start: int, width: int) -> np.ndarray:
    out = codes.copy()
    out[:, max(start, 0) : max(start + width, 0)] = MASK
    return out


def mask_rows(codes: np.ndarray, start: int, height: int) -> np.ndarray:
    out = codes.copy()
    out[max(start, 0) : max(start + height, 0)] = MASK
    return out


def drop_levels(codes: np.ndarray, keep: int) -> np.ndarray:
    """Keep the first ``keep`` RVQ levels (the coarse ones); the finer levels become ``MASK``."""
    return mask_rows(codes, keep, codes.shape[0])


def time_crop_batch(codes: np.ndarray, start: np.ndarray, frames: int) -> np.ndarray:
    """:func:`time_crop` of each ``codes [B, rows, T]`` at its own ``start [B]``, by index arithmetic."""
    if frames < 1:
        raise ValueError(f"frames must be positive, got {frames}")
    idx = np.asarray(start)[:, None] + np.arange(frames)  # [B, frames]
    inside = (idx >= 0) & (idx < codes.shape[2])
    picked = np.take_along_axis(codes, np.clip(idx, 0, codes.shape[2] - 1)[:, None, :], axis=2)
    return np.where(inside[:, None, :], picked, np.int16(MASK)).astype(np.int16, copy=False)


def _rows_from(codes: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``[B, rows]``: True for the rows at or past each sample's ``keep``."""
    return np.arange(codes.shape[1])[None, :] >= np.asarray(keep)[:, None]


_NONE: dict[str, np.ndarray] = {}


@register_augment("codes_random_time_crop")
@dataclass(frozen=True, kw_only=True)
class RandomTimeCrop:
    """A random window of ``frames`` code frames (masked padding when the clip is shorter)."""

    frames: int

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("frames must be positive")

    def __call__(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        slack = codes.shape[1] - self.frames
        return self.apply(codes, {"start": int(rng.integers(0, slack + 1)) if slack > 0 else slack // 2})

    def apply(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return time_crop(codes, int(p["start"]), self.frames)

    def params(self, codes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        slack = codes.shape[2] - self.frames
        n = len(codes)
        return {"start": rng.integers(0, slack + 1, size=n) if slack > 0 else np.full(n, slack // 2)}

    def apply_batch(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return time_crop_batch(codes, p["start"], self.frames)


@register_augment("codes_center_time_crop")
@dataclass(frozen=True, kw_only=True)
class CenterTimeCrop:
    frames: int

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("frames must be positive")

    def __call__(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(codes, _NONE)

    def apply(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return time_crop(codes, (codes.shape[1] - self.frames) // 2, self.frames)

    def params(self, codes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return _NONE

    def apply_batch(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return time_crop_batch(codes, np.full(len(codes), (codes.shape[2] - self.frames) // 2), self.frames)


def default_time_crop(frames: int | None, train: bool) -> list:
    """The audio codecs' default transforms: none, or a random (train) / centred (eval) window of ``frames``."""
    if frames is None:
        return []
    return [RandomTimeCrop(frames=frames)] if train else [CenterTimeCrop(frames=frames)]


@register_augment("codes_time_shift")
@dataclass(frozen=True, kw_only=True)
class TimeShift:
    """Shift in time by a uniform integer in ``[-max_shift, max_shift]`` frames (the clip keeps its length)."""

    max_shift: int

    def __post_init__(self) -> None:
        if self.max_shift < 0:
            raise ValueError("max_shift must be >= 0")

    def __call__(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(codes, {"shift": int(rng.integers(-self.max_shift, self.max_shift + 1))})

    def apply(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return shift_time(codes, int(p["shift"]))

    def params(self, codes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"shift": rng.integers(-self.max_shift, self.max_shift + 1, size=len(codes))}

    def apply_batch(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return time_crop_batch(codes, -np.asarray(p["shift"]), codes.shape[2])


@dataclass(frozen=True, kw_only=True)
class _BandMask:
    """``count`` bands of 0..``max_width`` entries along ``axis`` set to ``MASK`` (SpecAugment)."""

    max_width: int
    count: int = 1
    axis: ClassVar[int]

    def __post_init__(self) -> None:
        if self.max_width < 0 or self.count < 0:
            raise ValueError("max_width and count must be >= 0")

    def __call__(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(codes, bands.draw(rng, self.count, self.max_width, codes.shape[self.axis]))

    def apply(self, codes: np.ndarray, p: dict) -> np.ndarray:
        mask = mask_time if self.axis == 1 else mask_rows
        codes = codes.copy()
        for start, width in zip(p["start"], p["width"]):
            codes = mask(codes, int(start), int(width))
        return codes

    def params(self, codes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return bands.draw_batch(rng, len(codes), self.count, self.max_width, codes.shape[self.axis + 1])

    def apply_batch(self, codes: np.ndarray, p: dict) -> np.ndarray:
        masked = bands.batch_mask(codes.shape[self.axis + 1], p, self.axis)
        return np.where(masked, np.int16(MASK), codes).astype(np.int16, copy=False)


@register_augment("codes_time_mask")
@dataclass(frozen=True, kw_only=True)
class TimeMask(_BandMask):
    """SpecAugment time masking on code frames: ``count`` bands of 0..``max_width`` frames set to ``MASK``."""

    axis: ClassVar[int] = 1


@register_augment("codes_freq_mask")
@dataclass(frozen=True, kw_only=True)
class FreqMask(_BandMask):
    """SpecAugment frequency masking for ``vq`` code grids: ``count`` bands of 0..``max_width`` code rows
    (each row covers ``block[0]`` mel bins) set to ``MASK``."""

    axis: ClassVar[int] = 0


@register_augment("codes_level_dropout")
@dataclass(frozen=True, kw_only=True)
class LevelDropout:
    """RVQ level dropout for ``encodec``: with probability ``p`` keep only the first ``k`` levels, ``k``
    uniform in ``[min_levels, levels - 1]`` (a random lower bandwidth)."""

    p: float = 0.5
    min_levels: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or self.min_levels < 1:
            raise ValueError("need 0 <= p <= 1 and min_levels >= 1")

    def __call__(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        levels = codes.shape[0]
        if levels <= self.min_levels or rng.random() >= self.p:
            return self.apply(codes, {"keep": levels})
        return self.apply(codes, {"keep": int(rng.integers(self.min_levels, levels))})

    def apply(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return drop_levels(codes, int(p["keep"]))

    def params(self, codes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n, levels = len(codes), codes.shape[1]
        if levels <= self.min_levels:
            return {"keep": np.full(n, levels)}
        drop = rng.random(n) < self.p
        return {"keep": np.where(drop, rng.integers(self.min_levels, levels, size=n), levels)}

    def apply_batch(self, codes: np.ndarray, p: dict) -> np.ndarray:
        return np.where(_rows_from(codes, p["keep"])[:, :, None], np.int16(MASK), codes).astype(np.int16, copy=False)
