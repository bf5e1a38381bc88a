"""``lossyload-train`` (and ``lossyload demo``, its ``demo`` preset): run the rows of a preset and write
``results.json``, ``report.md`` and PNG plots; print one table."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from ..errors import LossyloadError, require
from . import report
from .presets import PRESETS
from .rows import EXPERIMENTS, NAMES


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of workers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser, *, preset: str = "demo", out: str = "runs/train") -> None:
    from .trainer import TrainConfig

    d = TrainConfig()
    p.add_argument("--preset", choices=list(PRESETS), default=preset,
                   help="; ".join(f"{k}: {v.about}" for k, v in PRESETS.items()) + f" (default {preset})")
    p.add_argument("--quick", action="store_true", help="the same as --preset quick (about a minute)")
    p.add_argument("--experiment", choices=[*EXPERIMENTS, "all"], default=d.experiment,
                   help="speech (log-mel vs VQ codes vs EnCodec), images (pixels vs resampled pixels vs VAE latents "
                   "vs DCT coefficients), or all (default)")
    p.add_argument("--rows", nargs="+", choices=NAMES, help="only these rows")
    p.add_argument("--data", help="images: ImageFolder root with train/ and val/ (or test/), e.g. Imagenette; "
                   "default: the bundled photo set")
    p.add_argument("--audio-data", help="speech: folder with train/ and test/ class subfolders of clips, e.g. an "
                   "imported Speech Commands (lossyload make-keywords --speech-commands); default: the bundled set")
    p.add_argument("--out", default=out, help=f"results folder (default {out})")
    p.add_argument("--work", help="folder for the bundled data and shard sets (default: --out)")
    p.add_argument("--epochs", type=int, help="the epoch cap per experiment (a row's cap is this times its "
                   "epochs_factor; runs stop earlier at their validation plateau); default: the preset's")
    p.add_argument("--patience", type=int, help="epochs without a better validation accuracy before the learning "
                   "rate drops (from the best weights) or, after the preset's drops, the run stops; default: the "
                   "preset's")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--width-mult", type=float, help="MobileNetV2 width of the image rows (default: the preset's)")
    p.add_argument("--workers", type=_workers, default=d.workers,
                   help="training loaders' workers: auto (the loader picks their count and kind from the codec's "
                   "cost and the cores; docs/batch-path.md) or a number of worker processes (default auto; data "
                   "builds and shard jobs use every core)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads of this process (default: every core); "
                   "1 for each of two runs side by side (--experiment speech, --experiment images; then --merge)")
    p.add_argument("--device", default=d.device, help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--vae", default=d.vae, help="auto (Stable Diffusion's VAE when in the local Hugging Face cache, "
                   "else one fitted with lossyload fit-vae), fit, a hub id, a model folder, or random:tiny "
                   f"(default {d.vae})")
    p.add_argument("--encodec-weights", default=d.encodec_weights,
                   help="auto (pretrained when cached, else random), pretrained, random, or a checkpoint path")
    p.add_argument("--seed", type=int, default=d.seed, help="the first seed; a row with several runs uses the "
                   "seeds from here upward")
    p.add_argument("--seeds", type=int, metavar="N", help="runs of each row behind a target; default: the preset's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (data builds, sharding, training)")
    p.add_argument("--report-only", action="store_true", help="regenerate report.md and the plots from "
                   "OUT/results.json without training")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="write OUT/results.json (and the report) from the "
                   "results of runs of one preset over different experiments, e.g. run side by side; no training")
    p.add_argument("--docs", metavar="PATH", help="also write the report page to PATH (e.g. docs/results.md) with "
                   "its plots copied into the folder of the same name beside it (docs/results/), linked relatively")


def run(args: argparse.Namespace, prog: str = "lossyload-train") -> int:
    from .trainer import TrainConfig
    from .trainer import run as train

    try:
        if args.docs:
            report.docs_folder(args.docs)  # a bad page path fails before training, not after
        require("matplotlib", "lab")  # the plots' library: missing, it fails before training, not after
        if args.merge:
            from .merge import merge

            merge(args.merge, args.out)
        elif not args.report_only:
            import torch

            if args.threads is not None and args.threads < 1:
                raise LossyloadError(f"--threads must be at least 1, got {args.threads}")
            torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
            cfg = TrainConfig(preset="quick" if args.quick else args.preset, experiment=args.experiment,
                              rows=tuple(args.rows) if args.rows else None, data=args.data, audio_data=args.audio_data,
                              out=args.out, work=args.work, epochs=args.epochs, patience=args.patience,
                              batch_size=args.batch_size, lr=args.lr,
                              width_mult=args.width_mult, workers=args.workers, device=args.device, vae=args.vae,
                              encodec_weights=args.encodec_weights, seed=args.seed, seeds=args.seeds,
                              progress=not args.no_progress)
            t0 = time.perf_counter()
            train(cfg, command=" ".join([prog, shlex.join(getattr(args, "argv", []))]).strip())
            took = time.perf_counter() - t0
        report.write(args.out, docs=args.docs)
        print(report.summary(report.load(args.out)))
        if not (args.report_only or args.merge):
            print(f"{prog}: {took / 60:.1f} minutes")
        print(f"{prog}: results.json, {report.REPORT} (the targets, every column) and PNG plots in {args.out}")
        if args.docs:
            print(f"{prog}: the report page in {args.docs}, its plots in {report.docs_folder(args.docs)}/")
    except LossyloadError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lossyload-train", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # quoted in the report
    return run(args)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    add_arguments(p, preset="demo", out="runs/demo")


def run_demo(args: argparse.Namespace) -> int:
    return run(args, prog="lossyload demo")


if __name__ == "__main__":
    sys.exit(main())
