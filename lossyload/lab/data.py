"""The lab's data step: bundled or user data -> the named shard sets the rows read.

Sources are the bundled photo and keyword sets (built offline into the work folder, one folder per build
config) or folders given by path (images: ImageFolder ``train/`` and ``val/`` or ``test/``; speech: class
folders ``train/`` and ``test/``). Each shard set is made once per (source, codec, settings) under
``WORK/shards/<set>-<key>/{train,test}`` and reused when complete: a rerun with the same settings shards
nothing, a rerun with other settings gets other folders. Codecs that fit to data (the VQ codebook, the VAE
latents' quantization) fit on the training split; the test split is encoded with the training split's config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from ..codecs import codec_class
from ..errors import LossyloadError
from ..shard import ShardJob, run_job
from ..shard.job import config_from_dataset


def key(*parts: Any) -> str:
    """A short stable hash of JSON-able ``parts`` (folder names of builds and shard sets)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


PRETRAINED_VAE = "stabilityai/sd-vae-ft-mse"  # used when it is in the local Hugging Face cache


def vae_model(choice: str, train_dir: str, work: str, fit, *, progress: bool) -> dict[str, Any]:
    """The VAE the latent rows encode with: ``{"model": id or folder, "source": ..., "psnr_db": ...}``.
    ``auto``: Stable Diffusion's VAE when it is in the local Hugging Face cache, else a small VAE fitted on the
    training images (``lossyload fit-vae``, once per (folder, fit config), kept in ``work``; ``psnr_resampling_db``:
    the held-out PSNR of resampling to the same grid, beside the fitted model's ``psnr_db``);
    ``fit``: always that; a hub id, a model folder or ``random:*``: as given."""
    if choice == "auto":
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(PRETRAINED_VAE, "config.json"), str):
            return {"model": PRETRAINED_VAE, "source": "pretrained", "psnr_db": None, "fit": None}
        print(f"vae: {PRETRAINED_VAE} is not in the local Hugging Face cache: fitting a small VAE on the training "
              "images (lossyload fit-vae)", flush=True)
        choice = "fit"
    if choice != "fit":
        return {"model": choice, "source": "random" if choice.startswith("random:") else "given", "psnr_db": None,
                "fit": None}
    from ..media.vae_fit import fit_vae

    out = os.path.join(work, f"vae-{key(dataclasses.asdict(fit), os.path.abspath(train_dir))}")
    done = os.path.join(out, "fit.json")
    if os.path.exists(done):
        with open(done) as f:
            summary = json.load(f)
    else:
        summary = fit_vae(train_dir, out, fit, progress=progress, overwrite=True)  # a folder left by a cut run
    return {"model": os.path.abspath(out), "source": "fitted", "psnr_db": summary["psnr_db"],
            "psnr_resampling_db": summary.get("psnr_resampling_db"), "fit": summary}


def _splits(data: str, tests: tuple[str, ...], what: str) -> dict[str, str]:
    """``{"train", "val" (when there is one), "test"}`` folders of ``data``: test is the first of ``tests`` that
    exists; validation is ``validation/``, else ``val/`` when it is not the test split."""
    test = next((d for d in tests if os.path.isdir(os.path.join(data, d))), None)
    if not os.path.isdir(os.path.join(data, "train")) or test is None:
        raise LossyloadError(f"{data}: expected {what}")
    val = next((d for d in ("validation", "val") if d != test and os.path.isdir(os.path.join(data, d))), None)
    dirs = {"train": "train", **({"val": val} if val else {}), "test": test}
    return {split: os.path.join(data, d) for split, d in dirs.items()}


def image_dirs(data: str | None, work: str, photos, *, progress: bool) -> dict[str, str]:
    """``{"train", "val", "test"}`` folders of ImageFolder root ``data`` (train/, test/ or val/, and validation/
    or val/ for early stopping where there is one); ``None``: the bundled photo set built with ``photos`` (a
    :class:`~lossyload.datasets.photos.PhotosConfig`) under ``work``."""
    if data is None:
        from ..datasets.photos import build_photos

        data = os.path.join(work, f"photos-{key(photos.to_json())}")
        build_photos(data, photos, progress=progress)
    return _splits(data, ("test", "val"), "ImageFolder subfolders train/ and test/ (or val/), and validation/ "
                   "(or val/ beside test/) for early stopping")


def speech_dirs(data: str | None, work: str, keywords, *, workers: int, progress: bool) -> dict[str, str]:
    """``{"train", "val", "test"}`` class folders of ``data`` (validation/ where there is one); ``None``: the
    bundled keyword set built with ``keywords`` (a :class:`~lossyload.datasets.keywords.KeywordsConfig`) under
    ``work``."""
    if data is None:
        from ..datasets.keywords import build_keywords

        data = os.path.join(work, f"keywords-{key(keywords.to_json())}")
        build_keywords(data, keywords, workers=workers, progress=progress)
    return _splits(data, ("test",), "class-folder subfolders train/ and test/ (and validation/ for early stopping)")


def shard_spec(name: str, *, sizes, vae: str, encodec: str) -> tuple[str, dict[str, Any]]:
    """(codec, config) of shard set ``name``."""
    specs: dict[str, tuple[str, dict[str, Any]]] = {
        "jpeg": ("jpeg-dct", {"resize": sizes.resize}),  # the JPEGs themselves (read by the rgb and DCT rows)
        "coefficients": ("jpeg-dct", {"storage": "coefficients", "resize": sizes.resize}),
        "coefficients-16-8": ("jpeg-dct", {"storage": "coefficients", "keep": [16, 8], "resize": sizes.resize}),
        "coefficients-24": ("jpeg-dct", {"storage": "coefficients", "keep": [16, 4], "resize": sizes.resize}),
        "vae": ("vae", {"model": vae, "resolution": sizes.resolution}),
        "mel": ("mel", {}),
        "vq": ("vq", {}),
        "encodec": ("encodec", {"bandwidth": 6.0, "weights": encodec}),
    }
    if name not in specs:
        raise LossyloadError(f"unknown shard set {name!r}; known: {', '.join(specs)}")
    return specs[name]


def shard_sets(names: list[str], dirs: dict[str, str], work: str, *, sizes, vae: str, encodec: str,
               workers: int, progress: bool) -> dict[str, str]:
    """``{"<split>-<set>": url}`` for each shard set in ``names`` and each split of ``dirs`` (``{"train", "val",
    "test"}`` folders, train first), made from those folders (or reused when complete)."""
    urls: dict[str, str] = {}
    for name in dict.fromkeys(names):
        codec, config = shard_spec(name, sizes=sizes, vae=vae, encodec=encodec)
        folder = os.path.join(work, "shards", f"{name}-{key(codec, config, os.path.abspath(dirs['train']))}")
        for split, src in dirs.items():
            dest = urls[f"{split}-{name}"] = os.path.join(folder, split)
            if split != "train" and codec_class(codec).fit_fields:  # the training split's fitted config
                config = config_from_dataset(urls[f"train-{name}"], codec)
            summary = run_job(ShardJob(src=src, dest=dest, codec=codec, config=config, maxcount=1000,
                                       workers=workers, progress=progress, shuffle=True))
            if not summary.already_complete:
                print(summary.format(), flush=True)
    return urls
