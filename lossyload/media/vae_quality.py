"""How far a VAE's latents are from equivariant to the flips and crops that latent-space
augmentation applies -- measured on real images, not assumed.

- flip, encoder side: ``E(flip x)`` against ``flip E(x)`` (relative L2 error of the posterior means);
- flip, decoder side: ``D(flip z)`` against ``flip D(z)`` (PSNR in dB on the [-1, 1] pixel scale);
- crop: ``E(crop x)`` for a crop aligned to the latent cells against the same cells of ``E(x)``, away from
  the crop border (relative L2 error);
- for scale: the reconstruction PSNR of ``D(E(x))`` against ``x``, and the relative L2 distance between
  the latents of two different images (what "different" looks like).

``lossyload vae-check`` (:mod:`lossyload.commands.vae_check`) prints them; :func:`psnr_db` is also what
``lossyload fit-vae`` (:mod:`.vae_fit`) measures with.
"""

from __future__ import annotations

import numpy as np

from ..errors import LossyloadError
from .vae_model import decode_latents, encode_pixels, facts


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def psnr_db(a: np.ndarray, b: np.ndarray, *, peak: float = 2.0) -> float:
    """PSNR in dB of ``a`` against ``b`` from their mean squared error over all elements; the default peak 2 is
    for pixels on [-1, 1] and gives the same figure as the usual PSNR of the images on [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))


def equivariance(vae, pixels: np.ndarray, *, device: str = "cpu", batch_size: int = 8) -> dict[str, float]:
    """The figures above for uint8 images ``[N, R, R, 3]`` (N >= 2, R a multiple of 4 latent cells and at least
    8 of them: a smaller grid leaves no cells inside the crop's border margin to compare)."""
    n, r = len(pixels), pixels.shape[1]
    down = facts(vae).downsample
    if n < 2 or r % (4 * down) or r < 8 * down:
        raise LossyloadError(f"vae-check needs >= 2 images of a size that is a multiple of {4 * down} pixels, "
                             f"at least {8 * down}")
    z, _ = encode_pixels(vae, pixels, batch_size, device)
    z_flip, _ = encode_pixels(vae, np.ascontiguousarray(pixels[:, :, ::-1]), batch_size, device)
    g = z.shape[-1]
    off, size = g // 8, g - g // 4  # a centred crop of 3/4 of the grid, aligned to latent cells
    crop = np.ascontiguousarray(pixels[:, off * down : (off + size) * down, off * down : (off + size) * down])
    z_crop, _ = encode_pixels(vae, crop, batch_size, device)
    m = 2  # latent cells near the crop border see other context: left out
    inner = (slice(None), slice(None), slice(m, size - m), slice(m, size - m))
    recon = decode_latents(vae, z, device)
    x = np.moveaxis(pixels, -1, 1) / 127.5 - 1.0
    recon_flipped = decode_latents(vae, np.ascontiguousarray(z[..., ::-1]), device)
    return {
        "flip_encoder_rel_l2": _rel(z_flip, z[..., ::-1]),
        "flip_decoder_psnr_db": psnr_db(recon_flipped, recon[..., ::-1]),
        "crop_encoder_rel_l2": _rel(z_crop[inner], z[:, :, off : off + size, off : off + size][inner]),
        "reconstruction_psnr_db": psnr_db(recon, x),
        "other_image_rel_l2": _rel(np.roll(z, 1, axis=0), z),
    }
