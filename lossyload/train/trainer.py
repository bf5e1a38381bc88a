"""The reference trainer: every row of an experiment trained on its representation, streamed by lossyload,
with what it costs measured beside its accuracy. One config dataclass; results go to ``results.json``
(rewritten after every row), from which the report is made."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import make_loader
from ..errors import LossyloadError
from ..fs import read_index
from ..machine import describe
from . import experiments as ex
from . import measure

RESULTS = "results.json"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    experiment: str = "all"  # "speech" | "images" | "all"
    data: str | None = None  # images: ImageFolder root (train/ and val/ or test/); None: the bundled photos
    audio_data: str | None = None  # speech: train/ and test/ class folders of clips; None: the bundled keywords
    out: str = "runs/train"  # results.json, report.md, plots
    work: str | None = None  # bundled data and shard sets (default: ``out``; the demo shares its own)
    rows: tuple[str, ...] | None = None  # row names to run (default: all rows of the experiment)
    epochs: int | None = None  # None: speech 8, images 6 (1 with quick)
    batch_size: int | None = None  # None: speech 64, images 32 (8 with quick)
    lr: float = 3e-3
    width_mult: float = 0.5  # MobileNetV2 width of the image rows
    workers: int = 1  # loader worker processes per loader; shard-tool processes
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    vae: str = "random:tiny"  # images: hub id (local cache), model directory, random:tiny, random:sd1
    encodec_weights: str = "auto"  # speech: auto (pretrained when cached), pretrained, random, checkpoint path
    quick: bool = False  # tiny data and one epoch: the whole pipeline in about a minute (CI)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.experiment not in (*ex.EXPERIMENTS, "all"):
            raise LossyloadError(f"unknown experiment {self.experiment!r}; choose from {', '.join(ex.EXPERIMENTS)} or all")
        known = {r.name for r in ex.ROWS}
        if self.rows is not None and set(self.rows) - known:
            raise LossyloadError(f"unknown row(s) {sorted(set(self.rows) - known)}; known: {sorted(known)}")

    def experiments(self) -> list[str]:
        return list(ex.EXPERIMENTS) if self.experiment == "all" else [self.experiment]

    def epochs_for(self, experiment: str) -> int:
        return self.epochs or (1 if self.quick else 8 if experiment == "speech" else 6)

    def batch_for(self, experiment: str) -> int:
        return self.batch_size or (8 if self.quick else 64 if experiment == "speech" else 32)

    def workdir(self) -> str:
        return self.work or self.out

    def sizes(self) -> ex.Sizes:
        return ex.Sizes.quick() if self.quick else ex.Sizes()


def device_of(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise LossyloadError(f"--device {cfg.device}: torch sees no CUDA device (use --device cpu)")
    return torch.device(cfg.device)


def to_device(x: measure.Batch, device: torch.device) -> measure.Batch:
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def loaders(row: ex.Row, urls: dict[str, str], cfg: TrainConfig, batch: int) -> tuple[Any, Any]:
    sizes, opts = cfg.sizes(), ex.options(row, cfg.sizes())
    train = make_loader(urls[f"train-{row.shards}"], batch_size=batch, codec=row.codec, options=opts, seed=cfg.seed,
                        transforms=ex.transforms(row, sizes, True), num_workers=cfg.workers)
    test = make_loader(urls[f"test-{row.shards}"], batch_size=batch, codec=row.codec, options=opts, train=False,
                       transforms=ex.transforms(row, sizes, False), drop_last=False)
    return train, test


def train_row(row: ex.Row, urls: dict[str, str], cfg: TrainConfig) -> dict[str, Any]:
    """Train ``row``'s model on its representation; every figure of the report's row."""
    device, batch = device_of(cfg), cfg.batch_for(row.experiment)
    epochs = cfg.epochs_for(row.experiment) * (1 if cfg.quick else row.epochs_factor)
    _, index = read_index(urls[f"train-{row.shards}"])
    train, test = loaders(row, urls, cfg, batch)
    rate, (x, y) = measure.loader_rate(train)  # and the first training batch, for the per-batch figures
    torch.manual_seed(cfg.seed)
    model = ex.build_model(row, len(index.labels), cfg.width_mult).to(device)
    x, y = to_device(x, device), y.to(device)
    figures = {"params": measure.count_params(model), "flops_per_sample": measure.forward_flops(model, x) / len(y),
               "feature_bytes_per_batch": measure.feature_bytes(model, x, y), "input_bytes_per_batch": measure.input_bytes(x)}
    measure.reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms, epoch_s = fit(model, train, cfg, epochs, device, f"{row.experiment}/{row.name}")
    return {"experiment": row.experiment, "name": row.name, "representation": ex.label(row, cfg.sizes()),
            "baseline": row.baseline, "seed": row.seed, "codec": row.codec, "model": row.model,
            "classes": len(index.labels), "train_samples": index.samples, "batch_size": batch, "epochs": epochs,
            **figures, "stored_bytes_per_sample": index.bytes / max(index.samples, 1),
            "loader_samples_per_s": rate, "train_step_ms": step_ms, "epoch_s": epoch_s,
            "test_accuracy": accuracy(model, test, device), "peak_rss_mb": measure.peak_rss_mb(),
            "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else None,
            "device": str(device)}


def fit(model: nn.Module, train: Any, cfg: TrainConfig, epochs: int, device: torch.device,
        name: str) -> tuple[float, float]:
    """AdamW with a one-cycle schedule; (mean train step ms, mean epoch seconds incl. loading)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=epochs * len(train))
    loss_fn, steps, epoch_times = nn.CrossEntropyLoss(), [], []
    model.train()
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        bar = tqdm(train, total=len(train), desc=f"{name} {epoch + 1}/{epochs}", disable=not cfg.progress, leave=False)
        for x, y in bar:
            x, y = to_device(x, device), y.to(device)
            t0 = time.perf_counter()
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            steps.append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        epoch_times.append(time.perf_counter() - t_epoch)
        print(f"  {name}: epoch {epoch + 1}/{epochs} loss {loss.item():.3f} ({epoch_times[-1]:.1f} s)", flush=True)
    return 1e3 * statistics.mean(steps), statistics.mean(epoch_times)


def accuracy(model: nn.Module, test: Any, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in test:
            correct += int((model(to_device(x, device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / max(total, 1)


def shards_for(experiment: str, cfg: TrainConfig) -> dict[str, str]:
    if experiment == "speech":
        return ex.speech_shards(cfg.audio_data, cfg.workdir(), quick=cfg.quick, encodec_weights=cfg.encodec_weights,
                                workers=cfg.workers)
    return ex.image_shards(cfg.data, cfg.workdir(), cfg.sizes(), quick=cfg.quick, vae=cfg.vae, workers=cfg.workers)


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Every row of the chosen experiments; ``results.json`` in ``cfg.out`` after each row. Returns its content."""
    os.makedirs(cfg.out, exist_ok=True)
    results = {"config": dataclasses.asdict(cfg), "machine": describe(), "rows": []}
    for experiment in cfg.experiments():
        urls = shards_for(experiment, cfg)
        for row in ex.rows_of(experiment, cfg.rows):
            results["rows"].append(train_row(row, urls, cfg))
            r = results["rows"][-1]
            print(f"{experiment}/{row.name}: accuracy {100 * r['test_accuracy']:.1f}%, "
                  f"{r['loader_samples_per_s']:.0f} samples/s", flush=True)
            write_results(results, cfg.out)
    return results


def write_results(results: dict[str, Any], out: str) -> str:
    path = os.path.join(out, RESULTS)
    with open(path + ".partial", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".partial", path)
    return path
