"""Latent-space augmentations of ``vae`` samples.

A sample is float32 ``[views, planes, C, h, w]``: the views encoded at shard time, plane 0 the posterior mean,
plane 1 (when the shards store it) the posterior std. Each transform returns a new array and never mutates
its input; randomness comes from ``rng``. Batch-level mixup is :func:`mixup` (call it in the training loop).

VAE latents are only approximately equivariant to flips and crops (``lossyload vae-check`` measures by how
much for a given model): a latent flip is close to, not equal to, the latent of the flipped image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossyload.augment.registry import register_augment
from lossyload.errors import CodecError

__all__ = ["CenterCrop", "GaussianNoise", "HFlip", "PosteriorSample", "RandomCrop", "RandomView", "View", "mixup"]


def _check(x: np.ndarray) -> None:
    if x.ndim != 5:
        raise CodecError(f"latent transforms need a vae sample [views, planes, C, h, w], got shape {list(x.shape)}")


@register_augment("latent_random_view")
@dataclass(frozen=True, kw_only=True)
class RandomView:
    """One of the views encoded at shard time, uniformly."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        v = int(rng.integers(x.shape[0]))
        return x[v : v + 1]


@register_augment("latent_view")
@dataclass(frozen=True, kw_only=True)
class View:
    """A fixed view (0: the centre crop)."""

    index: int = 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        if not 0 <= self.index < x.shape[0]:
            raise CodecError(f"latent_view: view {self.index} asked, the shards hold {x.shape[0]}")
        return x[self.index : self.index + 1]


@register_augment("latent_hflip")
@dataclass(frozen=True, kw_only=True)
class HFlip:
    p: float = 0.5

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        return x[..., ::-1] if rng.random() < self.p else x


@register_augment("latent_random_crop")
@dataclass(frozen=True, kw_only=True)
class RandomCrop:
    """A ``size`` x ``size`` window of the latent grid at a random cell, after replicating ``padding`` edge
    cells on every side (``padding`` > 0 with ``size`` = grid: random translation, same output size)."""

    size: int
    padding: int = 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        if self.padding:
            p = self.padding
            x = np.pad(x, [(0, 0)] * 3 + [(p, p), (p, p)], mode="edge")
        h, w = x.shape[-2:]
        if self.size > min(h, w):
            raise CodecError(f"latent_random_crop: size {self.size} exceeds the latent grid {h}x{w}")
        top, left = int(rng.integers(h - self.size + 1)), int(rng.integers(w - self.size + 1))
        return x[..., top : top + self.size, left : left + self.size]


@register_augment("latent_center_crop")
@dataclass(frozen=True, kw_only=True)
class CenterCrop:
    size: int

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        h, w = x.shape[-2:]
        if self.size > min(h, w):
            raise CodecError(f"latent_center_crop: size {self.size} exceeds the latent grid {h}x{w}")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]


@register_augment("latent_noise")
@dataclass(frozen=True, kw_only=True)
class GaussianNoise:
    """Add ``sigma`` x N(0, 1) to the mean (in the units the loader returns: scaled latents by default)."""

    sigma: float = 0.1

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        out = x.copy()
        out[:, 0] += self.sigma * rng.standard_normal(out[:, 0].shape, dtype=np.float32)
        return out


@register_augment("latent_posterior_sample")
@dataclass(frozen=True, kw_only=True)
class PosteriorSample:
    """Replace the mean by a draw from the posterior, mean + ``temperature`` x std x N(0, 1) (needs shards
    made with ``store_std``)."""

    temperature: float = 1.0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(x)
        if x.shape[1] < 2:
            raise CodecError("latent_posterior_sample needs the posterior std: shard with --set store_std=true")
        out = x.copy()
        out[:, 0] += self.temperature * x[:, 1] * rng.standard_normal(x[:, 1].shape, dtype=np.float32)
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
