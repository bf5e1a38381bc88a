"""``rgb``: the conventional baseline from the same JPEG shards -- full decode, RandomResizedCrop, flip,
normalize, float32 -- so every comparison is made on the same bytes.

``backend="turbo"`` decodes with libjpeg-turbo (simplejpeg) and resizes uint8 tensors with torch (the fast
conventional pipeline); ``backend="pil"`` is the torchvision default (PIL decode and resize).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..media import jpeg
from ..errors import DecodeError
from .registry import register_codec
from .base import Codec, Encoded, TensorSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class RgbConfig:
    quality: int = 90
    subsampling: str = "4:2:0"
    resize: int | None = None
    max_pixels: int = 64_000_000

    def __post_init__(self) -> None:
        jpeg.check_source_options(quality=self.quality, subsampling=self.subsampling, resize=self.resize)


@dataclass(frozen=True, kw_only=True)
class RgbOptions:
    backend: str = "turbo"  # "turbo" (libjpeg-turbo + torch resize) | "pil" (torchvision default)
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.backend not in ("turbo", "pil"):
            raise ValueError("backend must be 'turbo' or 'pil'")
        if not isinstance(self.crop, int) or self.crop <= 0:
            raise ValueError(f"crop must be a positive number of pixels, got {self.crop!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise ValueError(f"mean and std need 3 values (R, G, B), std positive; got {self.mean!r}, {self.std!r}")


@register_codec
class Rgb(Codec):
    name = "rgb"
    no_dali_form = None  # JPEG bytes: DALI's image decoder (lossyload.dali.graphs)
    Config = RgbConfig
    Options = RgbOptions
    member = "jpg"

    def __init__(self, config: RgbConfig | None = None, options: RgbOptions | None = None) -> None:
        super().__init__(config, options)
        self._norm = None  # (mean, 1/std) tensors, made on first use: encoding never imports torch

    def encode(self, data: bytes, *, source: str) -> Encoded:
        c = self.config
        payload, why = jpeg.prepare_jpeg(
            data, source=source, quality=c.quality, subsampling=c.subsampling, resize=c.resize, max_pixels=c.max_pixels
        )
        return Encoded(payload, why)

    def decode(self, payload: bytes):
        """A uint8 ``[3, H, W]`` tensor (turbo) or an RGB ``PIL.Image`` (pil)."""
        try:
            if self.options.backend == "turbo":
                import simplejpeg
                import torch

                jpeg.check_pixels(payload, self.config.max_pixels)  # before simplejpeg allocates them
                arr = simplejpeg.decode_jpeg(payload, colorspace="RGB")
                return torch.from_numpy(arr).permute(2, 0, 1)
            im = Image.open(io.BytesIO(payload))
            if im.width * im.height > self.config.max_pixels:
                raise DecodeError(f"image states {im.width}x{im.height} pixels, more than max_pixels="
                                  f"{self.config.max_pixels}")
            return im.convert("RGB")
        except (ValueError, OSError, Image.DecompressionBombError) as exc:
            raise DecodeError(f"not a decodable JPEG: {exc}") from exc

    def finalize(self, img) -> dict[str, np.ndarray]:
        if not hasattr(img, "float"):
            from torchvision.transforms.v2 import functional as F

            img = F.pil_to_tensor(img)
        self._normalizer()
        x = (img.float() - self._norm[0]) * self._norm[1]
        return {"rgb": x.numpy()}

    # -- wire form: the cropped uint8 pixels cross, ``finish`` normalizes them to float32 there ---------------
    def wire_form(self, transforms: list) -> bool:
        return True

    def wire(self, img) -> dict[str, np.ndarray]:
        if not hasattr(img, "float"):
            from torchvision.transforms.v2 import functional as F

            img = F.pil_to_tensor(img)
        return {"rgb": img.contiguous().numpy()}

    def finish(self, wire: dict) -> dict:
        """:meth:`finalize`'s normalization, on the pixels' device: the same float32 operations."""
        self._normalizer()
        x = wire["rgb"]
        mean, inv = (t.to(x.device) for t in self._norm)
        return {"rgb": (x.float() - mean) * inv}

    def finish_arrays(self, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`finalize`'s normalization with numpy: the same float32 operations."""
        self._normalizer()
        mean, inv = (t.numpy() for t in self._norm)
        x = wire["rgb"].astype(np.float32)
        x -= mean
        x *= inv
        return {"rgb": x}

    def _normalizer(self) -> None:
        if self._norm is None:
            import torch

            self._norm = (torch.tensor(self.options.mean).view(3, 1, 1) * 255,
                          1.0 / (torch.tensor(self.options.std).view(3, 1, 1) * 255))

    def output_spec(self) -> dict[str, TensorSpec]:
        s = self.options.crop
        return {"rgb": TensorSpec((3, s, s), "float32", "RGB, normalized, channel-first")}

    def default_transforms(self, train: bool) -> list:
        from ..augment.rgb import HFlip, RandomResizedCrop, ResizeCenterCrop

        s = self.options.crop
        return [RandomResizedCrop(size=s), HFlip(p=0.5)] if train else [ResizeCenterCrop(size=s)]
