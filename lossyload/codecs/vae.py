"""``vae``: images as latents of a ``diffusers.AutoencoderKL`` (Stable Diffusion's VAE and kin) or of a model with
its interface (``ResampleVae``, what ``lossyload fit-vae`` fits).

Shard time: each image becomes ``views`` square views at ``resolution`` pixels (``lossyload.media.vae_model``),
encoded in batches (on the GPU when there is one) to the posterior mean -- and, with ``store_std``, its
log-std -- stored raw as ``int8`` or ``float16`` in one ``.vae`` member: ``[views, planes, C, h, w]``,
C-order, no header. Everything needed to read it back is in the index config, written once:

- int8: ``q = clip(round_half_even((z - offset) / scale), qmin, qmax)`` per channel, so the loader computes
  ``z = q * scale + offset`` -- the clip range is ``offset + scale * qrange``. ``scale``/``offset`` are fitted
  on a sample of the data (``clip_percentile`` in each tail) unless given; the decode uses exactly the
  stored values, so no document can pair a latent set with the wrong scale.
- the model's ``scaling_factor``/``shift_factor``, latent channels, downsampling factor and the source
  ``resolution``; a least-squares latent-to-RGB map (``preview_map``) for ``lossyload preview``.

The loader returns ``latent`` float32 ``[C, h, w]``, by default scaled as diffusion models see it
(``(z - shift_factor) * scaling_factor``). The canonical sample that augmentations transform is float32
``[views, planes, C, h, w]`` with plane 0 the mean and plane 1 (``store_std``) the std.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import CodecError, DecodeError, EncodeError
from .registry import register_codec
from .base import Codec, Encoded, TensorSpec

STORAGE = {"int8": np.int8, "float16": np.float16}


@dataclass(frozen=True, kw_only=True)
class VaeConfig:
    model: str = "stabilityai/sd-vae-ft-mse"  # hub id (local cache), model directory, "random:sd1" | "random:tiny"
    subfolder: str | None = None  # e.g. "vae" inside a full pipeline repository
    seed: int = 0  # random:* weights and the random views
    resolution: int = 256  # pixels of each square view (multiple of the VAE's downsampling)
    views: int = 1  # 1: centre crop; 2: + mirror; more: + seeded random-resized crops
    storage: str = "int8"  # "int8" | "float16"
    store_std: bool = False  # also store the posterior log-std (posterior resampling at load time)
    rounding: str = "half-even"
    qrange: tuple[int, int] = (-127, 127)
    scale: tuple[float, ...] | None = None  # int8: per-channel step of the mean (fitted when None)
    offset: tuple[float, ...] | None = None
    std_scale: tuple[float, ...] | None = None  # int8 + store_std: the same for the log-std
    std_offset: tuple[float, ...] | None = None
    clip_percentile: float = 0.01  # fit: percent of values clipped in each tail
    fit_samples: int = 256
    latent_channels: int | None = None  # recorded from the model
    downsample: int | None = None
    scaling_factor: float | None = None
    shift_factor: float | None = None
    preview_map: tuple[float, ...] | None = None  # [(C + 1) x 3] latent -> RGB, fitted by least squares
    max_pixels: int = 64_000_000
    batch_size: int = 16  # runtime: images per encoder batch
    device: str = "auto"  # runtime: "auto" (cuda when available) | "cpu" | "cuda:N"
    download: bool = False  # runtime: let diffusers fetch a hub model missing from the local cache

    def __post_init__(self) -> None:
        if self.storage not in STORAGE:
            raise ValueError(f"storage must be one of {sorted(STORAGE)}")
        if self.rounding != "half-even":
            raise ValueError("rounding must be 'half-even' (numpy's rint, the only mode lossyload writes)")
        if self.resolution < 8 or self.resolution % 8 or self.views < 1 or self.batch_size < 1:
            raise ValueError("resolution must be a positive multiple of 8; views and batch_size positive")
        if tuple(self.qrange) != (-127, 127):
            raise ValueError("qrange must be (-127, 127)")
        if not 0 <= self.clip_percentile < 50:
            raise ValueError("clip_percentile must be in [0, 50)")
        if self.downsample and self.resolution % self.downsample:
            raise ValueError(f"resolution {self.resolution} is not a multiple of the VAE's downsampling {self.downsample}")
        for name in ("latent_channels", "downsample"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_pixels < 1 or self.fit_samples < 1:
            raise ValueError("max_pixels and fit_samples must be positive")
        if self.scaling_factor is not None and self.scaling_factor <= 0:
            raise ValueError(f"scaling_factor must be positive, got {self.scaling_factor}")
        c = self.latent_channels
        given = {n: v for n in ("scale", "offset", "std_scale", "std_offset") if (v := getattr(self, n)) is not None}
        for name, v in given.items():
            if c is not None and len(v) != c:
                raise ValueError(f"{name} needs {c} values (one per latent channel), got {len(v)}")
        if len({len(v) for v in given.values()}) > 1:
            raise ValueError(f"scale, offset, std_scale and std_offset need one value per latent channel each, got "
                             f"{ {n: len(v) for n, v in given.items()} }")
        for name in ("scale", "std_scale"):
            if name in given and not all(s > 0 and math.isfinite(s) for s in given[name]):
                raise ValueError(f"{name} values must be positive and finite")

    @property
    def planes(self) -> int:
        return 2 if self.store_std else 1

    @property
    def grid(self) -> int:
        return self.resolution // (self.downsample or 8)


@dataclass(frozen=True, kw_only=True)
class VaeOptions:
    scaled: bool = True  # (z - shift_factor) * scaling_factor, as diffusion models see latents
    dtype: str = "float32"  # "float32" | "float16"
    crop: int | None = None  # latent cells of the default training crop (None: the whole grid)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError("dtype must be 'float32' or 'float16'")


@register_codec
class Vae(Codec):
    name = "vae"
    no_dali_form = None  # raw int8/float16 latents: lossyload.dali.graphs reinterprets and dequantizes them
    member = "vae"
    Config = VaeConfig
    Options = VaeOptions
    runtime_fields: ClassVar[tuple[str, ...]] = ("batch_size", "device", "download")
    fit_fields = ("scale", "offset", "std_scale", "std_offset", "latent_channels", "downsample", "scaling_factor",
                  "shift_factor", "preview_map")

    def __init__(self, config: VaeConfig | None = None, options: VaeOptions | None = None) -> None:
        super().__init__(config, options)
        self.fit_sample_count = self.config.fit_samples
        self._affine: tuple[np.ndarray, np.ndarray] | None = None

    # -- shard time ---------------------------------------------------------------------------------------
    def _model(self):
        from ..media.vae_model import load_vae, pick_device

        c = self.config
        device = pick_device(c.device)
        return load_vae(c.model, c.subfolder, c.seed, c.download, device), device

    def check_encoder(self) -> None:
        self._model()

    def needs_fit(self) -> bool:
        c = self.config
        std_given = c.std_scale is not None and c.std_offset is not None
        quantized = c.storage == "float16" or (c.scale is not None and c.offset is not None
                                               and (not c.store_std or std_given))
        facts_missing = any(getattr(c, f) is None for f in ("latent_channels", "downsample", "scaling_factor",
                                                             "shift_factor"))
        return not quantized or facts_missing

    def fit(self, samples: list[tuple[str, bytes]]) -> Vae:
        from ..media.latent_rgb import fit_linear_decoder
        from ..media.vae_model import facts

        vae, _ = self._model()
        f = facts(vae)
        c = dataclasses.replace(self.config, latent_channels=f.latent_channels, downsample=f.downsample,
                                scaling_factor=f.scaling_factor, shift_factor=f.shift_factor)
        pixels = [p[0] for p in (self._views(data, source, 1, errors=False) for source, data in samples) if p is not None]
        if not pixels:
            raise CodecError(f"vae: none of the {len(samples)} fit samples is a readable image")
        pixels = np.concatenate(pixels)
        mean, logstd = self._encode_pixels(pixels)
        updates: dict = {}
        if c.storage == "int8":
            if c.scale is None or c.offset is None:
                updates["scale"], updates["offset"] = _fit_range(mean, c.clip_percentile)
            if c.store_std and (c.std_scale is None or c.std_offset is None):
                updates["std_scale"], updates["std_offset"] = _fit_range(logstd, c.clip_percentile)
        if c.preview_map is None:
            scaled = (mean - f.shift_factor) * f.scaling_factor
            updates["preview_map"] = tuple(float(v) for v in fit_linear_decoder(scaled, pixels).ravel())
        return Vae(dataclasses.replace(c, **updates), self.options)

    def _views(self, data: bytes, source: str, views: int, errors: bool = True):
        from ..media.vae_model import image_views

        c = self.config
        try:
            return image_views(data, source=source, resolution=c.resolution, views=views, seed=c.seed,
                               max_pixels=c.max_pixels)
        except EncodeError:
            if errors:
                raise
            return None

    def _encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ..media.vae_model import encode_pixels, facts

        vae, device = self._model()
        if pixels.shape[1] % facts(vae).downsample:
            raise CodecError(f"vae: resolution {pixels.shape[1]} is not a multiple of this VAE's downsampling")
        return encode_pixels(vae, pixels, self.config.batch_size, device)

    def encode(self, data: bytes, *, source: str) -> Encoded:
        out = self.encode_batch([(data, source)])[0]
        if isinstance(out, EncodeError):
            raise out
        return out

    def encode_batch(self, items: list[tuple[bytes, str]]) -> list[Encoded | EncodeError]:
        c = self.config
        if self.needs_fit():
            raise CodecError("vae: the config lacks the fitted quantization/model facts (run through lossyload-shard)")
        prepared: list[tuple[np.ndarray, list[str]] | EncodeError] = []
        for data, source in items:
            try:
                prepared.append(self._views(data, source, c.views))
            except EncodeError as exc:
                prepared.append(exc)
        good = [p for p in prepared if not isinstance(p, EncodeError)]
        if not good:
            return prepared  # type: ignore[return-value]
        mean, logstd = self._encode_pixels(np.concatenate([views for views, _ in good]))
        if mean.shape[1:] != (c.latent_channels, c.grid, c.grid):
            raise CodecError(f"vae: the model gives latents {list(mean.shape[1:])}, the config says "
                             f"[{c.latent_channels}, {c.grid}, {c.grid}] (another model than the one fitted?)")
        stored = self.quantize(mean, logstd).reshape(len(good), c.views, c.planes, *mean.shape[1:])
        out: list[Encoded | EncodeError] = []
        i = 0
        for p in prepared:
            if isinstance(p, EncodeError):
                out.append(p)
            else:
                out.append(Encoded(stored[i].tobytes(), "; ".join(p[1]) or None))
                i += 1
        return out

    def quantize(self, mean: np.ndarray, logstd: np.ndarray) -> np.ndarray:
        """The stored array ``[N, planes, C, h, w]`` of posterior means and log-stds ``[N, C, h, w]``."""
        c = self.config
        planes = [mean, logstd] if c.store_std else [mean]
        if c.storage == "float16":
            return np.stack(planes, 1).astype(np.float16)
        pairs = [(c.scale, c.offset), (c.std_scale, c.std_offset)][: len(planes)]
        q = [np.clip(np.rint((p - _col(o)) / _col(s)), *c.qrange) for p, (s, o) in zip(planes, pairs)]
        return np.stack(q, 1).astype(np.int8)

    # -- load time ----------------------------------------------------------------------------------------
    def _dequant(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-(plane, channel) ``a``, ``b`` with value = stored * a + b (log-std for plane 1)."""
        c = self.config
        a = np.ones((c.planes, c.latent_channels), np.float32)
        b = np.zeros((c.planes, c.latent_channels), np.float32)
        if c.storage == "int8":
            a[0], b[0] = c.scale, c.offset
            if c.store_std:
                a[1], b[1] = c.std_scale, c.std_offset
        if self.options.scaled:  # mean -> (mean - shift) * sf; std -> std * sf, i.e. log-std + log(sf)
            sf = c.scaling_factor
            a[0], b[0] = a[0] * sf, (b[0] - c.shift_factor) * sf
            if c.store_std:
                b[1] += math.log(sf)
        return a[None, :, :, None, None], b[None, :, :, None, None]

    def _layout(self) -> tuple[tuple[int, ...], np.dtype, tuple[np.ndarray, np.ndarray]]:
        """(stored shape, stored dtype, dequantization ``(a, b)``) of one sample."""
        c = self.config
        if self._affine is None:
            if self.needs_fit():
                raise CodecError("vae: the index config lacks the recorded quantization/model facts")
            self._affine = self._dequant()
        return (c.views, c.planes, c.latent_channels, c.grid, c.grid), np.dtype(STORAGE[c.storage]), self._affine

    def _size_error(self, got: int, shape: tuple[int, ...], dtype: np.dtype) -> DecodeError:
        want = math.prod(shape) * dtype.itemsize
        return DecodeError(f"vae member holds {got} bytes; the index says {self.config.storage}{list(shape)} = "
                           f"{want} bytes")

    def decode(self, payload: bytes) -> np.ndarray:
        shape, dtype, (a, b) = self._layout()
        if len(payload) != math.prod(shape) * dtype.itemsize:
            raise self._size_error(len(payload), shape, dtype)
        x = np.frombuffer(payload, dtype).reshape(shape) * a + b
        if self.config.store_std:
            x[:, 1] = np.exp(x[:, 1])
        return x.astype(np.float32, copy=False)

    def finalize(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"latent": np.ascontiguousarray(x[0, 0], dtype=self.options.dtype)}

    # -- batch path: one join, one reshape, one multiply-add for the whole batch -----------------------------
    def batch_decoding(self) -> bool:
        return True

    def decode_many(self, payloads: list[bytes]) -> np.ndarray:
        """float32 ``[B, views, planes, C, h, w]``: ``decode`` of each payload, dequantized once per batch."""
        shape, dtype, (a, b) = self._layout()
        size = math.prod(shape) * dtype.itemsize
        for p in payloads:
            if len(p) != size:
                raise self._size_error(len(p), shape, dtype)
        x = _dequantize(np.frombuffer(b"".join(payloads), dtype).reshape(len(payloads), *shape), a, b)
        if self.config.store_std:
            x[:, :, 1] = np.exp(x[:, :, 1])
        return x

    def finalize_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"latent": np.ascontiguousarray(x[:, 0, 0], dtype=self.options.dtype)}

    # -- wire form: the stored int8 crosses, ``finish`` dequantizes it on the consumer's device ----------------
    def wire_form(self, transforms: list) -> bool:
        """int8 storage and transforms that only move cells (views, crops, flips): they commute with the
        per-channel dequantization, which can then wait for the consumer."""
        return self.config.storage == "int8" and all(getattr(t, "geometric", False) for t in transforms)

    def stored(self, payload: bytes) -> np.ndarray:
        """int8 ``[views, planes, C, h, w]`` as stored."""
        return self.stored_many([payload])[0]

    def stored_many(self, payloads: list[bytes]) -> np.ndarray:
        shape, dtype, _ = self._layout()
        size = math.prod(shape) * dtype.itemsize
        for p in payloads:
            if len(p) != size:
                raise self._size_error(len(p), shape, dtype)
        return np.frombuffer(b"".join(payloads), dtype).reshape(len(payloads), *shape)

    def wire(self, q: np.ndarray) -> dict[str, np.ndarray]:
        return {"latent": np.array(q[0, 0])}

    def wire_batch(self, q: np.ndarray) -> dict[str, np.ndarray]:
        return {"latent": np.array(q[:, 0, 0])}

    def finish(self, wire: dict) -> dict:
        """``q * scale + offset`` (and the model's scaling) per channel: the float32 operations of
        :meth:`decode_many`, so the result equals the host path's bit for bit."""
        import torch

        q = wire["latent"]
        a, b = (torch.from_numpy(v[0, 0]).to(q.device) for v in self._layout()[2])  # plane 0: [C, 1, 1]
        x = q.to(torch.float32) * a
        x += b
        return {"latent": x.to(getattr(torch, self.options.dtype))}

    def finish_arrays(self, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`decode_many`'s dequantization of plane 0, on the host: the same float32 operations."""
        a, b = (v[0, 0] for v in self._layout()[2])  # plane 0: [C, 1, 1]
        return {"latent": _dequantize(wire["latent"], a, b).astype(self.options.dtype, copy=False)}

    def output_spec(self) -> dict[str, TensorSpec]:
        c = self.config
        g = self.options.crop or c.grid
        what = "scaled by the model's scaling_factor" if self.options.scaled else "raw"
        return {"latent": TensorSpec((c.latent_channels, g, g), self.options.dtype, f"VAE posterior mean, {what}")}

    def default_transforms(self, train: bool) -> list:
        from ..augment import latent

        crop = self.options.crop
        if train:
            return ([latent.RandomView()] if self.config.views > 1 else []) + (
                [latent.RandomCrop(size=crop)] if crop else []) + [latent.HFlip(p=0.5)]
        return [latent.CenterCrop(size=crop)] if crop else []


def _col(v) -> np.ndarray:
    return np.asarray(v, np.float32)[None, :, None, None]


def _fit_range(x: np.ndarray, percentile: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (scale, offset) mapping [p, 100 - p] percentiles of ``x [N, C, h, w]`` onto -127..127."""
    flat = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).astype(np.float64)
    lo, hi = np.percentile(flat, percentile, axis=1), np.percentile(flat, 100 - percentile, axis=1)
    scale = np.maximum((hi - lo) / 254.0, 1e-8)
    return tuple(float(s) for s in scale), tuple(float(o) for o in (hi + lo) / 2)


def _dequantize(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 ``q * a + b`` of a batch ``q`` (``a``, ``b``: one sample's dequantization): the same float32
    operations as ``decode``, for the batch path and for the training process's finish of the int8 wire form."""
    x = np.multiply(q, a[None], out=np.empty(q.shape, np.float32))
    x += b[None]
    return x
