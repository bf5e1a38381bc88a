"""``lossyload fit-vae SRC OUT``: fit a small VAE on a folder of images (:mod:`lossyload.media.vae_fit`) and
print its held-out PSNR beside that of resampling."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex

from ..errors import LossyloadError
from ..media.vae_fit import ARCHITECTURES, SUMMARY, FitVaeConfig, fit_vae


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = FitVaeConfig()
    p.description = (
        "Fit a small VAE on a folder of images for the vae codec. The default architecture starts as area-average "
        "down / bilinear up resampling to the 8x smaller latent grid and learns residuals on top; the held-out "
        "PSNR of the model and of that resampling are printed side by side and written to OUT/fit.json, and the "
        "best state measured is saved (with resample: never worse than resampling on the held-out images).")
    p.add_argument("src", help="a folder of images (jpg, jpeg, png, webp; searched recursively)")
    p.add_argument("out", help="output folder for the model (config.json, safetensors weights) and fit.json")
    p.add_argument("--architecture", choices=ARCHITECTURES, default=d.architecture,
                   help="resample: resampling + learned residuals (default); autoencoderkl: a diffusers "
                        "AutoencoderKL from random weights")
    p.add_argument("--resolution", type=int, default=d.resolution,
                   help=f"training crop side and held-out image side in pixels (default {d.resolution})")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"training time budget (default {d.seconds:g})")
    p.add_argument("--max-steps", type=int, help="stop after this many steps, if sooner")
    p.add_argument("--checkpoints", type=int, default=d.checkpoints,
                   help=f"held-out evaluations over the budget; the best is saved (default {d.checkpoints})")
    p.add_argument("--holdout", type=float, default=d.holdout, help="fraction of images held out for PSNR")
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--latent-channels", type=int, default=d.latent_channels)
    p.add_argument("--width", type=int, default=d.width, help="resample: residual branch channels")
    p.add_argument("--blocks", type=int, default=d.blocks, help="resample: residual blocks per branch")
    p.add_argument("--posterior-std", type=float, default=d.posterior_std, help="resample: fixed posterior std")
    p.add_argument("--channels", default=",".join(map(str, d.block_out_channels)),
                   help="autoencoderkl: the 4 blocks' channels (default %(default)s)")
    p.add_argument("--layers-per-block", type=int, default=d.layers_per_block, help="autoencoderkl")
    p.add_argument("--kl-weight", type=float, default=d.kl_weight, help="autoencoderkl")
    p.add_argument("--l1-weight", type=float, default=d.l1_weight, help="weight of the L1 loss")
    p.add_argument("--l2-weight", type=float, default=d.l2_weight, help="weight of the mean squared error")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        channels = tuple(int(v) for v in args.channels.split(","))
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(FitVaeConfig) if hasattr(args, f.name)}
        config = FitVaeConfig(**given, block_out_channels=channels)
    except ValueError as exc:
        raise LossyloadError(f"fit-vae: {exc} (--channels takes 4 comma-separated integers)"
                             if "invalid literal" in str(exc) else str(exc)) from exc
    s = fit_vae(args.src, args.out, config, progress=not args.no_progress, overwrite=args.overwrite)
    out = os.path.abspath(args.out)
    print(f"fit-vae: {s['train_images']} training images, {s['holdout_images']} held out, {s['skipped']} unreadable "
          f"skipped, from {args.src}")
    print(format_psnr(s))
    print(f"saved to {out} (scaling_factor {s['scaling_factor']:.4f}; summary in {SUMMARY})")
    print(f"shard with it: lossyload-shard SRC DEST --codec vae --set model={shlex.quote(json.dumps(out))} "
          f"--set resolution={config.resolution}")
    return 0


def format_psnr(s: dict) -> str:
    """The summary's held-out PSNRs side by side, as ``fit-vae`` prints them."""
    c, (channels, h, w) = s["config"], s["latent_shape"]
    gain = s["psnr_db"] - s["psnr_resampling_db"]
    return (f"held-out PSNR at {c['resolution']} px, {channels}x{h}x{w} latents: fitted {s['psnr_db']:.2f} dB "
            f"vs resampling {s['psnr_resampling_db']:.2f} dB (3x{h}x{w}: area down, bilinear up), {gain:+.2f} dB; "
            f"untrained {s['psnr_untrained_db']:.2f} dB; best of {len(s['history'])} evaluations at step "
            f"{s['best_step']} of {s['steps']} ({s['seconds']:.0f} s, {s['device']}, {c['architecture']})")
