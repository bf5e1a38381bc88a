"""``lossyload-train``: run the seeds' experiments and write ``results.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from ..errors import LossyloadError
from . import report
from .experiments import EXPERIMENTS, ROWS
from .trainer import TrainConfig, run


def parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="lossyload-train", description=__doc__)
    p.add_argument("--experiment", choices=[*EXPERIMENTS, "all"], default=d.experiment,
                   help="speech (log-mel CNN vs VQ + BNN vs EnCodec), images (MobileNetV2 on pixels vs resampled "
                   "pixels vs VAE latents vs DCT coefficients), or all (default)")
    p.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], help="only these rows")
    p.add_argument("--data", help="images: ImageFolder root with train/ and val/ (or test/), e.g. Imagenette; "
                   "default: the bundled photo set")
    p.add_argument("--audio-data", help="speech: folder with train/ and test/ class subfolders of clips, e.g. an "
                   "imported Speech Commands (lossyload make-keywords --speech-commands); default: the bundled set")
    p.add_argument("--out", default=d.out, help=f"results folder (default {d.out})")
    p.add_argument("--work", help="folder for the bundled data and shard sets (default: --out; the main job "
                   "shares runs/demo)")
    p.add_argument("--epochs", type=int, help="default: speech 8, images 6 (quick: 1)")
    p.add_argument("--batch-size", type=int, help="default: speech 64, images 32 (quick: 8)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--width-mult", type=float, default=d.width_mult, help="MobileNetV2 width of the image rows")
    p.add_argument("--workers", type=int, default=d.workers, help="loader workers, and shard-tool processes")
    p.add_argument("--device", default=d.device, help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--vae", default=d.vae, help="hub id (local cache), model directory, random:tiny, random:sd1")
    p.add_argument("--encodec-weights", default=d.encodec_weights,
                   help="auto (pretrained when cached, else random), pretrained, random, or a checkpoint path")
    p.add_argument("--quick", action="store_true", help="tiny data, one epoch: the whole pipeline in about a minute")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--report-only", action="store_true", help="regenerate report.md and the plots from "
                   "OUT/results.json without training")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not args.report_only:
            torch.set_num_threads(max(1, os.cpu_count() or 1))
            run(TrainConfig(experiment=args.experiment, rows=tuple(args.rows) if args.rows else None,
                            data=args.data, audio_data=args.audio_data, out=args.out, work=args.work, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, width_mult=args.width_mult,
                            workers=args.workers, device=args.device, vae=args.vae,
                            encodec_weights=args.encodec_weights, quick=args.quick, seed=args.seed,
                            progress=not args.no_progress))
        print(report.write(args.out))
        print(f"lossyload-train: results.json, {report.REPORT} and PNG plots in {args.out}")
    except LossyloadError as exc:
        print(f"lossyload-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
