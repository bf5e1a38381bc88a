"""``jpeg-dct``: JPEG images as quantized DCT coefficients, never inverse-transformed.

Two storage variants, recorded in the index:

* ``storage="jpeg"``: the shard keeps JPEG bytes (source JPEGs copied byte for byte); the loader entropy-decodes
  them to coefficients. The same shards feed the ``rgb`` baseline.
* ``storage="coefficients"``: coefficients (optionally only the ``keep`` lowest) extracted at shard time and
  stored zstd-compressed; the loader does no Huffman work at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..augment.dct_batch import DctBatch, as_batch, samples
from ..media import jpeg
from ..media.dct import ZIGZAG, DctCoefficients
from ..errors import CodecError, DecodeError
from .registry import register_codec
from .base import Codec, Encoded, TensorSpec


@dataclass(frozen=True, kw_only=True)
class JpegDctConfig:
    storage: str = "jpeg"  # "jpeg" | "coefficients"
    quality: int = 90  # transcode quality for non-JPEG or unreadable sources
    subsampling: str = "4:2:0"  # transcode chroma subsampling
    resize: int | None = None  # shard-time resize of the short side (downscale only)
    max_pixels: int = 64_000_000  # larger sources are skipped
    keep: tuple[int, int] = (64, 64)  # coefficients stored per component (storage="coefficients")
    compression: str = "zstd"  # storage="coefficients": "zstd" (smaller) or "lz4" (faster to decode)
    zstd_level: int = 3

    def __post_init__(self) -> None:
        if self.storage not in ("jpeg", "coefficients"):
            raise ValueError(f"storage must be 'jpeg' or 'coefficients', not {self.storage!r}")
        jpeg.check_source_options(quality=self.quality, subsampling=self.subsampling, resize=self.resize)
        if self.compression not in jpeg.COMPRESSIONS:
            raise ValueError(f"compression must be one of {list(jpeg.COMPRESSIONS)}")
        _check_keep(self.keep)


@dataclass(frozen=True, kw_only=True)
class JpegDctOptions:
    keep: tuple[int, int] | None = None  # output the K lowest-frequency coefficients of luma / chroma
    order: str = "zigzag"  # channel order of the kept coefficients: "zigzag" | "natural"
    dequantize: bool = False  # multiply by the quantization tables (still int16)
    chroma: str = "separate"  # "separate": y + cbcr tensors; "concat": chroma upsampled 2x and concatenated
    crop: int = 224  # output size in pixels of the default crops (multiple of 16)

    def __post_init__(self) -> None:
        if self.order not in ("zigzag", "natural"):
            raise ValueError("order must be 'zigzag' or 'natural'")
        if self.chroma not in ("separate", "concat"):
            raise ValueError("chroma must be 'separate' or 'concat'")
        if self.crop <= 0 or self.crop % 16:
            raise ValueError(f"crop {self.crop} must be a positive multiple of 16 (one 4:2:0 MCU)")
        if self.keep is not None:
            _check_keep(self.keep)


def _check_keep(keep: tuple[int, int]) -> None:
    if not isinstance(keep, (tuple, list)) or len(keep) != 2 or not all(
        isinstance(k, int) and 1 <= k <= 64 for k in keep
    ):
        raise ValueError(f"keep must be two integer counts in 1..64 (luma, chroma), got {keep!r}")


@register_codec
class JpegDct(Codec):
    name = "jpeg-dct"
    no_dali_form = ("DALI's JPEG decoders output pixels, not quantized DCT coefficients (and coefficient shards are "
                    "zstd-compressed arrays); use backend='torch', or codec='rgb' over the same JPEG shards")
    Config = JpegDctConfig
    Options = JpegDctOptions

    def __init__(self, config: JpegDctConfig | None = None, options: JpegDctOptions | None = None) -> None:
        super().__init__(config, options)
        stored = self.config.keep if self.config.storage == "coefficients" else (64, 64)
        self.keep = tuple(self.options.keep or stored)
        if self.keep[0] > stored[0] or self.keep[1] > stored[1]:
            raise CodecError(f"jpeg-dct: keep={self.keep} asks for more coefficients than stored ({stored})")
        self._perm = [_order(k, self.options.order) for k in self.keep]

    @property
    def member(self) -> str:  # type: ignore[override]
        if self.config.storage == "jpeg":
            return "jpg"
        return "dct.zst" if self.config.compression == "zstd" else "dct.lz4"

    def encode(self, data: bytes, *, source: str) -> Encoded:
        c = self.config
        payload, why = jpeg.prepare_jpeg(
            data, source=source, quality=c.quality, subsampling=c.subsampling, resize=c.resize, max_pixels=c.max_pixels
        )
        if c.storage == "coefficients":
            payload = jpeg.pack_coefficients(jpeg.read_coefficients(payload, c.keep), c.zstd_level, c.compression)
        return Encoded(payload, why)

    def decode(self, payload: bytes) -> DctCoefficients:
        if self.config.storage == "jpeg":
            return jpeg.read_coefficients(payload, self.keep, max_pixels=self.config.max_pixels)
        d = jpeg.unpack_coefficients(payload)
        if d.keep[0] < self.keep[0] or d.keep[1] < self.keep[1]:
            raise DecodeError(f"coefficient member holds keep={d.keep}, fewer than the {self.keep} asked for")
        if d.keep != self.keep:
            d = DctCoefficients(y=d.y[: self.keep[0]], c=d.c[:, : self.keep[1]], qt=d.qt)
        return d

    def decode_window(self, payload: bytes, window: jpeg.Window) -> DctCoefficients:
        """``decode`` then crop to ``window(hm, wm)`` (MCUs), in one step: from JPEG bytes only the window's
        coefficients are extracted. The loader uses it when the first transform is a crop."""
        if self.config.storage == "jpeg":
            return jpeg.read_coefficients(payload, self.keep, window, self.config.max_pixels)
        from ..augment.dct import crop

        d = self.decode(payload)
        return crop(d, *window(d.y.shape[1] // 2, d.y.shape[2] // 2))

    def finalize(self, d: DctCoefficients) -> dict[str, np.ndarray]:
        ky, kc = d.keep
        y, c = d.y[self._perm[0]] if self._perm[0] is not None else d.y, d.c
        if self._perm[1] is not None:
            c = c[:, self._perm[1]]
        if self.options.dequantize:
            y = y * _table(d.qt[0], ky, self.options.order)[:, None, None]
            c = c * np.stack([_table(d.qt[i], kc, self.options.order) for i in (1, 2)])[:, :, None, None]
        c = c.reshape(2 * kc, *c.shape[2:])
        if self.options.chroma == "concat":
            up = c.repeat(2, axis=1).repeat(2, axis=2)
            return {"dct": np.concatenate([y, up]).astype(np.int16, copy=False)}
        return {
            "y": np.ascontiguousarray(y, np.int16),
            "cbcr": np.ascontiguousarray(c, np.int16),
            "qt": np.minimum(d.qt, 32767).astype(np.int16),  # int16: torch has few uint16 kernels
        }

    # -- batch path (pre-extracted coefficients): a leading crop copies each window into one batch array ----
    def batch_decoding(self) -> bool:
        return self.config.storage == "coefficients"

    def decode_many(self, payloads: list[bytes]) -> DctBatch | list[DctCoefficients]:
        """``decode`` of each payload: one :class:`DctBatch` when all have one grid size, else the list (a crop
        transform makes it a batch)."""
        return as_batch([self.decode(p) for p in payloads])

    def join_batches(self, parts: list[DctBatch | list[DctCoefficients]]) -> DctBatch | list[DctCoefficients]:
        return parts[0] if len(parts) == 1 else as_batch([d for p in parts for d in samples(p)])

    def finalize_batch(self, b: DctBatch | list[DctCoefficients]) -> dict[str, np.ndarray]:
        if isinstance(b, list):
            shapes = sorted({str(d.y.shape) for d in b})
            raise CodecError(f"samples of different shapes {shapes} cannot be batched: add a crop transform")
        (ky, kc), n = b.keep, len(b)
        y, c = b.y if self._perm[0] is None else b.y[:, self._perm[0]], b.c
        if self._perm[1] is not None:
            c = c[:, :, self._perm[1]]
        if self.options.dequantize:
            zy = ZIGZAG[:ky] if self.options.order == "zigzag" else np.sort(ZIGZAG[:ky])
            zc = ZIGZAG[:kc] if self.options.order == "zigzag" else np.sort(ZIGZAG[:kc])
            y = y * b.qt[:, 0][:, zy].astype(np.int16)[:, :, None, None]
            c = c * b.qt[:, 1:3][:, :, zc].astype(np.int16)[..., None, None]
        c = c.reshape(n, 2 * kc, *c.shape[3:])
        if self.options.chroma == "concat":
            up = c.repeat(2, axis=2).repeat(2, axis=3)
            return {"dct": np.concatenate([y, up], axis=1).astype(np.int16, copy=False)}
        return {"y": np.ascontiguousarray(y, np.int16), "cbcr": np.ascontiguousarray(c, np.int16),
                "qt": np.minimum(b.qt, 32767).astype(np.int16)}

    def output_spec(self) -> dict[str, TensorSpec]:
        ky, kc = self.keep
        b = self.options.crop // 8
        what = ("dequantized" if self.options.dequantize else "quantized") + f" DCT, {self.options.order} order"
        if self.options.chroma == "concat":
            return {"dct": TensorSpec((ky + 2 * kc, b, b), "int16", f"{what}: Y then Cb, Cr upsampled 2x")}
        return {
            "y": TensorSpec((ky, b, b), "int16", f"{what}, luma, one channel per frequency"),
            "cbcr": TensorSpec((2 * kc, b // 2, b // 2), "int16", f"{what}, Cb then Cr on the 4:2:0 grid"),
            "qt": TensorSpec((3, 64), "int16", "quantization tables Y, Cb, Cr, natural order"),
        }

    def default_transforms(self, train: bool) -> list:
        from ..augment.dct import CenterCrop, HFlip, RandomCrop

        size, short = self.options.crop, self.config.resize
        if short is not None and size > short:  # every image would be mostly zero padding
            raise CodecError(f"jpeg-dct: crop {size} px is larger than every image's short side (at most {short} px, "
                             f"the shard-time resize): each sample would be zero-padded; pass options={{'crop': "
                             f"{max(16, short // 16 * 16)}}} or less")
        return [RandomCrop(size=size), HFlip(p=0.5)] if train else [CenterCrop(size=size)]


def _order(keep: int, order: str) -> np.ndarray | None:
    """Permutation from zigzag channels to the requested order (None: identity)."""
    if order == "zigzag":
        return None
    return np.argsort(ZIGZAG[:keep], kind="stable")


def _table(qt_row: np.ndarray, keep: int, order: str) -> np.ndarray:
    freqs = ZIGZAG[:keep] if order == "zigzag" else np.sort(ZIGZAG[:keep])
    return qt_row[freqs].astype(np.int16)


