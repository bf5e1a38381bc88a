"""``lossyload fit-vae SRC OUT``: fit a small ``diffusers.AutoencoderKL`` on a folder of images, for the ``vae``
codec when no pretrained VAE is at hand (offline, nothing in the local Hugging Face cache).

The images under SRC (searched recursively) are split by ``seed`` into training images and held-out ones. The
model trains on random crops with random flips for a wall-clock budget (or a number of steps); the held-out
images' reconstruction PSNR is measured before and after. OUT is what ``AutoencoderKL.save_pretrained`` writes
(``config.json`` with the fitted ``scaling_factor``, the weights) and, last, ``fit.json``: the summary. The
``vae`` codec loads OUT as it is: ``lossyload-shard SRC DEST --codec vae --set model='"OUT"'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import LossyloadError, require
from .media.jpeg import eight_bit
from .vae_check import psnr_db

EXTS = ("jpg", "jpeg", "png", "webp")
TRAIN_SCALE = 1.25  # training images' short side, in units of the crop side
SUMMARY = "fit.json"
MAX_SKIPPED_LISTED = 20


@dataclass(frozen=True, kw_only=True)
class FitVaeConfig:
    """What to fit, and for how long.

    The loss is ``L1 + l2_weight * MSE + kl_weight * KL`` on pixels in [-1, 1]: the pixel losses are means, the
    KL divergence of the posterior from N(0, 1) is summed over the latent and divided by the pixels per image
    (the weighting of Stable Diffusion's VAE training, whose losses are sums). That training also has a
    perceptual (LPIPS) and an adversarial term; no perceptual loss works without downloading pretrained
    weights, so none is used here -- reconstructions are sharp enough for a latent codec, blurrier than SD's.
    """

    resolution: int = 128  # training crop side (pixels, a multiple of the 8x downsampling)
    batch: int = 8
    lr: float = 3e-3  # AdamW
    seconds: float = 300.0  # wall-clock training budget (held-out evaluation not counted)
    max_steps: int | None = None  # stop after this many steps, if sooner
    holdout: float = 0.1  # fraction of the images held out (at least one) for PSNR and the scaling factor
    max_images: int = 5000  # use at most this many images (a seeded random subset)
    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)  # 4 blocks: 8x downsampling
    layers_per_block: int = 1
    latent_channels: int = 4
    kl_weight: float = 1e-6
    l2_weight: float = 0.0
    seed: int = 0  # split, initial weights, crops, flips and posterior samples
    device: str = "auto"  # "auto" (cuda when available) | "cpu" | "cuda:N"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        ch = self.block_out_channels
        if len(ch) != 4 or not all(isinstance(c, int) and c > 0 for c in ch):
            raise ValueError(f"FitVaeConfig: block_out_channels needs 4 positive integers (4 blocks = 8x "
                             f"downsampling, what the vae codec expects), got {ch}")
        if self.resolution < 16 or self.resolution % 8:
            raise ValueError(f"FitVaeConfig: resolution must be a multiple of 8, at least 16, got {self.resolution}")
        if self.batch < 1 or self.layers_per_block < 1 or self.latent_channels < 1 or self.max_images < 2:
            raise ValueError("FitVaeConfig: batch, layers_per_block and latent_channels must be >= 1, "
                             "max_images >= 2")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not self.seconds > 0:
            raise ValueError("FitVaeConfig: lr and seconds must be positive")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError("FitVaeConfig: max_steps must be >= 0 (or None)")
        if not 0 < self.holdout < 1:
            raise ValueError(f"FitVaeConfig: holdout must be a fraction in (0, 1), got {self.holdout}")
        if min(self.kl_weight, self.l2_weight) < 0:
            raise ValueError("FitVaeConfig: kl_weight and l2_weight must be >= 0")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "block_out_channels": list(self.block_out_channels)}

    @property
    def norm_groups(self) -> int:
        """GroupNorm groups: at most 32 (SD's VAE), dividing every block's channels, with at least 4 channels per
        group in the narrowest block where possible (SD's VAE has 4: one channel per group is instance norm)."""
        ch = self.block_out_channels
        return next((g for g in (32, 16, 8, 4, 2) if all(c % g == 0 for c in ch) and min(ch) // g >= 4), 1)


# ---------------------------------------------------------------- images
def find_images(src: str) -> list[str]:
    """The image files under ``src`` (recursive, sorted)."""
    if not os.path.isdir(src):
        raise LossyloadError(f"{src}: fit-vae needs a folder of images; this is not a folder")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.rsplit(".", 1)[-1].lower() in EXTS)


def load_image(path: str, short: int) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of ``path`` with its shorter side resized to ``short`` pixels."""
    with Image.open(path) as im:
        w, h = im.size
        s = short / min(w, h)
        size = (max(short, round(w * s)), max(short, round(h * s)))
        im.draft("RGB", size)  # JPEG: decode at a reduced scale when that is still >= size
        rgb = eight_bit(im).convert("RGB")
        return np.asarray(rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))


def centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    """The shorter side resized to ``side``, then the centre square (as the vae codec's first view)."""
    h, w = img.shape[:2]
    s = side / min(w, h)
    im = Image.fromarray(img).resize((max(side, round(w * s)), max(side, round(h * s))), Image.Resampling.BICUBIC)
    top, left = (im.size[1] - side) // 2, (im.size[0] - side) // 2
    return np.asarray(im)[top:top + side, left:left + side]


def random_batch(images: list[np.ndarray], n: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``side`` x ``side`` crops, each mirrored with probability 1/2: uint8 ``[n, side, side, 3]``."""
    out = np.empty((n, side, side, 3), np.uint8)
    for i, k in enumerate(rng.integers(len(images), size=n)):
        img = images[k]
        top, left = rng.integers(img.shape[0] - side + 1), rng.integers(img.shape[1] - side + 1)
        crop = img[top:top + side, left:left + side]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def _load_all(files: list[str], short: int, progress: bool) -> tuple[list[np.ndarray], list[str]]:
    """(the readable images, "file: reason" of each unreadable one)."""
    from tqdm import tqdm

    images, skipped = [], []
    for f in tqdm(files, desc="fit-vae: reading images", unit="img", disable=not progress, leave=False):
        try:
            images.append(load_image(f, short))
        except Exception as exc:  # PIL raises many types for corrupt or unsupported data
            skipped.append(f"{f}: {type(exc).__name__}: {str(exc)[:200]}")
    return images, skipped


# ---------------------------------------------------------------- the model
def build_vae(config: FitVaeConfig):
    """A fresh ``AutoencoderKL`` of ``config``'s architecture, initialised from ``config.seed``."""
    torch = require("torch", "latent")
    diffusers = require("diffusers", "latent")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
            norm_num_groups=config.norm_groups, sample_size=config.resolution)


def evaluate(vae, pixels: np.ndarray, *, batch: int, device: str) -> tuple[float, np.ndarray]:
    """(reconstruction PSNR in dB -- images on [0, 1], pooled MSE --, posterior means) of uint8 ``[N, R, R, 3]``."""
    from .media.vae_model import decode_latents, encode_pixels

    vae.eval()
    mean, _ = encode_pixels(vae, pixels, batch, device)
    recon = np.concatenate([decode_latents(vae, mean[i:i + batch], device) for i in range(0, len(mean), batch)])
    return psnr_db(recon, np.moveaxis(pixels, -1, 1) / 127.5 - 1.0), mean


def train(vae, images: list[np.ndarray], config: FitVaeConfig, device: str, *, progress: bool) -> tuple[int, float]:
    """Train ``vae`` in place until ``config.seconds`` or ``config.max_steps``; (steps, seconds)."""
    torch = require("torch", "latent")
    from tqdm import tqdm

    c = config
    rng = np.random.default_rng([c.seed, 1])
    noise = torch.Generator(device=device).manual_seed(c.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=c.lr)
    vae.train()
    pixels_per_image = 3 * c.resolution ** 2
    bar = tqdm(total=c.max_steps, desc="fit-vae: training", unit="step", disable=not progress)
    start, steps = time.monotonic(), 0
    while (c.max_steps is None or steps < c.max_steps) and time.monotonic() - start < c.seconds:
        x = torch.from_numpy(random_batch(images, c.batch, c.resolution, rng)).to(device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=noise)).sample
        loss = (recon - x).abs().mean() + c.kl_weight * posterior.kl().mean() / pixels_per_image
        if c.l2_weight:
            loss = loss + c.l2_weight * ((recon - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        steps += 1
        bar.update(1)
        if steps % 10 == 0 or steps == 1:
            bar.set_postfix(loss=f"{loss.item():.4f}", elapsed=f"{time.monotonic() - start:.0f}s")
    bar.close()
    return steps, time.monotonic() - start


def _prepare_out(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise LossyloadError(f"{out}: fit-vae output exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise LossyloadError(f"{out}: fit-vae output folder is not empty; pass overwrite=True (--overwrite) "
                                 "to write over it")
        if os.path.exists(os.path.join(out, SUMMARY)):
            os.remove(os.path.join(out, SUMMARY))  # written last again: a folder without it is incomplete


def fit_vae(src: str, out: str, config: FitVaeConfig | None = None, *, progress: bool = True,
            overwrite: bool = False) -> dict:
    """Fit an ``AutoencoderKL`` on the images under ``src``, save it to ``out`` and return the summary (also
    written to ``out/fit.json``, last)."""
    from .media.vae_model import pick_device

    c = config or FitVaeConfig()
    _prepare_out(out, overwrite)
    files = find_images(src)
    if not files:
        raise LossyloadError(f"{src}: no images ({', '.join(EXTS)}) found in this folder or below it")
    order = np.random.default_rng([c.seed, 0]).permutation(len(files))[: c.max_images]
    images, skipped = _load_all([files[i] for i in order], round(c.resolution * TRAIN_SCALE), progress)
    if len(images) < 2:
        raise LossyloadError(f"{src}: fit-vae needs at least 2 readable images, found {len(images)} "
                             f"({len(skipped)} unreadable)" + (f", e.g. {skipped[0]}" if skipped else ""))
    n_hold = min(len(images) - 1, max(1, round(c.holdout * len(images))))
    held = np.stack([centre_crop(img, c.resolution) for img in images[:n_hold]])
    device = pick_device(c.device)
    vae = build_vae(c).to(device)
    psnr_before, _ = evaluate(vae, held, batch=c.batch, device=device)
    steps, seconds = train(vae, images[n_hold:], c, device, progress=progress)
    psnr_after, latents = evaluate(vae, held, batch=c.batch, device=device)
    scaling_factor = float(1.0 / max(float(latents.std()), 1e-8))
    vae.register_to_config(scaling_factor=scaling_factor)
    os.makedirs(out, exist_ok=True)
    vae.to("cpu").save_pretrained(out)
    summary = {
        "psnr_db": psnr_after, "psnr_untrained_db": psnr_before, "steps": steps, "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 4) if steps else None, "train_images": len(images) - n_hold,
        "holdout_images": n_hold, "skipped": len(skipped), "skipped_files": skipped[:MAX_SKIPPED_LISTED],
        "scaling_factor": scaling_factor, "src": os.path.abspath(src), "device": device,
        "config": c.to_json(),
    }
    with open(os.path.join(out, SUMMARY), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


# ---------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = FitVaeConfig()
    p.add_argument("src", help="a folder of images (jpg, jpeg, png, webp; searched recursively)")
    p.add_argument("out", help="output folder for the model (config.json, weights) and fit.json")
    p.add_argument("--resolution", type=int, default=d.resolution, help=f"training crop side (default {d.resolution})")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"training time budget (default {d.seconds:g})")
    p.add_argument("--max-steps", type=int, help="stop after this many steps, if sooner")
    p.add_argument("--holdout", type=float, default=d.holdout, help="fraction of images held out for PSNR")
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--channels", default=",".join(map(str, d.block_out_channels)),
                   help="the 4 blocks' channels (default %(default)s)")
    p.add_argument("--layers-per-block", type=int, default=d.layers_per_block)
    p.add_argument("--latent-channels", type=int, default=d.latent_channels)
    p.add_argument("--kl-weight", type=float, default=d.kl_weight)
    p.add_argument("--l2-weight", type=float, default=d.l2_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        channels = tuple(int(v) for v in args.channels.split(","))
        config = FitVaeConfig(
            resolution=args.resolution, batch=args.batch, lr=args.lr, seconds=args.seconds, max_steps=args.max_steps,
            holdout=args.holdout, max_images=args.max_images, block_out_channels=channels,
            layers_per_block=args.layers_per_block, latent_channels=args.latent_channels, kl_weight=args.kl_weight,
            l2_weight=args.l2_weight, seed=args.seed, device=args.device)
    except ValueError as exc:
        raise LossyloadError(f"fit-vae: {exc} (--channels takes 4 comma-separated integers)"
                             if "invalid literal" in str(exc) else str(exc)) from exc
    s = fit_vae(args.src, args.out, config, progress=not args.no_progress, overwrite=args.overwrite)
    out = os.path.abspath(args.out)
    print(f"fit-vae: {s['train_images']} training images, {s['holdout_images']} held out, {s['skipped']} unreadable "
          f"skipped, from {args.src}")
    print(f"held-out PSNR at {config.resolution} px: {s['psnr_untrained_db']:.2f} dB untrained -> {s['psnr_db']:.2f} "
          f"dB after {s['steps']} steps in {s['seconds']:.0f} s ({s['device']})")
    print(f"saved to {out} (scaling_factor {s['scaling_factor']:.4f}; summary in {SUMMARY})")
    print(f"shard with it: lossyload-shard SRC DEST --codec vae --set model={shlex.quote(json.dumps(out))} "
          f"--set resolution={config.resolution}")
    return 0
