"""The main job: shard -> stream -> train, pixels against JPEG DCT coefficients, one table.

On the bundled ``photos`` set by default (built offline, see ``lossyload.datasets.photos``), or on any
ImageFolder-layout folder with ``train/`` and ``val/`` (or ``test/``) subfolders, e.g. Imagenette.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import make_loader
from .augment import dct as dct_aug
from .augment import rgb as rgb_aug
from .errors import LossyloadError
from .fs import read_index
from .models import DctNet, PixelNet
from .shard import ShardJob, run_job


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    data: str | None = None  # ImageFolder root with train/ and val/ or test/; None: the bundled photos set
    out: str = "runs/demo"
    epochs: int = 6
    batch_size: int = 32
    size: int = 128  # training crop, pixels (multiple of 16)
    resize: int | None = None  # shard-time short-side resize (e.g. 160 for Imagenette)
    keep: tuple[int, int] = (16, 8)  # coefficients kept by the pre-extracted row
    shard_workers: int = 2
    loader_workers: int = 1
    lr: float = 2e-3
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class Row:
    """One representation: how it is read, and (when ``train``) which model learns from it."""

    label: str
    storage: str  # "jpeg" | "coefficients"
    codec: str
    options: dict
    train: str | None  # "pixel" | "dct" | None (loader figures only)


def rows(cfg: DemoConfig) -> list[Row]:
    s = cfg.size
    return [
        Row(label="rgb · PIL/torchvision", storage="jpeg", codec="rgb", options={"backend": "pil", "crop": s}, train=None),
        Row(label="rgb · libjpeg-turbo", storage="jpeg", codec="rgb", options={"backend": "turbo", "crop": s}, train="pixel"),
        Row(label="jpeg-dct · from JPEG", storage="jpeg", codec="jpeg-dct", options={"crop": s}, train="dct"),
        Row(label="jpeg-dct · pre-extracted 64+2x64", storage="coefficients", codec="jpeg-dct", options={"crop": s}, train=None),
        Row(label=f"jpeg-dct · pre-extracted {cfg.keep[0]}+2x{cfg.keep[1]}", storage=f"coefficients-{cfg.keep[0]}-{cfg.keep[1]}",
            codec="jpeg-dct", options={"crop": s, "keep": cfg.keep}, train="dct"),
    ]


def _transforms(row: Row, size: int, train: bool) -> list:
    if row.codec == "rgb":
        if train:
            return [rgb_aug.RandomResizedCrop(size=size, scale=(0.35, 1.0)), rgb_aug.HFlip(p=0.5)]
        return [rgb_aug.ResizeCenterCrop(size=size)]
    return [dct_aug.RandomCrop(size=size), dct_aug.HFlip(p=0.5)] if train else [dct_aug.CenterCrop(size=size)]


def prepare_data(cfg: DemoConfig) -> tuple[str, str]:
    return image_splits(cfg.data, os.path.join(cfg.out, "photos"))


def image_splits(data: str | None, bundled: str, photos=None) -> tuple[str, str]:
    """(train, test) folders of ImageFolder root ``data``; with ``data=None`` the bundled photo set, built at
    ``bundled`` (with ``photos``, a ``PhotosConfig``, when given)."""
    if data is None:
        from .datasets.photos import PhotosConfig, build_photos

        root = bundled
        build_photos(root, photos or PhotosConfig())
    else:
        root = data
    test = next((os.path.join(root, d) for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), None)
    if not os.path.isdir(os.path.join(root, "train")) or test is None:
        raise LossyloadError(f"{root}: expected ImageFolder subfolders train/ and val/ (or test/)")
    return os.path.join(root, "train"), test


def shard_all(cfg: DemoConfig, train_dir: str, test_dir: str) -> dict[str, str]:
    """Shard both splits in each storage variant (reusing complete shard sets made with the same settings)."""
    variants = {"jpeg": {}, "coefficients": {"storage": "coefficients"},
                f"coefficients-{cfg.keep[0]}-{cfg.keep[1]}": {"storage": "coefficients", "keep": list(cfg.keep)}}
    out = {}
    for split, src in (("train", train_dir), ("test", test_dir)):
        for name, config in variants.items():
            dest = os.path.join(cfg.out, "shards", f"{split}-{name}")
            config = {**config, "resize": cfg.resize}
            out[f"{split}-{name}"] = dest
            if _complete(dest, config):
                continue
            summary = run_job(ShardJob(src=src, dest=dest, codec="jpeg-dct", config=config, maxcount=250,
                                       workers=cfg.shard_workers, overwrite=True, progress=False))
            print(summary.format())
    return out


def _complete(dest: str, config: dict) -> bool:
    try:
        _, index = read_index(dest)
    except LossyloadError:
        return False
    return all(index.config.get(k) == (list(v) if isinstance(v, tuple) else v) for k, v in config.items())


def loader_rate(url: str, row: Row, cfg: DemoConfig, passes: int = 3) -> tuple[float, int]:
    """(median samples/s of ``passes`` single-process passes with augmentation, input bytes of one batch)."""
    ld = make_loader(url, batch_size=cfg.batch_size, codec=row.codec, options=row.options,
                     transforms=_transforms(row, cfg.size, True), seed=cfg.seed)
    return measure_rate(ld, passes)


def measure_rate(ld, passes: int = 3) -> tuple[float, int]:
    """(median samples/s over ``passes`` epochs of loader ``ld``, input bytes of one batch)."""
    from .train.measure import input_bytes, loader_rate

    rate, (x, _) = loader_rate(ld, passes)
    return rate, input_bytes(x)


def train_eval(row: Row, urls: tuple[str, str], classes: int, cfg: DemoConfig) -> tuple[float, float]:
    """(mean train step ms, test accuracy) after ``cfg.epochs`` epochs."""
    torch.manual_seed(cfg.seed)
    model = PixelNet(classes) if row.train == "pixel" else DctNet(classes, keep=row.options.get("keep", (64, 64)))
    train = make_loader(urls[0], batch_size=cfg.batch_size, codec=row.codec, options=row.options, seed=cfg.seed,
                        transforms=_transforms(row, cfg.size, True), num_workers=cfg.loader_workers)
    test = make_loader(urls[1], batch_size=cfg.batch_size, codec=row.codec, options=row.options, train=False,
                       transforms=_transforms(row, cfg.size, False))
    return fit_and_score(model, train, test, epochs=cfg.epochs, lr=cfg.lr, label=row.label)


def fit_and_score(model: nn.Module, train, test, *, epochs: int, lr: float, label: str) -> tuple[float, float]:
    """Train ``model`` on the CPU with the reference trainer's recipe (AdamW, one-cycle) on loader ``train``;
    (mean train step ms, accuracy on ``test``)."""
    from .train.trainer import TrainConfig, accuracy, fit

    cpu = torch.device("cpu")
    step_ms, _ = fit(model, train, TrainConfig(lr=lr, progress=False), epochs, cpu, label)
    return step_ms, accuracy(model, test, cpu)


def run_demo(cfg: DemoConfig) -> list[dict]:
    train_dir, test_dir = prepare_data(cfg)
    urls = shard_all(cfg, train_dir, test_dir)
    results = []
    for row in rows(cfg):
        train_url, test_url = urls[f"train-{row.storage}"], urls[f"test-{row.storage}"]
        _, index = read_index(train_url)
        rate, batch_bytes = loader_rate(train_url, row, cfg)
        r = {"representation": row.label, "stored_bytes_per_sample": index.bytes / index.samples,
             "input_bytes_per_batch": batch_bytes, "loader_samples_per_s": rate, "train_step_ms": None,
             "test_accuracy": None}
        if row.train:
            r["train_step_ms"], r["test_accuracy"] = train_eval(row, (train_url, test_url), len(index.labels), cfg)
        results.append(r)
        print(f"  {row.label}: {rate:.0f} samples/s", flush=True)
    _save(cfg.out, "results.json", cfg, results)
    return results


def _save(out: str, name: str, cfg, results: list[dict]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(os.path.join(out, name), "w") as f:
        json.dump({"config": asdict(cfg), "batch_size": cfg.batch_size, "rows": results}, f, indent=1)


def format_table(results: list[dict], batch_size: int) -> str:
    base = next(r for r in results if "turbo" in r["representation"])
    head = (f"| representation | stored bytes/sample | input bytes/batch ({batch_size}) | loader samples/s "
            "| vs turbo | train step ms | test accuracy |\n|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in results:
        step = "—" if r["train_step_ms"] is None else f"{r['train_step_ms']:.1f}"
        acc = "—" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}%"
        lines.append(f"| {r['representation']} | {r['stored_bytes_per_sample']:,.0f} | {r['input_bytes_per_batch']:,} "
                     f"| {r['loader_samples_per_s']:.0f} | {r['loader_samples_per_s'] / base['loader_samples_per_s']:.2f}x "
                     f"| {step} | {acc} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .demo_audio import AudioDemoConfig

    d, a = DemoConfig(), AudioDemoConfig()
    p.add_argument("--part", choices=["all", "images", "latents", "audio", "train"], default="all",
                   help="which part to run (default all: images, latents, audio, then the reference trainer's "
                   "report, lossyload-train --experiment all, written to OUT/train)")
    p.add_argument("--data", help="ImageFolder root with train/ and val/ (or test/); default: bundled photos set")
    p.add_argument("--audio-data", help="audio class folders train/ and test/; default: bundled keywords set")
    p.add_argument("--out", default=d.out, help=f"work folder (default {d.out})")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--audio-epochs", type=int, default=a.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--size", type=int, default=d.size, help="training crop in pixels, multiple of 16")
    p.add_argument("--resize", type=int, help="shard-time short-side resize (e.g. 160 for Imagenette)")
    p.add_argument("--vae", default="random:tiny",
                   help="VAE of the latent part: hub id (local cache), model directory, random:tiny (default), random:sd1")
    p.add_argument("--encodec-weights", default=a.encodec_weights,
                   help="auto (pretrained when cached, else random), pretrained, random, or a checkpoint path")
    p.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> int:
    from .demo_audio import AudioDemoConfig, format_audio_table, run_audio_demo

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    tables = []
    if args.part in ("all", "images"):
        cfg = DemoConfig(data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                         size=args.size, resize=args.resize, seed=args.seed)
        tables.append(format_table(run_demo(cfg), cfg.batch_size))
    if args.part in ("all", "latents"):
        from .demo_latent import LatentDemoConfig, format_latent_table, run_latent_demo

        lcfg = LatentDemoConfig(data=args.data, out=args.out, vae=args.vae, epochs=args.epochs, seed=args.seed)
        results = run_latent_demo(lcfg)
        _save(lcfg.out, "results-latent.json", lcfg, results)
        tables.append(format_latent_table(results, lcfg.batch_size))
    if args.part in ("all", "audio"):
        acfg = AudioDemoConfig(data=args.audio_data, out=args.out, epochs=args.audio_epochs,
                               encodec_weights=args.encodec_weights, seed=args.seed)
        results = run_audio_demo(acfg)
        _save(acfg.out, "results-audio.json", acfg, results)
        tables.append(format_audio_table(results, acfg.batch_size))
    if args.part in ("all", "train"):
        from .train import TrainConfig, report
        from .train import run as train

        out = os.path.join(args.out, "train")
        train(TrainConfig(out=out, work=args.out, data=args.data, audio_data=args.audio_data, vae=args.vae,
                          encodec_weights=args.encodec_weights, seed=args.seed))
        tables.append(f"Reference trainer (lossyload-train --experiment all; {out}/report.md, results.json, plots):"
                      f"\n\n{report.write(out)}")
    print("\n\n".join(tables))
    return 0
