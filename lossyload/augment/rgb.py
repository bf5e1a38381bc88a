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


def _items(batch) -> list:
    """The images of a batch: a list (sizes differ) or the rows of a ``[B, 3, H, W]`` tensor."""
    return list(batch) if not isinstance(batch, list) else batch


def _stack(images: list):
    import torch

    return torch.stack(images) if images and hasattr(images[0], "shape") else images


@register_augment("rgb_random_resized_crop")
@dataclass(frozen=True, kw_only=True)
class RandomResizedCrop:
    """Batch form: the boxes drawn as arrays (torchvision's rejection sampling, sample by sample); each
    resize is its own call (pixel sizes differ before it)."""

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:  # a config read back from JSON holds lists
        object.__setattr__(self, "scale", tuple(self.scale))
        object.__setattr__(self, "ratio", tuple(self.ratio))

    def __call__(self, img, rng: np.random.Generator):
        return self.apply(img, dict(zip(("top", "left", "height", "width"),
                                        crop_box(*_size(img), self.scale, self.ratio, rng))))

    def apply(self, img, p: dict):
        from torchvision.transforms.v2 import functional as F

        box = [int(p[k]) for k in ("top", "left", "height", "width")]
        return F.resized_crop(img, *box, [self.size, self.size], antialias=True)

    def params(self, batch, rng: np.random.Generator) -> dict[str, np.ndarray]:
        boxes = np.array([crop_box(*_size(img), self.scale, self.ratio, rng) for img in _items(batch)], np.int64)
        return {k: boxes[:, j] for j, k in enumerate(("top", "left", "height", "width"))}

    def apply_batch(self, batch, p: dict):
        return _stack([self.apply(img, {k: v[i] for k, v in p.items()}) for i, img in enumerate(_items(batch))])


@register_augment("rgb_resize_center_crop")
@dataclass(frozen=True, kw_only=True)
class ResizeCenterCrop:
    """Evaluation transform: resize the short side to ``size / crop_fraction``, then center-crop ``size``."""

    size: int = 224
    crop_fraction: float = 0.875

    def __call__(self, img, rng: np.random.Generator):
        return self.apply(img, {})

    def apply(self, img, p: dict):
        from torchvision.transforms.v2 import functional as F

        img = F.resize(img, [round(self.size / self.crop_fraction)], antialias=True)
        return F.center_crop(img, [self.size, self.size])

    def params(self, batch, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    def apply_batch(self, batch, p: dict):
        return _stack([self.apply(img, p) for img in _items(batch)])


@register_augment("rgb_hflip")
@dataclass(frozen=True, kw_only=True)
class HFlip:
    p: float = 0.5

    def __call__(self, img, rng: np.random.Generator):
        return self.apply(img, {"flip": rng.random() < self.p})

    def apply(self, img, p: dict):
        from torchvision.transforms.v2 import functional as F

        return F.horizontal_flip(img) if p["flip"] else img

    def params(self, batch, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"flip": rng.random(len(batch)) < self.p}

    def apply_batch(self, batch, p: dict):
        if isinstance(batch, list):
            return [self.apply(img, {"flip": f}) for img, f in zip(batch, p["flip"])]
        import torch

        flip = torch.from_numpy(np.asarray(p["flip"]))
        return torch.where(flip[:, None, None, None], batch.flip(-1), batch)
