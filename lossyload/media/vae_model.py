"""The VAE behind the ``vae`` codec: loading a ``diffusers.AutoencoderKL`` (or a model with its interface),
preparing source images, encoding.

Models:

- a Hugging Face hub id (``stabilityai/sd-vae-ft-mse``; SDXL: ``stabilityai/sdxl-vae`` or
  ``stabilityai/stable-diffusion-xl-base-1.0`` with ``subfolder="vae"``), read from the local Hugging Face
  cache only unless ``download=True`` -- a missing model is a clear error within seconds, never minutes of
  network retries;
- a local directory holding ``config.json`` and the weights (what ``save_pretrained`` writes); its config's
  ``_class_name`` picks the class from ``MODEL_CLASSES``: ``AutoencoderKL``, or ``ResampleVae``
  (``lossyload.media.resample_vae``, what ``lossyload fit-vae`` fits by default);
- ``random:sd1`` / ``random:tiny``: random-initialised weights of the SD-1.x architecture (84M parameters,
  about 1.3 s per 256 x 256 image on one CPU core) or of a tiny one (79K parameters, about 20 ms), seeded.
  For tests and offline demos only: a random VAE is not a codec anyone published.

Images become one or more *views* at ``resolution`` x ``resolution``: view 0 is the shorter side resized to
``resolution`` and centre-cropped, view 1 its mirror image, views 2+ seeded random-resized crops (scale
0.35-1, aspect 3/4-4/3, random flip) -- a latent cannot be re-augmented in pixel space at load time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import CodecError, require
from .jpeg import eight_bit, open_image

RANDOM_ARCHS = {
    "random:sd1": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                       scaling_factor=0.18215),
    "random:tiny": dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
                        mid_block_add_attention=False, scaling_factor=1.0),
}
MODEL_CLASSES = {  # config.json's _class_name -> (module, class) of a model folder
    "AutoencoderKL": ("diffusers", "AutoencoderKL"),
    "ResampleVae": ("lossyload.media.resample_vae", "ResampleVae"),
}
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ModelFacts:
    """What the index records about the model that made the latents."""

    latent_channels: int
    downsample: int  # pixels per latent cell along each axis
    scaling_factor: float
    shift_factor: float


def facts(model) -> ModelFacts:
    c = model.config
    down = c["downsample"] if "downsample" in c else 2 ** (len(c.block_out_channels) - 1)  # AutoencoderKL: blocks
    return ModelFacts(latent_channels=int(c.latent_channels), downsample=int(down),
                      scaling_factor=float(c.scaling_factor), shift_factor=float(c.shift_factor or 0.0))


def pick_device(device: str) -> str:
    torch = require("torch", "latent")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# how each command names the VAE it loads (the offline-model error says so)
MODEL_FLAGS = ("lossyload-shard --set model='\"NAME\"', lossyload vae-check --model NAME, "
               "lossyload-train --vae NAME")


@functools.lru_cache(maxsize=2)
def load_vae(model: str, subfolder: str | None = None, seed: int = 0, download: bool = False, device: str = "cpu"):
    """The ``AutoencoderKL`` named by ``model`` in eval mode on ``device`` (cached per process)."""
    torch = require("torch", "latent")
    diffusers = require("diffusers", "latent")
    if model.startswith("random:"):
        if model not in RANDOM_ARCHS:
            raise CodecError(f"vae: unknown random architecture {model!r}; known: {sorted(RANDOM_ARCHS)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = diffusers.AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                latent_channels=4, **RANDOM_ARCHS[model])
        return vae.eval().to(device)
    local = os.path.isdir(model) or model.startswith((".", "/", "~"))
    path = os.path.expanduser(model)
    cls = diffusers.AutoencoderKL
    if local:
        cls = _model_class(os.path.join(path, subfolder) if subfolder else path)
    try:
        with warnings.catch_warnings():  # diffusers passes huggingface_hub an argument it deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks", category=UserWarning)
            # low_cpu_mem_usage needs accelerate (not a dependency): asking for it without, diffusers prints a
            # multi-line warning on every load
            vae = cls.from_pretrained(
                path if local else model, subfolder=subfolder, local_files_only=local or not download,
                low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        where = model + (f" (subfolder {subfolder})" if subfolder else "")
        cause = f"({type(exc).__name__}: {str(exc)[:300]})"
        if local:
            raise CodecError(f"vae: cannot load the model directory {where} {cause}") from exc
        ways = ([] if download else [f"download it once (`hf download {model}`), or let diffusers fetch it "
                                     "(lossyload-shard --set download=true)"])
        ways += ["name a local model folder with config.json and the weights (`lossyload fit-vae` writes one)",
                 "for tests and offline demos only, random:tiny or random:sd1"]
        where_from = "the local Hugging Face cache (no network)" if not download else "the Hugging Face hub"
        raise CodecError(f"vae: model {where} could not be loaded from {where_from}: " + "; ".join(ways)
                         + f" (the model is {MODEL_FLAGS}). {cause}") from exc
    return vae.eval().to(device)


def _model_class(path: str):
    """The model class of folder ``path``, named by its ``config.json``; a clear error for what is missing."""
    if not os.path.isdir(path):
        raise CodecError(f"vae: model directory {path} does not exist")
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise CodecError(f"vae: model directory {path} has no config.json (made by save_pretrained)")
    weights = [f for f in os.listdir(path) if f.endswith((".safetensors", ".bin"))]
    if not weights:
        raise CodecError(f"vae: model directory {path} has config.json but no weights (*.safetensors / *.bin)")
    try:
        with open(config) as f:
            name = json.load(f).get("_class_name", "AutoencoderKL")
    except (OSError, ValueError, AttributeError) as exc:
        raise CodecError(f"vae: {config} is not a JSON object ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if name not in MODEL_CLASSES:
        raise CodecError(f"vae: {config} names the model class {name!r}; known: {', '.join(MODEL_CLASSES)}")
    module, cls = MODEL_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


# ---------------------------------------------------------------- source images -> views
def image_views(data: bytes, *, source: str, resolution: int, views: int, seed: int,
                max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """``views`` RGB uint8 arrays ``[V, resolution, resolution, 3]`` of an encoded image, and notes on what was
    changed (mode conversion, upscaling) for the index. Raises :class:`EncodeError` naming ``source``."""
    im = open_image(data, source, max_pixels)
    notes = []
    w, h = im.size
    if min(w, h) < resolution:
        notes.append(f"upscaled from {w}x{h}")
    if im.mode != "RGB":
        notes.append(f"{im.mode} to RGB")
        im = _to_rgb(im)
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "little")])
    out = np.empty((views, resolution, resolution, 3), np.uint8)
    for v in range(views):
        box, flip = _view_box(v, w, h, rng)
        view = im.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
        arr = np.asarray(view)
        out[v] = arr[:, ::-1] if flip else arr
    return out, notes


def _to_rgb(im: Image.Image) -> Image.Image:
    im = eight_bit(im)
    if "A" in im.getbands() or im.mode == "P":  # transparency: composited on white
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _view_box(v: int, w: int, h: int, rng: np.random.Generator) -> tuple[tuple[float, float, float, float], bool]:
    """(crop box, mirrored) of view ``v``: 0 centre square, 1 its mirror, 2+ random-resized crops."""
    if v < 2:
        s = min(w, h)
        left, top = (w - s) / 2, (h - s) / 2
        return (left, top, left + s, top + s), v == 1
    for _ in range(10):  # torchvision's RandomResizedCrop rule, then a centre-square fallback
        area = w * h * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
        cw, ch = np.sqrt(area * ratio), np.sqrt(area / ratio)
        if cw <= w and ch <= h:
            left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (left, top, left + cw, top + ch), bool(rng.random() < 0.5)
    return _view_box(0, w, h, rng)[0], bool(rng.random() < 0.5)


def encode_pixels(vae, pixels: np.ndarray, batch_size: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Posterior (mean, log-std) float32 ``[N, C, h, w]`` of uint8 images ``[N, H, W, 3]``, in batches."""
    torch = require("torch", "latent")
    means, logstds = [], []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch_size):
            x = torch.from_numpy(pixels[i:i + batch_size]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            dist = vae.encode(x.to(vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu().numpy())
            logstds.append((0.5 * dist.logvar).float().cpu().numpy())
    return np.concatenate(means), np.concatenate(logstds)


def decode_latents(vae, z: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Pixels float32 ``[N, 3, H, W]`` in [-1, 1] of raw (unscaled) latents ``[N, C, h, w]``."""
    torch = require("torch", "latent")
    with torch.inference_mode():
        return vae.decode(torch.from_numpy(z).to(device, vae.dtype)).sample.float().clamp(-1, 1).cpu().numpy()
