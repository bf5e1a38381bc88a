"""Pixel-domain augmentations of the conventional ``rgb`` baseline (torchvision's semantics, numpy RNG).

They take a uint8 ``[3, H, W]`` tensor (libjpeg-turbo backend) or a ``PIL.Image`` (PIL backend) and return the
same kind; resizing is torchvision's ``resized_crop`` with antialiasing, as in the torchvision default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .registry import register_augment


def _size(img) -> tuple[int, int]:
    """(height, width) of a CHW tensor or a PIL image."""
    return (int(img.shape[-2]), int(img.shape[-1])) if hasattr(img, "shape") else (img.size[1], img.size[0])


def crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``: (top, left, height, width), drawn from ``rng``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@register_augment("rgb_random_resized_crop")
@dataclass(frozen=True, kw_only=True)
class RandomResizedCrop:
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:  # a config read back from JSON holds lists
        object.__setattr__(self, "scale", tuple(self.scale))
        object.__setattr__(self, "ratio", tuple(self.ratio))

    def __call__(self, img, rng: np.random.Generator):
        from torchvision.transforms.v2 import functional as F

        top, left, h, w = crop_box(*_size(img), self.scale, self.ratio, rng)
        return F.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)


@register_augment("rgb_resize_center_crop")
@dataclass(frozen=True, kw_only=True)
class ResizeCenterCrop:
    """Evaluation transform: resize the short side to ``size / crop_fraction``, then center-crop ``size``."""

    size: int = 224
    crop_fraction: float = 0.875

    def __call__(self, img, rng: np.random.Generator):
        from torchvision.transforms.v2 import functional as F

        img = F.resize(img, [round(self.size / self.crop_fraction)], antialias=True)
        return F.center_crop(img, [self.size, self.size])


@register_augment("rgb_hflip")
@dataclass(frozen=True, kw_only=True)
class HFlip:
    p: float = 0.5

    def __call__(self, img, rng: np.random.Generator):
        from torchvision.transforms.v2 import functional as F

        return F.horizontal_flip(img) if rng.random() < self.p else img
