"""Latent-space augmentations of ``vae`` samples.

A sample is float32 ``[views, planes, C, h, w]``: the views encoded at shard time, plane 0 the posterior mean,
plane 1 (when the shards store it) the posterior std. Each transform returns a new array and never mutates
its input; randomness comes from ``rng``. Batch-level mixup is :func:`mixup` (call it in the training loop).

VAE latents are only approximately equivariant to flips and crops (``lossyload vae-check`` measures by how
much for a given model): a latent flip is close to, not equal to, the latent of the flipped image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lossyload.augment.registry import register_augment
from lossyload.errors import CodecError

__all__ = ["CenterCrop", "GaussianNoise", "HFlip", "PosteriorSample", "RandomCrop", "RandomView", "View", "mixup"]


def _check(x: np.ndarray) -> None:
    if x.ndim != 5:
        raise CodecError(f"latent transforms need a vae sample [views, planes, C, h, w], got shape {list(x.shape)}")


_NONE: dict[str, np.ndarray] = {}


def _check_batch(x: np.ndarray) -> None:
    if x.ndim != 6:
        raise CodecError(f"latent batch transforms need [B, views, planes, C, h, w], got shape {list(x.shape)}")


def _view_index(views: int, index: int) -> None:
    if not 0 <= index < views:
        raise CodecError(f"latent_view: view {index} asked, the shards hold {views}")


@register_augment("latent_random_view")
@dataclass(frozen=True, kw_only=True)
class RandomView:
    """One of the views encoded at shard time, uniformly."""

    geometric: ClassVar[bool] = True  # moves cells only: commutes with the int8 dequantization

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        return self.apply(x, {"view": int(rng.integers(x.shape[0]))})

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        v = int(p["view"])
        return x[v : v + 1]

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        return {"view": rng.integers(xb.shape[1], size=len(xb))}

    def apply_batch(self, xb: np.ndarray, p: dict) -> np.ndarray:
        return xb[np.arange(len(xb)), p["view"]][:, None]


@register_augment("latent_view")
@dataclass(frozen=True, kw_only=True)
class View:
    """A fixed view (0: the centre crop)."""

    geometric: ClassVar[bool] = True  # moves cells only: commutes with the int8 dequantization

    index: int = 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        return self.apply(x, _NONE)

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        _view_index(x.shape[0], self.index)
        return x[self.index : self.index + 1]

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        return _NONE

    def apply_batch(self, xb: np.ndarray, p: dict) -> np.ndarray:
        _view_index(xb.shape[1], self.index)
        return xb[:, self.index : self.index + 1]


@register_augment("latent_hflip")
@dataclass(frozen=True, kw_only=True)
class HFlip:
    geometric: ClassVar[bool] = True  # moves cells only: commutes with the int8 dequantization

    p: float = 0.5

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        return self.apply(x, {"flip": rng.random() < self.p})

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        return x[..., ::-1] if p["flip"] else x

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        return {"flip": rng.random(len(xb)) < self.p}

    def apply_batch(self, xb: np.ndarray, p: dict) -> np.ndarray:
        idx = np.flatnonzero(p["flip"])
        if not len(idx):
            return xb
        out = xb.copy()
        out[idx] = xb[idx, ..., ::-1]
        return out


def _crop_grid(shape: tuple[int, ...], size: int, what: str) -> tuple[int, int]:
    h, w = shape[-2:]
    if size > min(h, w):
        raise CodecError(f"{what}: size {size} exceeds the latent grid {h}x{w}")
    return h, w


@register_augment("latent_random_crop")
@dataclass(frozen=True, kw_only=True)
class RandomCrop:
    """A ``size`` x ``size`` window of the latent grid at a random cell, after replicating ``padding`` edge
    cells on every side (``padding`` > 0 with ``size`` = grid: random translation, same output size)."""

    geometric: ClassVar[bool] = True  # moves cells only: commutes with the int8 dequantization

    size: int
    padding: int = 0

    def _pad(self, x: np.ndarray) -> np.ndarray:
        p = self.padding
        return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)], mode="edge") if p else x

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        h, w = _crop_grid(self._pad(x).shape, self.size, "latent_random_crop")
        top, left = int(rng.integers(h - self.size + 1)), int(rng.integers(w - self.size + 1))
        return self.apply(x, {"top": top, "left": left})

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        top, left = int(p["top"]), int(p["left"])
        return self._pad(x)[..., top : top + self.size, left : left + self.size]

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        h, w = (d + 2 * self.padding for d in xb.shape[-2:])
        _crop_grid((h, w), self.size, "latent_random_crop")
        return {"top": rng.integers(h - self.size + 1, size=len(xb)),
                "left": rng.integers(w - self.size + 1, size=len(xb))}

    def apply_batch(self, xb: np.ndarray, p: dict) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(self._pad(xb), (self.size, self.size), axis=(-2, -1))
        return windows[np.arange(len(xb)), ..., p["top"], p["left"], :, :]


@register_augment("latent_center_crop")
@dataclass(frozen=True, kw_only=True)
class CenterCrop:
    geometric: ClassVar[bool] = True  # moves cells only: commutes with the int8 dequantization
    size: int

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        return self.apply(x, _NONE)

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        h, w = _crop_grid(x.shape, self.size, "latent_center_crop")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        return _NONE

    apply_batch = apply  # the same slice of every sample


@register_augment("latent_noise")
@dataclass(frozen=True, kw_only=True)
class GaussianNoise:
    """Add ``sigma`` x N(0, 1) to the mean (in the units the loader returns: scaled latents by default)."""

    sigma: float = 0.1

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        return self.apply(x, {"noise": self.sigma * rng.standard_normal(x[:, 0].shape, dtype=np.float32)})

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        out = x.copy()
        out[:, 0] += p["noise"]
        return out

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        return {"noise": self.sigma * rng.standard_normal(xb[:, :, 0].shape, dtype=np.float32)}

    def apply_batch(self, xb: np.ndarray, p: dict) -> np.ndarray:
        out = xb.copy()
        out[:, :, 0] += p["noise"]
        return out


def _needs_std(planes: int) -> None:
    if planes < 2:
        raise CodecError("latent_posterior_sample needs the posterior std: shard with --set store_std=true")


@register_augment("latent_posterior_sample")
@dataclass(frozen=True, kw_only=True)
class PosteriorSample:
    """Replace the mean by a draw from the posterior, mean + ``temperature`` x std x N(0, 1) (needs shards
    made with ``store_std``)."""

    temperature: float = 1.0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        _needs_std(x.shape[1])
        return self.apply(x, {"noise": rng.standard_normal(x[:, 1].shape, dtype=np.float32)})

    def apply(self, x: np.ndarray, p: dict) -> np.ndarray:
        out = x.copy()
        out[:, 0] += self.temperature * x[:, 1] * p["noise"]
        return out

    def params(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        _check_batch(xb)
        _needs_std(xb.shape[2])
        return {"noise": rng.standard_normal(xb[:, :, 1].shape, dtype=np.float32)}

    def apply_batch(self, xb: np.ndarray, p: dict) -> np.ndarray:
        out = xb.copy()
        out[:, :, 0] += self.temperature * xb[:, :, 1] * p["noise"]
        return out


def mixup(x, y, *, alpha: float, classes: int, generator=None):
    """Batch-level mixup (Zhang et al. 2018) of latents ``x [B, ...]`` and integer labels ``y [B]``: returns
    ``(lam * x + (1 - lam) * x[perm], soft targets [B, classes])`` with ``lam ~ Beta(alpha, alpha)``, all draws
    from the torch ``generator``. The soft targets go to ``torch.nn.functional.cross_entropy``."""
    import torch

    if alpha <= 0:
        raise ValueError("mixup: alpha must be positive")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(y), generator=generator)
    onehot = torch.nn.functional.one_hot(y.long(), classes).to(x.dtype if x.is_floating_point() else torch.float32)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]
