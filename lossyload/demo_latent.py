"""The main job, latent part: seed 2's comparison -- full-resolution pixels vs 64 x 64 x 3 resampled pixels vs
64 x 64 x 4 VAE latents -- streamed by lossyload and trained on the CPU, one table in the seed's shape
(accuracy, parameters, stored bytes, input bytes per batch; plus loader samples/s and train step time).

Data: the bundled photo set rebuilt at ImageNet-like sizes (short side 512-640), or an ImageFolder root
(``--data``). Pixels come from the JPEG shards (libjpeg-turbo decode, RandomResizedCrop, flip); latents from
``vae`` shards made at 512 x 512 (int8, recorded quantization; latent-grid translation and flip). The two
64 x 64 rows train the same network (``GridNet``, about 240K parameters as in the seed's 250K); the
full-resolution row trains ``PixelNet`` on 224 x 224 crops. The VAE is random-initialised unless a real
one is given (``--vae stabilityai/sd-vae-ft-mse`` from the local Hugging Face cache, or a directory);
SD-1.x at 512 x 512 takes seconds per image on a CPU, so real weights want a GPU for the shard step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from . import make_loader
from .augment import latent as latent_aug
from .augment import rgb as rgb_aug
from .demo import fit_and_score, image_splits, measure_rate
from .demo_audio import payload_bytes
from .fs import read_index
from .models import GridNet, PixelNet
from .shard import ShardJob, run_job
from .shard.job import config_from_dataset


@dataclass(frozen=True, kw_only=True)
class LatentDemoConfig:
    data: str | None = None  # ImageFolder root with train/ and val/ (or test/); None: bundled photos, 512-640 px
    out: str = "runs/demo"
    vae: str = "random:tiny"  # hub id (local cache), model directory, random:tiny, random:sd1
    resolution: int = 512  # pixels encoded per image: 64 x 64 latents from the SD-family VAEs
    full_size: int = 224  # training crop of the full-resolution pixel row
    small_size: int = 64  # the resampled pixel row
    epochs: int = 6
    batch_size: int = 32
    width: int = 32  # GridNet width: about 240K parameters
    shard_workers: int = 2
    lr: float = 2e-3
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class LatentRow:
    label: str
    shards: str  # "jpeg" | "vae"
    codec: str
    options: dict
    model: str  # "pixel" (PixelNet, full resolution) | "grid" (GridNet, the 64x64 rows)


def rows(cfg: LatentDemoConfig) -> list[LatentRow]:
    g = cfg.resolution // 8
    return [
        LatentRow(label=f"pixels · {cfg.full_size}x{cfg.full_size}x3", shards="jpeg", codec="rgb",
                  options={"crop": cfg.full_size}, model="pixel"),
        LatentRow(label=f"pixels · resampled {cfg.small_size}x{cfg.small_size}x3", shards="jpeg", codec="rgb",
                  options={"crop": cfg.small_size}, model="grid"),
        LatentRow(label=f"vae latents · {g}x{g}x4 int8", shards="vae", codec="vae", options={}, model="grid"),
    ]


def prepare_data(cfg: LatentDemoConfig) -> tuple[str, str]:
    from .datasets.photos import PhotosConfig

    return image_splits(cfg.data, os.path.join(cfg.out, "photos-512"), PhotosConfig(short_side=(512, 640)))


def shard_all(cfg: LatentDemoConfig, train_dir: str, test_dir: str) -> dict[str, str]:
    """JPEG shards and vae shards of both splits; the test split's latents use the training split's
    recorded quantization. Complete shard sets made with the same settings are reused."""
    out = {}
    for split, src in (("train", train_dir), ("test", test_dir)):
        for kind in ("jpeg", "vae"):
            dest = out[f"{split}-{kind}"] = os.path.join(cfg.out, "shards", f"latent-{split}-{kind}")
            codec, config = ("jpeg-dct", {}) if kind == "jpeg" else ("vae", {"model": cfg.vae, "resolution": cfg.resolution})
            if kind == "vae" and split == "test":
                config = config_from_dataset(out["train-vae"], "vae")
            summary = run_job(ShardJob(src=src, dest=dest, codec=codec, config=config, maxcount=500,
                                       workers=cfg.shard_workers, progress=True))
            print(summary.format(), flush=True)
    return out


def _transforms(row: LatentRow, cfg: LatentDemoConfig, train: bool) -> list:
    if row.codec == "vae":
        return [latent_aug.RandomCrop(size=cfg.resolution // 8, padding=4), latent_aug.HFlip(p=0.5)] if train else []
    size = row.options["crop"]
    if train:
        return [rgb_aug.RandomResizedCrop(size=size, scale=(0.35, 1.0)), rgb_aug.HFlip(p=0.5)]
    return [rgb_aug.ResizeCenterCrop(size=size)]


def _model(row: LatentRow, cfg: LatentDemoConfig, classes: int) -> torch.nn.Module:
    if row.model == "pixel":
        return PixelNet(classes)
    return GridNet(4 if row.codec == "vae" else 3, classes, width=cfg.width)


def run_latent_demo(cfg: LatentDemoConfig) -> list[dict]:
    train_dir, test_dir = prepare_data(cfg)
    urls = shard_all(cfg, train_dir, test_dir)
    results = []
    for row in rows(cfg):
        train_url, test_url = urls[f"train-{row.shards}"], urls[f"test-{row.shards}"]
        _, index = read_index(train_url)
        train = make_loader(train_url, batch_size=cfg.batch_size, codec=row.codec, options=row.options,
                            transforms=_transforms(row, cfg, True), seed=cfg.seed)
        test = make_loader(test_url, batch_size=cfg.batch_size, codec=row.codec, options=row.options, train=False,
                           transforms=_transforms(row, cfg, False))
        rate, batch_bytes = measure_rate(train)
        torch.manual_seed(cfg.seed)
        model = _model(row, cfg, len(index.labels))
        step, acc = fit_and_score(model, train, test, epochs=cfg.epochs, lr=cfg.lr, label=row.label)
        results.append({"representation": row.label, "stored_bytes_per_sample": index.bytes / index.samples,
                        "payload_bytes_per_sample": payload_bytes(train_url), "input_bytes_per_batch": batch_bytes,
                        "params": sum(p.numel() for p in model.parameters()), "loader_samples_per_s": rate,
                        "train_step_ms": step, "test_accuracy": acc, "vae": cfg.vae if row.codec == "vae" else None})
        print(f"  {row.label}: {rate:.0f} samples/s, accuracy {100 * acc:.1f}%", flush=True)
    return results


def format_latent_table(results: list[dict], batch_size: int) -> str:
    lines = [f"| input | test accuracy | parameters | stored bytes/sample (tar) | payload bytes/sample "
             f"| input bytes/batch ({batch_size}) | loader samples/s | train step ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['representation']} | {100 * r['test_accuracy']:.1f}% | {r['params']:,} "
            f"| {r['stored_bytes_per_sample']:,.0f} | {r['payload_bytes_per_sample']:,.0f} "
            f"| {r['input_bytes_per_batch']:,} | {r['loader_samples_per_s']:.0f} | {r['train_step_ms']:.1f} |")
    vae = next((r["vae"] for r in results if r["vae"]), None)
    if vae and vae.startswith("random:"):
        lines.append(f"\nVAE: {vae} (RANDOM-initialised weights, not a published codec: no VAE weights could be "
                     "loaded; pass --vae with a hub id in the local cache or a model directory)")
    return "\n".join(lines)
