"""Linear decoding of latents: a ``[C + 1, 3]`` map (C weights per RGB channel plus a bias) from scaled VAE
latents to RGB in [-1, 1] at the latent grid's resolution -- the seed's "linear decoding of latents".

Built-in maps for Stable Diffusion 1.x and SDXL latents (the community-estimated factors used for live
previews by diffusion front ends, on latents scaled by the model's ``scaling_factor``); for any VAE,
:func:`fit_linear_decoder` fits one by least squares, and the ``vae`` shard job records such a map in the
index (``preview_map``); ``lossyload preview URL`` draws a shard set's first samples through it.
"""

from __future__ import annotations

import numpy as np

from ..errors import LossyloadError

BUILTIN_MAPS = {
    "sd1": np.array([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
                     [-0.2120, -0.2616, -0.7177], [0.0, 0.0, 0.0]], np.float32),
    "sdxl": np.array([[0.3920, 0.4054, 0.4549], [-0.2634, -0.0196, 0.0653], [0.0568, 0.1687, -0.0755],
                      [-0.3112, -0.2359, -0.2076], [0.0, 0.0, 0.0]], np.float32),
}


def pool_to_grid(pixels: np.ndarray, grid: int) -> np.ndarray:
    """uint8 images ``[N, H, W, 3]`` -> float ``[N, 3, grid, grid]`` in [-1, 1], averaged over each latent cell."""
    n, h, w, _ = pixels.shape
    fh, fw = h // grid, w // grid
    x = pixels[:, : grid * fh, : grid * fw].reshape(n, grid, fh, grid, fw, 3).mean((2, 4), dtype=np.float64)
    return np.moveaxis(x / 127.5 - 1.0, -1, 1)


def fit_linear_decoder(latents: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Least-squares ``[C + 1, 3]`` map from latents ``[N, C, h, w]`` to the images ``[N, H, W, 3]`` (uint8)
    they encode, averaged over each latent cell."""
    n, c, h, w = latents.shape
    if len(pixels) != n or h != w:
        raise LossyloadError(f"fit_linear_decoder: {n} square latents need as many images, got {len(pixels)}")
    target = pool_to_grid(pixels, h)
    a = np.concatenate([np.moveaxis(latents, 1, -1).reshape(-1, c), np.ones((n * h * w, 1))], 1)
    b = np.moveaxis(target, 1, -1).reshape(-1, 3)
    return np.linalg.lstsq(a.astype(np.float64), b, rcond=None)[0].astype(np.float32)


def apply_linear_map(latents: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """RGB float ``[N, 3, h, w]`` (about [-1, 1]) of latents ``[N, C, h, w]`` through a ``[C + 1, 3]`` map."""
    c = latents.shape[1]
    if weights.shape != (c + 1, 3):
        raise LossyloadError(f"a [{c + 1}, 3] map is needed for {c}-channel latents, got {list(weights.shape)}")
    rgb = np.einsum("nchw,cr->nrhw", latents, weights[:c]) + weights[c][None, :, None, None]
    return rgb.astype(np.float32)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """``[N, 3, h, w]`` in [-1, 1] -> uint8 ``[N, h, w, 3]``."""
    return np.clip(np.rint((np.moveaxis(rgb, 1, -1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid_image(images: np.ndarray, columns: int, upscale: int):
    """A PIL image of uint8 ``[N, h, w, 3]`` tiles, ``columns`` per row, each enlarged ``upscale`` times."""
    from PIL import Image

    n, h, w, _ = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    out = Image.fromarray(sheet)
    return out.resize((out.width * upscale, out.height * upscale), Image.Resampling.NEAREST) if upscale > 1 else out


def dataset_map(config: dict, which: str) -> np.ndarray:
    """The map ``which`` ("fitted": the index's ``preview_map``; "sd1" / "sdxl": built in) for a vae config."""
    if which in BUILTIN_MAPS:
        return BUILTIN_MAPS[which]
    if which != "fitted":
        raise LossyloadError(f"unknown map {which!r}; known: fitted, {', '.join(BUILTIN_MAPS)}")
    values, c = config.get("preview_map"), config.get("latent_channels")
    if values is None or c is None:
        raise LossyloadError("the index records no preview_map: use --map sd1 or --map sdxl")
    return np.asarray(values, np.float32).reshape(c + 1, 3)
