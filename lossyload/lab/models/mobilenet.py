"""MobileNetV2 (torchvision, untrained) for the image experiments: pixels, 64 x 64 grids, JPEG DCT coefficients.

* :func:`mobilenet_pixels`: the standard network on 224 x 224 pixels.
* :func:`mobilenet_grid`: 64 x 64 inputs (resampled pixels ``[3, 64, 64]`` or VAE latents ``[4, 64, 64]``): a
  BatchNorm on the raw input and a stride-1 stem, so the last map is 4 x 4. The two rows differ only in the
  first conv's input channels.
* :class:`DctMobileNetV2`: JPEG coefficients (Gueguen et al. 2018, "Faster Neural Networks Straight from
  JPEG"). Luma ``[K_y, S/8, S/8]`` is projected by a 1x1 conv to the width MobileNetV2 has at 1/8 resolution
  and enters the stack there (the stem and the blocks before 1/8 are dropped); chroma ``[2*K_c, S/16, S/16]``
  is projected and concatenated after the stack's stride-2 block to 1/16 (late concatenation), and a 1x1 conv
  brings the channels back to the stack's width before the remaining blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.ops.misc import Conv2dNormActivation

from .registry import register_model


def _stem(model: MobileNetV2, in_channels: int, stride: int) -> None:
    """Replace the first conv by one with ``in_channels`` inputs and the given stride."""
    old = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, stride, 1, bias=False)


def mobilenet_pixels(classes: int, *, in_channels: int = 3, width_mult: float = 0.5) -> nn.Module:
    """Standard MobileNetV2 for 224 x 224 pixel input."""
    model = mobilenet_v2(weights=None, num_classes=classes, width_mult=width_mult)
    if in_channels != 3:
        _stem(model, in_channels, 2)
    return model


class _InputNorm(nn.Module):
    """BatchNorm on the raw input (cast to float), then the network."""

    def __init__(self, channels: int, net: nn.Module) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x.float()))


def mobilenet_grid(classes: int, *, in_channels: int, width_mult: float = 0.5) -> nn.Module:
    """MobileNetV2 for 64 x 64 inputs: input BatchNorm, stride-1 stem (final map 4 x 4)."""
    model = mobilenet_v2(weights=None, num_classes=classes, width_mult=width_mult)
    _stem(model, in_channels, 1)
    return _InputNorm(in_channels, model)


def _split(features: nn.Sequential) -> tuple[int, int]:
    """Indices of the blocks that bring the stack to 1/8 and to 1/16 resolution."""
    scale, found = 2, {}  # the stem has stride 2
    for i, block in enumerate(features[1:], 1):
        scale *= getattr(block, "stride", 1)
        found.setdefault(scale, i)
    return found[8], found[16]


class DctMobileNetV2(nn.Module):
    """MobileNetV2 on JPEG DCT coefficients: input ``{"y": [B, K_y, S/8, S/8], "cbcr": [B, 2*K_c, S/16, S/16]}``
    (any integer or float dtype; other keys such as ``qt`` are ignored)."""

    def __init__(self, classes: int, *, keep: tuple[int, int] = (64, 64), width_mult: float = 0.5) -> None:
        super().__init__()
        ky, kc = keep
        base = mobilenet_v2(weights=None, num_classes=classes, width_mult=width_mult)
        i8, i16 = _split(base.features)
        c8, c16 = base.features[i8].out_channels, base.features[i16].out_channels
        self.y = nn.Sequential(nn.BatchNorm2d(ky), Conv2dNormActivation(ky, c8, 1, activation_layer=None))
        self.cbcr = nn.Sequential(nn.BatchNorm2d(2 * kc),
                                  Conv2dNormActivation(2 * kc, c16 // 2, 1, activation_layer=nn.ReLU6))
        self.stage8 = base.features[i8 + 1 : i16 + 1]  # the rest of 1/8, then the stride-2 block to 1/16
        self.merge = Conv2dNormActivation(c16 + c16 // 2, c16, 1, activation_layer=None)
        self.rest = base.features[i16 + 1 :]
        self.classifier = base.classifier

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.stage8(self.y(x["y"].float()))
        h = self.merge(torch.cat([h, self.cbcr(x["cbcr"].float())], 1))
        h = self.rest(h).mean((2, 3))
        return self.classifier(h)


@register_model("mnv2-pixels")
def mnv2_pixels(classes: int, *, width_mult: float = 0.5) -> nn.Module:
    return mobilenet_pixels(classes, width_mult=width_mult)


@register_model("mnv2-grid")
def mnv2_grid(classes: int, *, in_channels: int = 4, width_mult: float = 0.5) -> nn.Module:
    return mobilenet_grid(classes, in_channels=in_channels, width_mult=width_mult)


@register_model("mnv2-dct")
def mnv2_dct(classes: int, *, keep: tuple[int, int] = (64, 64), width_mult: float = 0.5) -> nn.Module:
    return DctMobileNetV2(classes, keep=tuple(keep), width_mult=width_mult)
