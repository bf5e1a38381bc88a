"""``ResampleVae``: a small autoencoder that starts as plain resampling and learns only what improves on it.

- encoder: the ``downsample`` x ``downsample`` area average of the RGB image (``avg_pool2d``; PIL's box filter
  gives the same at integer factors, to within its 8-bit rounding) is latent channels 0-2; a residual branch
  (pixel-unshuffle, a 1x1 convolution per latent cell, 3x3 residual blocks at the latent resolution) adds to
  them and makes channels 3+ (``tanh``: on the same [-1, 1] scale as the pixel averages);
- decoder: bilinear upsampling of channels 0-2 back to the pixel grid, plus a residual branch (the same
  convolutions at the latent resolution, then pixel-shuffle) that sees every channel.

The last convolution of each residual branch starts at zero where it writes onto the resampling path, so an
untrained model *is* area-down / bilinear-up resampling (to float rounding): training can only start from
there. The posterior has a fixed standard deviation ``posterior_std`` (about the int8 rounding error of the
``vae`` codec): training decodes ``mean + posterior_std * noise``, so the decoder learns to tolerate the
codec's quantization.

It is a ``diffusers`` model with ``AutoencoderKL``'s interface (``encode(x).latent_dist``,
``decode(z).sample``, ``config.scaling_factor``/``shift_factor``/``latent_channels``, ``save_pretrained`` /
``from_pretrained``), so the ``vae`` codec, ``lossyload vae-check`` and ``lossyload fit-vae`` use it as they
use Stable Diffusion's VAE; ``config.json`` names the class (``_class_name``), which is how a model folder
is loaded with the right one (:func:`lossyload.media.vae_model.load_vae`).
"""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from torch import nn
from torch.nn import functional as F

RGB = 3


def area_down(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The ``factor`` x ``factor`` block means of ``x [N, C, H, W]`` (H, W multiples of ``factor``)."""
    return F.avg_pool2d(x, factor)


def bilinear_up(z: torch.Tensor, factor: int) -> torch.Tensor:
    """``z [N, C, h, w]`` upsampled ``factor`` times by bilinear interpolation (pixel centres, edges clamped)."""
    return F.interpolate(z, scale_factor=factor, mode="bilinear", align_corners=False)


def resample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """What resampling to a ``factor`` times smaller grid and back keeps of ``x``: the reference the model starts
    from and is measured against."""
    return bilinear_up(area_down(x, factor), factor)


class _Block(nn.Module):
    """``x + conv(silu(conv(x)))``: 3x3 convolutions, ``width`` channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.silu(self.a(x)))


def _branch(cin: int, width: int, blocks: int, cout: int) -> nn.Sequential:
    """1x1 convolution in (a per-cell linear map: the cell's pixels or latents), 3x3 residual blocks (the
    neighbouring cells), 1x1 convolution out."""
    return nn.Sequential(nn.Conv2d(cin, width, 1), nn.SiLU(), *(_Block(width) for _ in range(blocks)),
                         nn.Conv2d(width, cout, 1))


class ResampleVae(ModelMixin, ConfigMixin):
    """Resampling plus learned residuals; see the module docstring."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, downsample: int = 8, width: int = 32, blocks: int = 2,
                 posterior_std: float = 0.004, scaling_factor: float = 1.0, shift_factor: float = 0.0) -> None:
        super().__init__()
        if latent_channels < RGB or downsample < 1 or width < 1 or blocks < 0 or not posterior_std > 0:
            raise ValueError(f"ResampleVae: needs latent_channels >= 3, downsample >= 1, width >= 1, blocks >= 0 "
                             f"and posterior_std > 0, got {latent_channels}, {downsample}, {width}, {blocks}, "
                             f"{posterior_std}")
        d = downsample
        self.encoder = _branch(RGB * d * d, width, blocks, latent_channels)
        self.decoder = _branch(latent_channels, width, blocks, RGB * d * d)
        with torch.no_grad():  # the residuals onto the resampling path start at zero
            self.encoder[-1].weight[:RGB].zero_()
            self.encoder[-1].bias[:RGB].zero_()
            self.decoder[-1].weight.zero_()
            self.decoder[-1].bias.zero_()

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Posterior of pixels ``x [N, 3, H, W]`` in [-1, 1] (H, W multiples of ``downsample``)."""
        d = self.config.downsample
        h = self.encoder(F.pixel_unshuffle(x, d))
        mean = torch.cat([area_down(x, d) + h[:, :RGB], torch.tanh(h[:, RGB:])], 1)
        logvar = torch.full_like(mean, 2 * math.log(self.config.posterior_std))
        dist = DiagonalGaussianDistribution(torch.cat([mean, logvar], 1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Pixels ``[N, 3, H, W]`` (about [-1, 1]) of raw latents ``z [N, C, h, w]``."""
        d = self.config.downsample
        x = bilinear_up(z[:, :RGB], d) + F.pixel_shuffle(self.decoder(z), d)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mean).sample
