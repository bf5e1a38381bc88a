"""``lossyload vae-check IMAGES``: how equivariant a VAE's latents are to flips and crops
(:mod:`lossyload.media.vae_quality`), printed."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..errors import LossyloadError
from ..media.vae_model import image_views, load_vae, pick_device
from ..media.vae_quality import equivariance
from ..shard.items import IMAGE_EXTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="a folder of images (searched recursively)")
    p.add_argument("--model", default="stabilityai/sd-vae-ft-mse",
                   help="hub id (local cache), model directory, random:sd1 or random:tiny")
    p.add_argument("--subfolder")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--count", type=int, default=16, help="images used (default 16)")
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(args.images) for f in fs
                   if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS)[: args.count]
    if len(files) < 2:
        raise LossyloadError(f"{args.images}: vae-check needs at least 2 images, found {len(files)}")
    pixels = []
    for f in files:
        with open(f, "rb") as fh:
            pixels.append(image_views(fh.read(), source=f, resolution=args.resolution, views=1, seed=0,
                                      max_pixels=64_000_000)[0])
    device = pick_device(args.device)
    result = equivariance(load_vae(args.model, args.subfolder, 0, False, device), np.concatenate(pixels), device=device)
    print(f"{args.model} on {len(files)} images from {args.images} at {args.resolution} px:")
    for k, v in result.items():
        print(f"  {k:24s} {v:8.3f}")
    return 0
