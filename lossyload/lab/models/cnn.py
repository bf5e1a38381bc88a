"""Small CNNs: the same trunk fed by RGB pixels or by DCT coefficients.

``SmallNet`` on pixels: a stride-2 stem brings ``[3, S, S]`` to ``[C, S/8, S/8]``. On JPEG coefficients the
8x8 DCT has already done that: luma ``[K_y, S/8, S/8]`` enters the trunk after a 1x1 projection, chroma
``[2*K_c, S/16, S/16]`` either joins after the first downsampling (``chroma="late"``: late concatenation, as in
"Faster Neural Networks Straight from JPEG", Gueguen et al. 2018) or is upsampled 2x to the luma grid and
concatenated with it before the projection (``chroma="upsample"``, as in DCTNet, Xu et al. 2020, whose
24-channel selection is ``keep=(16, 4)``). Inputs are normalised by a BatchNorm on the raw coefficients.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Trunk(nn.Module):
    """/8 features -> /16 (with optional extra channels joined there) -> pooled logits."""

    def __init__(self, width: int, extra: int, classes: int) -> None:
        super().__init__()
        self.down = _conv(width, 2 * width, 2)
        self.head = nn.Sequential(_conv(2 * width + extra, 4 * width), _conv(4 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        x = self.down(x)
        if extra is not None:
            x = torch.cat([x, extra], 1)
        return self.fc(self.head(x).mean((2, 3)))


class PixelNet(nn.Module):
    def __init__(self, classes: int, width: int = 48) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, width // 2, 2), _conv(width // 2, width, 2), _conv(width, width, 2))
        self.trunk = _Trunk(width, 0, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.stem(x))


class DctNet(nn.Module):
    def __init__(self, classes: int, keep: tuple[int, int] = (64, 64), width: int = 48, chroma: str = "late") -> None:
        super().__init__()
        if chroma not in ("late", "upsample"):
            raise ValueError(f"chroma must be 'late' or 'upsample', got {chroma!r}")
        ky, kc = keep
        self.chroma = chroma
        cin = ky + 2 * kc if chroma == "upsample" else ky
        self.y = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU(inplace=True), _conv(width, width))
        self.c = nn.Sequential(nn.BatchNorm2d(2 * kc), _conv(2 * kc, width // 2)) if chroma == "late" else None
        self.trunk = _Trunk(width, width // 2 if chroma == "late" else 0, classes)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        y, c = x["y"].float(), x["cbcr"].float()
        if self.c is not None:
            return self.trunk(self.y(y), self.c(c))
        c = nn.functional.interpolate(c, size=y.shape[2:], mode="nearest")  # 2x: onto the luma grid
        return self.trunk(self.y(torch.cat([y, c], 1)))


class GridNet(nn.Module):
    """A small CNN on any 2-D grid input ``[C, H, W]``. Keyword spotting: log-mel ``[1, 128, 128]`` (a stride-2 stem brings it to
    the 64 x 64 grid) or VQ code bit-planes / codebook vectors ``[C, 64, 64]`` (already on it: the 2 x 2 VQ
    blocks did the downsampling; the full-precision 3x3 first layer is where the seed's BNN keeps floats).
    Images: 64 x 64 resampled pixels ``[3, 64, 64]`` or VAE latents ``[4, 64, 64]`` (the seed's two small rows:
    the same network, only the first layer's input channels differ). Three stride-2 stages and global
    pooling: about 12 MFLOPs per sample at 64 x 64, small enough to train on a CPU. ``rows``: pool over time
    (the last axis) only and classify the ``rows`` frequency rows' features together (a spectrogram is not
    translation-invariant in frequency: a keyword is a pattern at given pitches), else global pooling."""

    def __init__(self, channels: int, classes: int, *, stem_stride: int = 1, width: int = 16,
                 rows: int | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.BatchNorm2d(channels), _conv(channels, width, stem_stride))
        self.body = nn.Sequential(_conv(width, 2 * width, 2), _conv(2 * width, 4 * width, 2), _conv(4 * width, 4 * width, 2))
        self.rows = rows
        self.fc = nn.Linear(4 * width * (rows or 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x[:, None]
        x = self.body(self.stem(x.float()))
        if self.rows is None:
            return self.fc(x.mean((2, 3)))
        return self.fc(x.mean(3).flatten(1))  # pooled over time only: each frequency row keeps its features


class LatentNet1d(nn.Module):
    """Keyword spotting on an EnCodec latent ``[128, T]`` (75 frames per second): 1-D convolutions in time."""

    def __init__(self, channels: int, classes: int, width: int = 64) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU(True))

        self.net = nn.Sequential(nn.BatchNorm1d(channels), block(channels, width), block(width, width),
                                 block(width, 2 * width, 2), block(2 * width, 2 * width, 2))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x.float()).mean(2))


@register_model("pixel-cnn")
def pixel_cnn(classes: int, *, width: int = 48) -> nn.Module:
    return PixelNet(classes, width=width)


@register_model("dct-cnn")
def dct_cnn(classes: int, *, keep: tuple[int, int] = (64, 64), width: int = 48, chroma: str = "late") -> nn.Module:
    return DctNet(classes, keep=tuple(keep), width=width, chroma=chroma)


@register_model("grid-cnn")
def grid_cnn(classes: int, *, in_channels: int, width: int = 16, stem_stride: int = 1) -> nn.Module:
    return GridNet(in_channels, classes, width=width, stem_stride=stem_stride)


@register_model("mel-cnn")
def mel_cnn(classes: int, *, width: int = 16) -> nn.Module:
    """Keyword spotting on log-mel ``[1, 128, 128]``: GridNet with a stride-2 stem, pooled over time only."""
    return GridNet(1, classes, width=width, stem_stride=2, rows=8)


@register_model("vq-cnn")
def vq_cnn(classes: int, *, in_channels: int = 4, width: int = 16) -> nn.Module:
    """VQ codebook vectors or bit-planes ``[4, 64, 64]``: GridNet already on the 64 x 64 grid, pooled over time
    only."""
    return GridNet(in_channels, classes, width=width, rows=8)


@register_model("latent-cnn")
def latent_cnn(classes: int, *, channels: int = 128, width: int = 64) -> nn.Module:
    return LatentNet1d(channels, classes, width=width)
