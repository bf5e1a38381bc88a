"""DCT-domain augmentations of :class:`~lossyload.media.dct.DctCoefficients`.

Each pure function stands for a pixel operation and returns a new object (fresh arrays, the input is
never mutated). Geometry works on whole 16x16 MCUs (2x2 luma blocks = 1 chroma block), so crops and
flips are exact; padding is zero coefficients (flat grey, level 128).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lossyload.augment.registry import register_augment
from lossyload.media.dct import ZIGZAG, DctCoefficients

__all__ = [
    "Brightness",
    "CenterCrop",
    "CoefficientDropout",
    "FrequencyMask",
    "HFlip",
    "RandomCrop",
    "brightness",
    "crop",
    "hflip",
    "mask_frequencies",
]

_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max
# -1 for zigzag channels whose horizontal frequency v = n % 8 is odd, else +1.
_HFLIP_SIGN = np.where(ZIGZAG % 8 % 2 == 1, -1, 1).astype(np.int16)


def _new(d: DctCoefficients, y: np.ndarray, c: np.ndarray) -> DctCoefficients:
    return DctCoefficients(y=y, c=c, qt=np.array(d.qt, copy=True))


def _check_unit(value: float, what: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")


# ---------------------------------------------------------------------------------------------- pure ops


def hflip(d: DctCoefficients) -> DctCoefficients:
    """Horizontal flip: reverse block columns, negate coefficients of odd horizontal frequency."""
    ky, kc = d.keep
    y = d.y[:, :, ::-1] * _HFLIP_SIGN[:ky, None, None]
    c = d.c[:, :, :, ::-1] * _HFLIP_SIGN[None, :kc, None, None]
    return _new(d, y, c)


def crop(d: DctCoefficients, top: int, left: int, height: int, width: int) -> DctCoefficients:
    """Window ``[top, top + height) x [left, left + width)`` in MCUs; zero coefficients outside the image."""
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got {height}x{width} MCUs")
    hm, wm = d.y.shape[1] // 2, d.y.shape[2] // 2
    # Overlap of the window with the image, in MCUs, in image and in output coordinates.
    t0, t1 = max(top, 0), min(top + height, hm)
    l0, l1 = max(left, 0), min(left + width, wm)
    y = np.zeros((d.y.shape[0], 2 * height, 2 * width), dtype=np.int16)
    c = np.zeros((2, d.c.shape[1], height, width), dtype=np.int16)
    if t1 > t0 and l1 > l0:
        ot, ol = t0 - top, l0 - left
        y[:, 2 * ot : 2 * (ot + t1 - t0), 2 * ol : 2 * (ol + l1 - l0)] = d.y[
            :, 2 * t0 : 2 * t1, 2 * l0 : 2 * l1
        ]
        c[:, :, ot : ot + t1 - t0, ol : ol + l1 - l0] = d.c[:, :, t0:t1, l0:l1]
    return _new(d, y, c)


def brightness(d: DctCoefficients, delta: float) -> DctCoefficients:
    """Add ``delta`` grey levels to every luma pixel (DC += rint(8 delta / qt[0, 0]))."""
    step = int(np.rint(8.0 * delta / float(d.qt[0, 0])))
    y = np.array(d.y, dtype=np.int16, copy=True)
    y[0] = np.clip(y[0].astype(np.int32) + step, _INT16_MIN, _INT16_MAX)
    return _new(d, y, np.array(d.c, copy=True))


def mask_frequencies(d: DctCoefficients, start: int, stop: int) -> DctCoefficients:
    """Zero zigzag channels ``start .. stop - 1`` of luma and chroma (those that are kept)."""
    if not 0 <= start <= stop <= 64:
        raise ValueError(f"frequency band must satisfy 0 <= start <= stop <= 64, got {start}..{stop}")
    y = np.array(d.y, copy=True)
    c = np.array(d.c, copy=True)
    y[start:stop] = 0
    c[:, start:stop] = 0
    return _new(d, y, c)


# ---------------------------------------------------------------------------------------------- transforms


def _crop_origin(image: int, size: int, rng: np.random.Generator) -> int:
    """Random window origin along one axis (negative when the image is placed inside padding)."""
    if image >= size:
        return int(rng.integers(0, image - size + 1))
    return -int(rng.integers(0, size - image + 1))


def _crop_mcus(size: int) -> int:
    if size <= 0 or size % 16:
        raise ValueError(f"crop size must be a positive multiple of 16 px, got {size}")
    return size // 16


@register_augment("dct_hflip")
@dataclass(frozen=True, kw_only=True)
class HFlip:
    """Horizontal flip with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_unit(self.p, "hflip probability p")

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        if rng.random() < self.p:
            return hflip(sample)
        return _new(sample, np.array(sample.y, copy=True), np.array(sample.c, copy=True))


class _WindowCrop:
    """A crop defined by ``window(hm, wm, rng)``; the loader can fuse that window into decoding."""

    def window(self, hm: int, wm: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        return crop(sample, *self.window(sample.y.shape[1] // 2, sample.y.shape[2] // 2, rng))


@register_augment("dct_random_crop")
@dataclass(frozen=True, kw_only=True)
class RandomCrop(_WindowCrop):
    """Random MCU-aligned ``size`` x ``size`` px crop; smaller images are padded at a random offset."""

    size: int = 224
    pad_if_needed: bool = True

    def __post_init__(self) -> None:
        _crop_mcus(self.size)

    def window(self, hm: int, wm: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """The MCU window ``(top, left, height, width)`` this crop takes from an ``hm`` x ``wm`` MCU image."""
        m = _crop_mcus(self.size)
        if not self.pad_if_needed and (hm < m or wm < m):
            raise ValueError(f"image of {16 * hm}x{16 * wm} px is smaller than crop {self.size}")
        top = _crop_origin(hm, m, rng)
        left = _crop_origin(wm, m, rng)
        return top, left, m, m


@register_augment("dct_center_crop")
@dataclass(frozen=True, kw_only=True)
class CenterCrop(_WindowCrop):
    """Centred MCU-aligned ``size`` x ``size`` px crop (zero-padded if the image is smaller)."""

    size: int = 224

    def __post_init__(self) -> None:
        _crop_mcus(self.size)

    def window(self, hm: int, wm: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        m = _crop_mcus(self.size)
        return (hm - m) // 2, (wm - m) // 2, m, m


@register_augment("dct_brightness")
@dataclass(frozen=True, kw_only=True)
class Brightness:
    """Add a uniform random ``delta`` in ``[-max_delta, max_delta]`` grey levels to luma."""

    max_delta: float = 16.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_delta) and self.max_delta >= 0):
            raise ValueError(f"max_delta must be finite and >= 0, got {self.max_delta}")

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        return brightness(sample, float(rng.uniform(-self.max_delta, self.max_delta)))


@register_augment("dct_frequency_mask")
@dataclass(frozen=True, kw_only=True)
class FrequencyMask:
    """SpecAugment-style: zero a random band of up to ``max_width`` AC zigzag channels (DC is kept)."""

    max_width: int = 16

    def __post_init__(self) -> None:
        if not 0 <= self.max_width <= 63:
            raise ValueError(f"max_width must be in 0..63, got {self.max_width}")

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        k = max(sample.keep)  # the band is drawn among the channels that exist
        width = min(int(rng.integers(0, self.max_width + 1)), k - 1)
        start = int(rng.integers(1, k - width + 1))
        return mask_frequencies(sample, start, start + width)


@register_augment("dct_coefficient_dropout")
@dataclass(frozen=True, kw_only=True)
class CoefficientDropout:
    """Zero each AC coefficient independently with probability ``p``; DC is never dropped."""

    p: float = 0.1

    def __post_init__(self) -> None:
        _check_unit(self.p, "dropout probability p")

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        y = np.array(sample.y, copy=True)
        c = np.array(sample.c, copy=True)
        # p is realised in steps of 2**-16: uint16 draws are much cheaper than floats.
        threshold = round(self.p * 65536)
        y[1:] *= rng.integers(0, 65536, y[1:].shape, dtype=np.uint16) >= threshold
        c[:, 1:] *= rng.integers(0, 65536, c[:, 1:].shape, dtype=np.uint16) >= threshold
        return _new(sample, y, c)
