"""DCT-domain augmentations of :class:`~lossyload.media.dct.DctCoefficients`.

Each pure function stands for a pixel operation and returns a new object (fresh arrays, the input is
never mutated). Geometry works on whole 16x16 MCUs (2x2 luma blocks = 1 chroma block), so crops and
flips are exact; padding is zero coefficients (flat grey, level 128).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from lossyload.augment.dct_batch import DctBatch, Ragged, as_batch, crop_batch
from lossyload.augment.dct_batch import batch_new as _batch_new
from lossyload.augment.dct_batch import fixed as _fixed
from lossyload.augment.dct_batch import grid as _grid
from lossyload.augment.registry import register_augment
from lossyload.media.dct import ZIGZAG, DctCoefficients

log = logging.getLogger("lossyload")
_PADDED: set[int] = set()  # crop sizes already warned about in this process

__all__ = [
    "Brightness",
    "DctBatch",
    "as_batch",
    "crop_batch",
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


_NONE: dict[str, np.ndarray] = {}


@register_augment("dct_hflip")
@dataclass(frozen=True, kw_only=True)
class HFlip:
    """Horizontal flip with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_unit(self.p, "hflip probability p")

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        return self.apply(sample, {"flip": rng.random() < self.p})

    def apply(self, sample: DctCoefficients, p: dict) -> DctCoefficients:
        if p["flip"]:
            return hflip(sample)
        return _new(sample, np.array(sample.y, copy=True), np.array(sample.c, copy=True))

    def params(self, b: Ragged, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"flip": rng.random(len(b)) < self.p}

    def apply_batch(self, b: Ragged, p: dict) -> DctBatch:
        b = _fixed(b, "dct_hflip")
        (ky, kc), flip = b.keep, p["flip"]
        y, c = b.y.copy(), b.c.copy()
        y[flip] = b.y[flip][..., ::-1] * _HFLIP_SIGN[:ky, None, None]
        c[flip] = b.c[flip][..., ::-1] * _HFLIP_SIGN[None, :kc, None, None]
        return _batch_new(b, y, c)


def _note_padding(hm, wm, m: int, size: int) -> None:
    """Say (once per process and crop size) that a crop larger than an image is zero-padded, and how much of
    the crop is padding, instead of padding without a word."""
    hm, wm = np.ravel(hm), np.ravel(wm)
    small = (hm < m) | (wm < m)
    if size in _PADDED or not small.any():
        return
    _PADDED.add(size)
    i = int(np.argmax(small))
    zero = 1 - min(int(hm[i]), m) * min(int(wm[i]), m) / (m * m)
    log.warning("jpeg-dct crop %d px: an image of %dx%d px (width x height) is smaller and is zero-padded (%.0f%% "
                "of the crop's blocks zero). Pass a smaller crop (options={'crop': ...}), or "
                "RandomCrop(pad_if_needed=False) to skip such images (counted as skipped). Said once per process.",
                size, 16 * wm[i], 16 * hm[i], 100 * zero)


class _WindowCrop:
    """A crop defined by ``window(hm, wm, rng)``; the loader can fuse that window into decoding."""

    def window(self, hm: int, wm: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def windows(self, hm: np.ndarray, wm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The batch form of ``window``: ``(top [B], left [B])`` of each sample's ``size`` window."""
        raise NotImplementedError

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        top, left, _, _ = self.window(sample.y.shape[1] // 2, sample.y.shape[2] // 2, rng)
        return self.apply(sample, {"top": top, "left": left})

    def apply(self, sample: DctCoefficients, p: dict) -> DctCoefficients:
        m = _crop_mcus(self.size)  # type: ignore[attr-defined]
        return crop(sample, int(p["top"]), int(p["left"]), m, m)

    def params(self, b: Ragged, rng: np.random.Generator) -> dict[str, np.ndarray]:
        top, left = self.windows(*_grid(b), rng)
        return {"top": top, "left": left}

    def apply_batch(self, b: Ragged, p: dict) -> DctBatch:
        m = _crop_mcus(self.size)  # type: ignore[attr-defined]
        return crop_batch(b, p["top"], p["left"], m, m)


def _origins(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`_crop_origin` of each sample, one draw each."""
    r = rng.integers(0, np.abs(image - size) + 1)
    return np.where(image >= size, r, -r)


@register_augment("dct_random_crop")
@dataclass(frozen=True, kw_only=True)
class RandomCrop(_WindowCrop):
    """Random MCU-aligned ``size`` x ``size`` px crop; smaller images are padded at a random offset."""

    size: int = 224
    pad_if_needed: bool = True

    def __post_init__(self) -> None:
        _crop_mcus(self.size)

    def _fits(self, hm, wm) -> None:
        m = _crop_mcus(self.size)
        if not self.pad_if_needed and (np.min(hm) < m or np.min(wm) < m):
            i = int(np.argmin(np.minimum(hm, wm)))
            raise ValueError(f"image of {16 * np.ravel(hm)[i]}x{16 * np.ravel(wm)[i]} px is smaller than crop {self.size}")
        _note_padding(hm, wm, m, self.size)

    def window(self, hm: int, wm: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """The MCU window ``(top, left, height, width)`` this crop takes from an ``hm`` x ``wm`` MCU image."""
        m = _crop_mcus(self.size)
        self._fits(hm, wm)
        top = _crop_origin(hm, m, rng)
        left = _crop_origin(wm, m, rng)
        return top, left, m, m

    def windows(self, hm: np.ndarray, wm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = _crop_mcus(self.size)
        self._fits(hm, wm)
        return _origins(hm, m, rng), _origins(wm, m, rng)


@register_augment("dct_center_crop")
@dataclass(frozen=True, kw_only=True)
class CenterCrop(_WindowCrop):
    """Centred MCU-aligned ``size`` x ``size`` px crop (zero-padded if the image is smaller)."""

    size: int = 224

    def __post_init__(self) -> None:
        _crop_mcus(self.size)

    def window(self, hm: int, wm: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        m = _crop_mcus(self.size)
        _note_padding(hm, wm, m, self.size)
        return (hm - m) // 2, (wm - m) // 2, m, m

    def windows(self, hm: np.ndarray, wm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = _crop_mcus(self.size)
        _note_padding(hm, wm, m, self.size)
        return (hm - m) // 2, (wm - m) // 2


@register_augment("dct_brightness")
@dataclass(frozen=True, kw_only=True)
class Brightness:
    """Add a uniform random ``delta`` in ``[-max_delta, max_delta]`` grey levels to luma."""

    max_delta: float = 16.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_delta) and self.max_delta >= 0):
            raise ValueError(f"max_delta must be finite and >= 0, got {self.max_delta}")

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        return self.apply(sample, {"delta": float(rng.uniform(-self.max_delta, self.max_delta))})

    def apply(self, sample: DctCoefficients, p: dict) -> DctCoefficients:
        return brightness(sample, float(p["delta"]))

    def params(self, b: Ragged, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"delta": rng.uniform(-self.max_delta, self.max_delta, size=len(b))}

    def apply_batch(self, b: Ragged, p: dict) -> DctBatch:
        b = _fixed(b, "dct_brightness")
        step = np.rint(8.0 * np.asarray(p["delta"], np.float64) / b.qt[:, 0, 0].astype(np.float64)).astype(np.int64)
        y = b.y.copy()
        y[:, 0] = np.clip(b.y[:, 0].astype(np.int32) + step[:, None, None], _INT16_MIN, _INT16_MAX)
        return _batch_new(b, y, b.c.copy())


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
        return self.apply(sample, {"start": start, "width": width})

    def apply(self, sample: DctCoefficients, p: dict) -> DctCoefficients:
        return mask_frequencies(sample, int(p["start"]), int(p["start"] + p["width"]))

    def params(self, b: Ragged, rng: np.random.Generator) -> dict[str, np.ndarray]:
        k = max(_fixed(b, "dct_frequency_mask").keep)
        width = np.minimum(rng.integers(0, self.max_width + 1, size=len(b)), k - 1)
        return {"start": rng.integers(1, k - width + 1), "width": width}

    def apply_batch(self, b: Ragged, p: dict) -> DctBatch:
        b = _fixed(b, "dct_frequency_mask")
        ch = np.arange(64)[None, :]
        start, stop = np.asarray(p["start"])[:, None], np.asarray(p["start"] + p["width"])[:, None]
        zero = (ch >= start) & (ch < stop)  # [B, 64]
        (ky, kc) = b.keep
        y = np.where(zero[:, :ky, None, None], np.int16(0), b.y)
        c = np.where(zero[:, None, :kc, None, None], np.int16(0), b.c)
        return _batch_new(b, y, c)


@register_augment("dct_coefficient_dropout")
@dataclass(frozen=True, kw_only=True)
class CoefficientDropout:
    """Zero each AC coefficient independently with probability ``p``; DC is never dropped."""

    p: float = 0.1

    def __post_init__(self) -> None:
        _check_unit(self.p, "dropout probability p")

    def _threshold(self) -> int:
        return round(self.p * 65536)  # p is realised in steps of 2**-16: uint16 draws are much cheaper than floats

    def __call__(self, sample: DctCoefficients, rng: np.random.Generator) -> DctCoefficients:
        ykeep = rng.integers(0, 65536, sample.y[1:].shape, dtype=np.uint16) >= self._threshold()
        ckeep = rng.integers(0, 65536, sample.c[:, 1:].shape, dtype=np.uint16) >= self._threshold()
        return self.apply(sample, {"ykeep": ykeep, "ckeep": ckeep})

    def apply(self, sample: DctCoefficients, p: dict) -> DctCoefficients:
        y = np.array(sample.y, copy=True)
        c = np.array(sample.c, copy=True)
        y[1:] *= p["ykeep"]
        c[:, 1:] *= p["ckeep"]
        return _new(sample, y, c)

    def params(self, b: Ragged, rng: np.random.Generator) -> dict[str, np.ndarray]:
        b = _fixed(b, "dct_coefficient_dropout")
        return {"ykeep": rng.integers(0, 65536, b.y[:, 1:].shape, dtype=np.uint16) >= self._threshold(),
                "ckeep": rng.integers(0, 65536, b.c[:, :, 1:].shape, dtype=np.uint16) >= self._threshold()}

    def apply_batch(self, b: Ragged, p: dict) -> DctBatch:
        b = _fixed(b, "dct_coefficient_dropout")
        y, c = b.y.copy(), b.c.copy()
        y[:, 1:] *= p["ykeep"]
        c[:, :, 1:] *= p["ckeep"]
        return _batch_new(b, y, c)
