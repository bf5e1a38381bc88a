"""The reference trainer: every row of a preset measured on its representation (stored bytes, input bytes,
loader samples/s) and, for rows with a model, trained with what it costs measured beside its accuracy. One
config dataclass; results go to ``results.json`` (rewritten after every row), from which the report is made."""

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
from . import data, measure
from . import rows as rw
from .machine import describe
from .models import create_model
from .presets import Preset, preset

RESULTS = "results.json"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    preset: str = "full"  # "demo" (the main job), "full", "quick" (CI): lossyload.lab.presets
    experiment: str = "all"  # "speech" | "images" | "all"
    rows: tuple[str, ...] | None = None  # row names to run (default: the preset's rows)
    data: str | None = None  # images: ImageFolder root (train/ and val/ or test/); None: the bundled photos
    audio_data: str | None = None  # speech: train/ and test/ class folders of clips; None: the bundled keywords
    out: str = "runs/train"  # results.json, report.md, plots
    work: str | None = None  # bundled data and shard sets (default: ``out``)
    epochs: int | None = None  # None: the preset's per experiment
    batch_size: int | None = None  # None: the preset's per experiment
    lr: float = 3e-3
    width_mult: float | None = None  # MobileNetV2 width (None: the preset's)
    workers: int = 1  # loader worker processes per loader (data builds and shard jobs use every core)
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    vae: str = "random:tiny"  # images: hub id (local cache), model directory, random:tiny, random:sd1
    encodec_weights: str = "auto"  # speech: auto (pretrained when cached), pretrained, random, checkpoint path
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        p = preset(self.preset)
        if self.experiment not in (*rw.EXPERIMENTS, "all"):
            raise LossyloadError(f"unknown experiment {self.experiment!r}; choose from {', '.join(rw.EXPERIMENTS)} or all")
        if self.rows is not None and set(self.rows) - set(rw.NAMES):
            raise LossyloadError(f"unknown row(s) {sorted(set(self.rows) - set(rw.NAMES))}; known: {list(rw.NAMES)}")
        if self.rows is not None and set(self.rows) - set(p.rows):
            raise LossyloadError(f"row(s) {sorted(set(self.rows) - set(p.rows))} are not in preset {self.preset}")

    @property
    def spec(self) -> Preset:
        return preset(self.preset)

    def experiments(self) -> list[str]:
        return list(rw.EXPERIMENTS) if self.experiment == "all" else [self.experiment]

    def rows_of(self, experiment: str) -> list[rw.Row]:
        return rw.rows_of(experiment, self.rows or self.spec.rows)

    def epochs_for(self, row: rw.Row) -> int:
        base = self.epochs or self.spec.epochs[row.experiment]
        return base * (row.epochs_factor if self.spec.epochs_factors else 1)

    def batch_for(self, experiment: str) -> int:
        return self.batch_size or self.spec.batch[experiment]

    def model_of(self, row: rw.Row) -> str | None:
        """The model ``row`` trains in this preset; None: loader figures only."""
        if row.model is None or row.name in self.spec.loader_only:
            return None
        return self.spec.models.get(row.model, row.model)

    def workdir(self) -> str:
        return self.work or self.out


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


def loaders(row: rw.Row, urls: dict[str, str], cfg: TrainConfig) -> tuple[Any, Any]:
    sizes, batch = cfg.spec.sizes, cfg.batch_for(row.experiment)
    opts = rw.options(row, sizes)
    train = make_loader(urls[f"train-{row.shards}"], batch_size=batch, codec=row.codec, options=opts, seed=cfg.seed,
                        transforms=rw.transforms(row, sizes, True), num_workers=cfg.workers)
    test = make_loader(urls[f"test-{row.shards}"], batch_size=batch, codec=row.codec, options=opts, train=False,
                       transforms=rw.transforms(row, sizes, False), drop_last=False)
    return train, test


def build_model(row: rw.Row, name: str, classes: int, cfg: TrainConfig) -> nn.Module:
    width = {"width_mult": cfg.width_mult or cfg.spec.width_mult} if name.startswith("mnv2-") else {}
    torch.manual_seed(cfg.seed)
    return create_model(name, classes=classes, **row.model_args, **width)


def run_row(row: rw.Row, urls: dict[str, str], cfg: TrainConfig) -> dict[str, Any]:
    """Measure ``row``'s representation and, when it has a model in this preset, train it; the report's row."""
    device, batch, sizes = device_of(cfg), cfg.batch_for(row.experiment), cfg.spec.sizes
    url = urls[f"train-{row.shards}"]
    _, index = read_index(url)
    train, test = loaders(row, urls, cfg)
    rate, (x, y) = measure.loader_rate(train, cfg.spec.passes)  # and the first batch, for the per-batch figures
    r: dict[str, Any] = {
        "experiment": row.experiment, "name": row.name, "representation": rw.label(row, sizes),
        "baseline": row.baseline, "published": row.published, "codec": row.codec, "model": cfg.model_of(row),
        "classes": len(index.labels), "train_samples": index.samples, "batch_size": batch,
        "stored_bytes_per_sample": index.bytes / max(index.samples, 1), "payload_bytes_per_sample": data.payload_bytes(url),
        "pcm16_bytes_per_sample": 2 * index.config["sample_rate"] * index.config["seconds"]
        if row.experiment == "speech" else None,
        "input_bytes_per_batch": measure.input_bytes(x), "loader_samples_per_s": rate, "device": str(device),
        **dict.fromkeys(("epochs", "params", "flops_per_sample", "feature_bytes_per_batch", "train_step_ms", "epoch_s",
                         "test_accuracy", "peak_rss_mb", "peak_gpu_mb"))}
    if r["model"] is None:
        return r
    model = build_model(row, r["model"], len(index.labels), cfg).to(device)
    x, y = to_device(x, device), y.to(device)
    r.update(params=measure.count_params(model), flops_per_sample=measure.forward_flops(model, x) / len(y),
             feature_bytes_per_batch=measure.feature_bytes(model, x, y), epochs=cfg.epochs_for(row))
    measure.reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    r["train_step_ms"], r["epoch_s"] = fit(model, train, lr=cfg.lr, epochs=r["epochs"], device=device,
                                           name=f"{row.experiment}/{row.name}", progress=cfg.progress)
    r.update(test_accuracy=accuracy(model, test, device), peak_rss_mb=measure.peak_rss_mb(),
             peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else None)
    return r


def fit(model: nn.Module, train: Any, *, lr: float, epochs: int, device: torch.device, name: str,
        progress: bool = True) -> tuple[float, float]:
    """AdamW with a one-cycle schedule; (mean train step ms, mean epoch seconds incl. loading)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(train))
    loss_fn, steps, epoch_times = nn.CrossEntropyLoss(), [], []
    model.train()
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        bar = tqdm(train, total=len(train), desc=f"{name} {epoch + 1}/{epochs}", disable=not progress, leave=False)
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


def shards_for(experiment: str, rows: list[rw.Row], cfg: TrainConfig) -> dict[str, str]:
    """The data step for ``experiment``: its source folders, then the shard sets its rows read."""
    p, work = cfg.spec, cfg.workdir()
    workers = max(cfg.workers, os.cpu_count() or 1)  # data builds and shard jobs use every core
    if experiment == "speech":
        dirs = data.speech_dirs(cfg.audio_data, work, p.keywords, workers=workers, progress=cfg.progress)
    else:
        dirs = data.image_dirs(cfg.data, work, p.photos, progress=cfg.progress)
    encodec = data.encodec_weights(cfg.encodec_weights) if any(r.shards == "encodec" for r in rows) else ""
    return data.shard_sets([r.shards for r in rows], dirs, work, sizes=p.sizes, vae=cfg.vae, encodec=encodec,
                           workers=workers, progress=cfg.progress)


def run(cfg: TrainConfig, command: str | None = None) -> dict[str, Any]:
    """Every row of the chosen experiments; ``results.json`` in ``cfg.out`` after each row (``command``: how the
    run was started, quoted in the report). Returns its content."""
    os.makedirs(cfg.out, exist_ok=True)
    t0 = time.perf_counter()
    results = {"config": {**dataclasses.asdict(cfg), "sizes": dataclasses.asdict(cfg.spec.sizes)},
               "command": command, "machine": describe(), "rows": []}
    plan = {e: rows for e in cfg.experiments() if (rows := cfg.rows_of(e))}
    total = sum(len(rows) for rows in plan.values())
    for experiment, rows in plan.items():
        print(f"[{experiment}] data: bundled or given sources -> shard sets ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        urls = shards_for(experiment, rows, cfg)
        for row in rows:
            done = len(results["rows"])
            print(f"[{done + 1}/{total}] {experiment}/{row.name} ({time.perf_counter() - t0:.0f} s elapsed)",
                  flush=True)
            r = run_row(row, urls, cfg)
            results["rows"].append(r)
            acc = "loader only" if r["test_accuracy"] is None else f"accuracy {100 * r['test_accuracy']:.1f}%"
            print(f"  {experiment}/{row.name}: {acc}, {r['loader_samples_per_s']:.0f} samples/s", flush=True)
            results["seconds"] = time.perf_counter() - t0
            write_results(results, cfg.out)
    return results


def write_results(results: dict[str, Any], out: str) -> str:
    path = os.path.join(out, RESULTS)
    with open(path + ".partial", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".partial", path)
    return path
