"""``lossyload preview URL``: a PNG grid of a vae shard set's first samples, drawn through a linear
latent-to-RGB map (:mod:`lossyload.media.latent_rgb`)."""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import LossyloadError
from ..media.latent_rgb import apply_linear_map, dataset_map, grid_image, to_uint8


def write_preview(url: str, out: str, *, count: int = 16, columns: int = 8, which: str = "fitted",
                  upscale: int = 4) -> list[str]:
    """Write the PNG grid of the first ``count`` samples of vae shard set ``url`` to ``out``; their labels."""
    from .. import open_dataset
    from ..fs import read_index

    _, index = read_index(url)
    if index.codec != "vae":  # checked before open_dataset, which would reject the vae option first
        raise LossyloadError(f"{url}: preview needs a vae shard set, this one is {index.codec!r}")
    ds = open_dataset(url, train=False, shuffle=False, options={"scaled": True}, transforms=[])
    weights = dataset_map(ds.index.config, which)
    latents, labels = [], []
    for x, y in ds:
        latents.append(x.numpy())
        labels.append(ds.labels[y])
        if len(latents) >= count:
            break
    if not latents:
        raise LossyloadError(f"{url}: holds no samples")
    grid_image(to_uint8(apply_linear_map(np.stack(latents), weights)), columns, upscale).save(out)
    return labels


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="a vae shard set (directory or index.json)")
    p.add_argument("--out", default="preview.png", help="PNG to write (default preview.png)")
    p.add_argument("--count", type=int, default=16, help="samples in the grid (default 16)")
    p.add_argument("--columns", type=int, default=8)
    p.add_argument("--map", default="fitted", help="fitted (recorded in the index), sd1 or sdxl (built in)")
    p.add_argument("--upscale", type=int, default=4, help="enlarge each latent cell this many times")


def run(args: argparse.Namespace) -> int:
    labels = write_preview(args.url, args.out, count=args.count, columns=args.columns, which=args.map,
                           upscale=args.upscale)
    shown = ", ".join(labels[: args.columns]) + (" ..." if len(labels) > args.columns else "")
    print(f"{args.out}: {len(labels)} samples ({shown})")
    return 0
