"""Fit a small VAE on a folder of images, for the ``vae`` codec when no pretrained
VAE is at hand (offline, nothing in the local Hugging Face cache).

The images under SRC (searched recursively) are split by ``seed`` into training images and held-out ones. The
model trains on random crops with random flips for a wall-clock budget (or a number of steps). The held-out
images' reconstruction PSNR is measured beside that of plain resampling to the latent grid and back (area
average down, bilinear up: the "resampled pixels" a latent competes with), at the start and at
``checkpoints`` points of the budget; the best state measured is the one saved. The default architecture,
``resample`` (:class:`lossyload.media.resample_vae.ResampleVae`), *is* that resampling before training, so
the saved model is never worse than resampling on the held-out images; ``autoencoderkl`` fits a small
``diffusers.AutoencoderKL`` from random weights instead (far below resampling within minutes on a CPU).

OUT is what ``save_pretrained`` writes (``config.json`` naming the class, with the fitted ``scaling_factor``;
the weights as safetensors) and, last, ``fit.json``: the summary. The ``vae`` codec loads OUT as it is:
``lossyload-shard SRC DEST --codec vae --set model='"OUT"'``. The command is ``lossyload fit-vae SRC OUT``
(:mod:`lossyload.commands.fit_vae`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import LossyloadError, require
from .jpeg import eight_bit
from .vae_quality import psnr_db

EXTS = ("jpg", "jpeg", "png", "webp")
TRAIN_SCALE = 1.25  # training images' short side, in units of the crop side
SUMMARY = "fit.json"
MAX_SKIPPED_LISTED = 20
WARMUP_STEPS = 20
DOWNSAMPLE = 8  # pixels per latent cell along each axis (what the vae codec expects)


ARCHITECTURES = ("resample", "autoencoderkl")


@dataclass(frozen=True, kw_only=True)
class FitVaeConfig:
    """What to fit, and for how long.

    The loss is ``l1_weight * L1 + l2_weight * MSE + kl_weight * KL`` on pixels in [-1, 1]; by default the mean
    squared error alone, what PSNR measures (``sd-vae-ft-mse`` is SD's VAE fine-tuned with more weight on it:
    L1 gained far less held-out PSNR in 60-step trials here). The pixel losses are means, the
    KL divergence of the posterior from N(0, 1) is summed over the latent and divided by the pixels per image
    (the weighting of Stable Diffusion's VAE training, whose losses are sums). That training also has a
    perceptual (LPIPS) and an adversarial term; no perceptual loss works without downloading pretrained
    weights, so none is used here. ``resample`` has a fixed-variance posterior: its KL term does not train
    anything, and ``kl_weight`` is ignored.
    """

    architecture: str = "resample"  # "resample" (ResampleVae) | "autoencoderkl" (diffusers, from random weights)
    resolution: int = 128  # training crop side and held-out image side (pixels, a multiple of the 8x downsampling)
    batch: int = 8
    lr: float = 3e-3  # AdamW, warmed up over WARMUP_STEPS steps, then cosine-decayed over the budget
    seconds: float = 300.0  # wall-clock training budget (held-out evaluations not counted)
    max_steps: int | None = None  # stop after this many steps, if sooner
    checkpoints: int = 8  # held-out evaluations over the budget (besides the one before training); the best is saved
    holdout: float = 0.1  # fraction of the images held out (at least one) for PSNR and the scaling factor
    max_images: int = 5000  # use at most this many images (a seeded random subset)
    latent_channels: int = 4
    width: int = 32  # resample: channels of the residual branches (at the latent resolution)
    blocks: int = 2  # resample: residual blocks per branch
    posterior_std: float = 0.004  # resample: the posterior's fixed std (int8 rounding of a [-1, 1] channel: 0.0023)
    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)  # autoencoderkl: 4 blocks = 8x downsampling
    layers_per_block: int = 1  # autoencoderkl
    kl_weight: float = 1e-6  # autoencoderkl
    l1_weight: float = 0.0
    l2_weight: float = 1.0
    seed: int = 0  # split, initial weights, crops, flips and posterior samples
    device: str = "auto"  # "auto" (cuda when available) | "cpu" | "cuda:N"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        ch = self.block_out_channels
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"FitVaeConfig: architecture must be one of {', '.join(ARCHITECTURES)}, "
                             f"got {self.architecture!r}")
        if len(ch) != 4 or not all(isinstance(c, int) and c > 0 for c in ch):
            raise ValueError(f"FitVaeConfig: block_out_channels needs 4 positive integers (4 blocks = 8x "
                             f"downsampling, what the vae codec expects), got {ch}")
        if self.resolution < 16 or self.resolution % 8:
            raise ValueError(f"FitVaeConfig: resolution must be a multiple of 8, at least 16, got {self.resolution}")
        if self.batch < 1 or self.layers_per_block < 1 or self.max_images < 2 or self.checkpoints < 1:
            raise ValueError("FitVaeConfig: batch, layers_per_block and checkpoints must be >= 1, max_images >= 2")
        if self.latent_channels < (3 if self.architecture == "resample" else 1) or self.width < 1 or self.blocks < 0:
            raise ValueError("FitVaeConfig: latent_channels must be >= 3 for resample (>= 1 otherwise), width >= 1, "
                             "blocks >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not self.seconds > 0 or not self.posterior_std > 0:
            raise ValueError("FitVaeConfig: lr, seconds and posterior_std must be positive")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError("FitVaeConfig: max_steps must be >= 0 (or None)")
        if not 0 < self.holdout < 1:
            raise ValueError(f"FitVaeConfig: holdout must be a fraction in (0, 1), got {self.holdout}")
        if min(self.kl_weight, self.l1_weight, self.l2_weight) < 0 or not self.l1_weight + self.l2_weight > 0:
            raise ValueError("FitVaeConfig: kl_weight, l1_weight and l2_weight must be >= 0, l1_weight + l2_weight > 0")

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
    """A fresh model of ``config``'s architecture, initialised from ``config.seed``."""
    torch = require("torch", "latent")
    diffusers = require("diffusers", "latent")
    c = config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        if c.architecture == "resample":
            from .resample_vae import ResampleVae

            return ResampleVae(latent_channels=c.latent_channels, width=c.width, blocks=c.blocks,
                               posterior_std=c.posterior_std)
        return diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=c.block_out_channels,
            layers_per_block=c.layers_per_block, latent_channels=c.latent_channels,
            norm_num_groups=c.norm_groups, sample_size=c.resolution)


def _unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` as float32 ``[N, 3, H, W]`` on [-1, 1]."""
    return np.moveaxis(pixels, -1, 1).astype(np.float32) / 127.5 - 1.0


def evaluate(vae, pixels: np.ndarray, *, batch: int, device: str) -> tuple[float, np.ndarray]:
    """(reconstruction PSNR in dB -- images on [0, 1], pooled MSE --, posterior means) of uint8 ``[N, R, R, 3]``."""
    from .vae_model import decode_latents, encode_pixels

    vae.eval()
    mean, _ = encode_pixels(vae, pixels, batch, device)
    recon = np.concatenate([decode_latents(vae, mean[i:i + batch], device) for i in range(0, len(mean), batch)])
    return psnr_db(recon, _unit(pixels)), mean


def resampling_psnr(pixels: np.ndarray, factor: int = DOWNSAMPLE) -> float:
    """PSNR in dB (as :func:`evaluate`) of uint8 ``[N, R, R, 3]`` resampled to an R / ``factor`` grid by area
    averaging and back by bilinear upsampling, in float (no rounding to 8 bits)."""
    torch = require("torch", "latent")
    from .resample_vae import resample

    x = torch.from_numpy(_unit(pixels))
    return psnr_db(resample(x, factor).clamp(-1, 1).numpy(), x.numpy())


def _state(vae) -> dict:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def _schedule(step: int, done: float) -> float:
    """The learning rate's factor at ``step``, ``done`` (0-1) through the budget: a linear warm-up over the first
    ``WARMUP_STEPS`` steps (Adam's first steps move every weight by about the learning rate, which throws the
    model far from where it started), then a cosine decay to zero at the end of the budget: ``max_steps`` when
    given (so a fit of so many steps does not depend on the clock), else ``seconds``."""
    return min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


def train(vae, images: list[np.ndarray], held: np.ndarray, config: FitVaeConfig, device: str, *,
          progress: bool) -> dict:
    """Train ``vae`` in place until ``config.seconds`` of training or ``config.max_steps``, measuring the held-out
    PSNR before training and at ``config.checkpoints`` points of the budget (and at the end); ``vae`` is left
    holding the best state measured. Returns ``{"steps", "seconds", "best_step", "psnr_db", "history"}``."""
    torch = require("torch", "latent")
    from tqdm import tqdm

    c = config
    rng = np.random.default_rng([c.seed, 1])
    noise = torch.Generator(device=device).manual_seed(c.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=c.lr)
    pixels_per_image = 3 * c.resolution ** 2
    kl_weight = c.kl_weight if c.architecture == "autoencoderkl" else 0.0
    history: list[dict] = []
    best: dict = {}
    bar = tqdm(total=c.max_steps, desc="fit-vae: training", unit="step", disable=not progress)
    start, evaluating, steps, k = time.monotonic(), 0.0, 0, 1

    def clock() -> float:  # training seconds: wall clock less the held-out evaluations
        return time.monotonic() - start - evaluating

    def measure() -> None:
        nonlocal evaluating
        t, seconds = time.monotonic(), clock()
        psnr, _ = evaluate(vae, held, batch=c.batch, device=device)
        history.append({"step": steps, "seconds": round(seconds, 2), "psnr_db": psnr})
        if not best or psnr > best["psnr_db"]:
            best.update(step=steps, psnr_db=psnr, state=_state(vae))
        evaluating += time.monotonic() - t
        vae.train()

    def reached(k: int) -> bool:  # checkpoint k of c.checkpoints: k / checkpoints of the time or step budget
        return clock() >= c.seconds * k / c.checkpoints or (
            c.max_steps is not None and steps >= c.max_steps * k / c.checkpoints)

    measure()
    while (c.max_steps is None or steps < c.max_steps) and clock() < c.seconds:
        x = torch.from_numpy(random_batch(images, c.batch, c.resolution, rng)).to(device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=noise)).sample
        loss = c.l1_weight * (recon - x).abs().mean() + c.l2_weight * ((recon - x) ** 2).mean()
        if kl_weight:
            loss = loss + kl_weight * posterior.kl().mean() / pixels_per_image
        for group in opt.param_groups:
            group["lr"] = c.lr * _schedule(steps, clock() / c.seconds if c.max_steps is None else steps / c.max_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        steps += 1
        bar.update(1)
        if steps % 10 == 0 or steps == 1:
            bar.set_postfix(loss=f"{loss.item():.4f}", elapsed=f"{clock():.0f}s")
        if k <= c.checkpoints and reached(k):
            measure()
            while k <= c.checkpoints and reached(k):
                k += 1
    seconds = clock()
    if history[-1]["step"] != steps:
        measure()
    bar.close()
    vae.load_state_dict(best["state"])
    return {"steps": steps, "seconds": seconds, "best_step": best["step"], "psnr_db": best["psnr_db"],
            "history": history}


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
    """Fit a VAE on the images under ``src``, save it to ``out`` and return the summary (also written to
    ``out/fit.json``, last)."""
    from .vae_model import pick_device

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
    fit = train(vae, images[n_hold:], held, c, device, progress=progress)
    _, latents = evaluate(vae, held, batch=c.batch, device=device)
    scaling_factor = float(1.0 / max(float(latents.std()), 1e-8))
    vae.register_to_config(scaling_factor=scaling_factor)
    os.makedirs(out, exist_ok=True)
    vae.to("cpu").save_pretrained(out)
    steps, seconds = fit["steps"], fit["seconds"]
    summary = {
        "psnr_db": fit["psnr_db"], "psnr_resampling_db": resampling_psnr(held),
        "psnr_untrained_db": fit["history"][0]["psnr_db"], "best_step": fit["best_step"], "steps": steps,
        "seconds": round(seconds, 2), "seconds_per_step": round(seconds / steps, 4) if steps else None,
        "history": fit["history"], "train_images": len(images) - n_hold, "holdout_images": n_hold,
        "skipped": len(skipped), "skipped_files": skipped[:MAX_SKIPPED_LISTED], "scaling_factor": scaling_factor,
        "latent_shape": list(latents.shape[1:]), "src": os.path.abspath(src), "device": device,
        "config": c.to_json(),
    }
    with open(os.path.join(out, SUMMARY), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
