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
from ..bench import memory
from ..bench.machine import describe
from ..bench.payload import payload_bytes
from ..codecs.encodec import choose_weights
from ..errors import LossyloadError
from ..fs import read_index
from . import data, measure
from . import rows as rw
from .models import create_model
from .presets import TARGET_ROWS, Preset, preset
from .schedule import Plateau, StopRule, warmup_lr

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
    epochs: int | None = None  # the epoch cap (None: the preset's per experiment); runs stop at their plateau
    patience: int | None = None  # epochs without a better validation accuracy before a drop/stop (None: preset's)
    batch_size: int | None = None  # None: the preset's per experiment
    lr: float = 3e-3
    width_mult: float | None = None  # MobileNetV2 width (None: the preset's)
    # training loaders' workers: "auto" (the loader picks count and kind from the codec's cost and the cores,
    # docs/batch-path.md) or a count of process workers; data builds and shard jobs use every core
    workers: int | str = "auto"
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    vae: str = "auto"  # images: auto (SD's VAE when cached, else fit one), fit, hub id, model folder, random:tiny
    seeds: int | None = None  # runs of each row behind a target (None: the preset's); other rows run once
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
        chosen = set(self.rows or p.rows)
        for r in rw.ROWS:
            if r.name in chosen and r.teacher and self.model_of(r) and r.teacher not in chosen:
                raise LossyloadError(f"row {r.name} distils from row {r.teacher}: run that row too "
                                     f"(--rows ... {r.teacher})")
        if self.seeds is not None and self.seeds < 1:
            raise LossyloadError("seeds must be at least 1")

    @property
    def spec(self) -> Preset:
        return preset(self.preset)

    def experiments(self) -> list[str]:
        return list(rw.EXPERIMENTS) if self.experiment == "all" else [self.experiment]

    def rows_of(self, experiment: str) -> list[rw.Row]:
        return rw.rows_of(experiment, self.rows or self.spec.rows)

    def epochs_for(self, row: rw.Row) -> int:
        """The row's epoch cap (all stages together)."""
        base = self.epochs or self.spec.epochs[row.experiment]
        return base * (row.epochs_factor if self.spec.epochs_factors else 1)

    def rule_for(self, row: rw.Row) -> StopRule:
        """When each training stage of ``row`` stops: its share of the cap, the preset's patience."""
        cap = max(1, self.epochs_for(row) // row.stages)
        return StopRule(max_epochs=cap, patience=self.patience or self.spec.patience, drops=self.spec.lr_drops,
                        min_epochs=min(cap, self.spec.min_epochs))

    def seeds_for(self, row: rw.Row) -> list[int]:
        """The seeds ``row`` trains with: several for a row behind a target, else one."""
        n = (self.seeds or self.spec.seeds) if row.name in TARGET_ROWS else 1
        return [self.seed + i for i in range(n)]

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


def loaders(row: rw.Row, urls: dict[str, str], cfg: TrainConfig, seed: int) -> tuple[Any, Any | None, Any]:
    """(train, validation or None, test) loaders of ``row``."""
    sizes, batch = cfg.spec.sizes, cfg.batch_for(row.experiment)
    opts = rw.options(row, sizes)
    train = make_loader(urls[f"train-{row.shards}"], batch_size=batch, codec=row.codec, options=opts, seed=seed,
                        transforms=rw.transforms(row, sizes, True), num_workers=cfg.workers,
                        worker_type="auto" if cfg.workers == "auto" else "process")

    def evaluation(split: str) -> Any:
        return make_loader(urls[f"{split}-{row.shards}"], batch_size=batch, codec=row.codec, options=opts,
                           train=False, transforms=rw.transforms(row, sizes, False), drop_last=False)

    return train, evaluation("val") if f"val-{row.shards}" in urls else None, evaluation("test")


def close(*loaders: Any) -> None:
    """Stop the loaders' persistent workers now rather than when they are garbage-collected."""
    for loader in loaders:
        if loader is not None and hasattr(loader, "close"):
            loader.close()


def build_model(row: rw.Row, name: str, classes: int, cfg: TrainConfig, seed: int, **overrides: Any) -> nn.Module:
    args = {**row.model_args, **overrides}
    if name.startswith("mnv2-"):
        args["width_mult"] = cfg.width_mult or cfg.spec.width_mult
    torch.manual_seed(seed)
    return create_model(name, classes=classes, **args)


def run_row(row: rw.Row, urls: dict[str, str], cfg: TrainConfig,
            trained: dict[tuple[str, int], nn.Module]) -> dict[str, Any]:
    """Measure ``row``'s representation and, when it has a model in this preset, train it once per seed; the
    report's row. Trained models go into ``trained`` by (row name, seed) (teachers of later rows)."""
    device, batch, sizes = device_of(cfg), cfg.batch_for(row.experiment), cfg.spec.sizes
    url = urls[f"train-{row.shards}"]
    _, index = read_index(url)
    train, _, _ = loaders(row, urls, cfg, cfg.seed)
    rate, (x, y) = measure.loader_rate(train, cfg.spec.passes)  # and the first batch, for the per-batch figures
    close(train)
    r: dict[str, Any] = {
        "experiment": row.experiment, "name": row.name, "representation": rw.label(row, sizes),
        "baseline": row.baseline, "published": row.published, "codec": row.codec, "model": cfg.model_of(row),
        "ablation": row.ablation, "ablation_of": row.ablation_of, "note": None,
        "classes": len(index.labels), "train_samples": index.samples, "batch_size": batch,
        "stored_bytes_per_sample": index.bytes / max(index.samples, 1), "payload_bytes_per_sample": payload_bytes(url),
        "pcm16_bytes_per_sample": 2 * index.config["sample_rate"] * index.config["seconds"]
        if row.experiment == "speech" else None,
        "input_bytes_per_batch": measure.input_bytes(x), "loader_samples_per_s": rate, "device": str(device),
        **dict.fromkeys(("epochs", "epochs_cap", "validation", "params", "flops_per_sample", "feature_bytes_per_batch",
                         "train_step_ms", "epoch_s", "test_accuracy", "test_accuracy_std", "peak_rss_mb", "peak_gpu_mb")), "seeds": 0, "runs": []}
    if r["model"] is None:
        return r
    model = build_model(row, r["model"], len(index.labels), cfg, cfg.seed).to(device)
    x, y = to_device(x, device), y.to(device)
    r.update(params=measure.count_params(model), flops_per_sample=measure.forward_flops(model, x) / len(y),
             feature_bytes_per_batch=measure.feature_bytes(model, x, y), epochs_cap=cfg.epochs_for(row),
             validation=f"val-{row.shards}" in urls)
    if row.teacher:
        r["note"] = f"distilled from row {row.teacher}"
    memory.reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for seed in cfg.seeds_for(row):
        split_loaders = loaders(row, urls, cfg, seed)
        # the teacher trained with the same seed, else its first seed's model
        teacher = (trained.get((row.teacher, seed)) or trained.get((row.teacher, cfg.seed))) if row.teacher else None
        if row.teacher and teacher is None:
            raise LossyloadError(f"row {row.name} distils from row {row.teacher}, which was not trained: run the "
                                 "teacher row first")
        run, trained[(row.name, seed)] = train_row(row, r["model"], len(index.labels), split_loaders, cfg,
                                                   seed, teacher)
        close(*split_loaders)
        r["runs"].append(run)
        print(f"  {row.experiment}/{row.name} seed {seed}: test accuracy {100 * run['test_accuracy']:.1f}% "
              f"(best validation epoch {run['best_epoch']} of {run['epochs']}, stopped: {run['stopped']})", flush=True)
    r.update(**seed_summary(r["runs"]), peak_rss_mb=memory.peak_rss_mb(),
             peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else None)
    return r


def seed_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's figures over its training runs (seeds): mean test accuracy ± std, mean epochs and times."""
    accs = [run["test_accuracy"] for run in runs]
    return {"seeds": len(accs), "test_accuracy": statistics.mean(accs),
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            **{k: statistics.mean(run[k] for run in runs) for k in ("epochs", "train_step_ms", "epoch_s")
               if all(k in run for run in runs)}}


def train_row(row: rw.Row, name: str, classes: int, data: tuple[Any, Any | None, Any], cfg: TrainConfig,
              seed: int, teacher: nn.Module | None) -> tuple[dict[str, Any], nn.Module]:
    """One training run of ``row`` with ``seed`` on (train, validation, test) loaders, each stage to its plateau
    (:meth:`TrainConfig.rule_for`): ``({"seed", "test_accuracy", "curve", "val_curve", "loss", "epochs",
    "best_epoch", "stopped", "stages", "epoch_s", "train_step_ms"}, the trained model)``. Two stages
    (``row.stages == 2``): binary activations with real weights first, then binary weights from its best
    weights; the run's accuracy is the last stage's best validation epoch's."""
    device, rule = device_of(cfg), cfg.rule_for(row)
    plan = [{"binary_weights": False}, {}] if row.stages == 2 else [{}]
    runs, model = [], None
    for i, overrides in enumerate(plan):
        nxt = build_model(row, name, classes, cfg, seed, **overrides).to(device)
        if model is not None:
            nxt.load_state_dict(model.state_dict())
        model = nxt
        label = f"{row.experiment}/{row.name} seed {seed}" + (f" stage {i + 1}/{len(plan)}" if len(plan) > 1 else "")
        runs.append(fit(model, *data, rule=rule, device=device, name=label, teacher=teacher,
                        lr=row.optim.get("lr", cfg.lr), weight_decay=row.optim.get("weight_decay", 0.05),
                        progress=cfg.progress))
    curve = [a for run in runs for a in run["curve"]]
    last = runs[-1]
    return {"seed": seed, "test_accuracy": last["test_accuracy"], "curve": curve,
            "val_curve": [a for run in runs for a in run["val_curve"]],
            "loss": [v for run in runs for v in run["loss"]], "epochs": len(curve),
            "best_epoch": len(curve) - len(last["curve"]) + last["best_epoch"], "stopped": last["stopped"],
            "stages": [{k: run[k] for k in ("best_epoch", "stopped", "lr_drops")} | {"epochs": len(run["curve"])}
                       for run in runs],
            "epoch_s": statistics.mean(t for run in runs for t in run["epoch_times"]),
            "train_step_ms": statistics.mean(run["step_ms"] for run in runs)}, model


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL divergence from the teacher's class distribution to the student's (ReActNet's distributional loss)."""
    return nn.functional.kl_div(logits.log_softmax(1), teacher_logits.log_softmax(1), log_target=True,
                                reduction="batchmean")


def fit(model: nn.Module, train: Any, val: Any | None, test: Any, *, lr: float, weight_decay: float,
        rule: StopRule, device: torch.device, name: str, teacher: nn.Module | None = None,
        progress: bool = True) -> dict[str, Any]:
    """AdamW until the validation accuracy's plateau (:mod:`lossyload.lab.schedule`; without ``val``: ``rule``'s
    cap with a one-cycle schedule); with a ``teacher``, the loss is half cross entropy, half
    :func:`distill_loss`. The model ends with its best validation epoch's weights. Returns the test (and
    validation) accuracy after each epoch (``curve``, ``val_curve``), the mean training loss per epoch, epoch
    seconds (loading included), the mean train step in ms, ``best_epoch``, ``stopped`` and ``lr_drops``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    cycle = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=rule.max_epochs * len(train)) if val is None \
        else None
    plateau, best_state, step = Plateau(rule), None, 0
    if teacher is not None:
        teacher.eval()
    steps, out = [], {"curve": [], "val_curve": [], "loss": [], "epoch_times": [], "lrs": []}
    while plateau.stopped is None:
        epoch = plateau.epochs
        model.train()
        t_epoch, losses = time.perf_counter(), []
        bar = tqdm(train, total=len(train), desc=f"{name} {epoch + 1}", disable=not progress, leave=False)
        for x, y in bar:
            if cycle is None:
                for group in opt.param_groups:
                    group["lr"] = warmup_lr(lr * rule.factor ** plateau.dropped, step, len(train))
            x, y = to_device(x, device), y.to(device)
            t0 = time.perf_counter()
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(x)
                loss = 0.5 * loss + 0.5 * distill_loss(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cycle is not None:
                cycle.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            steps.append(time.perf_counter() - t0)
            losses.append(loss.item())
            step += 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        out["epoch_times"].append(time.perf_counter() - t_epoch)
        out["loss"].append(statistics.mean(losses) if losses else float("nan"))
        out["lrs"].append(opt.param_groups[0]["lr"])
        out["curve"].append(accuracy(model, test, device))
        score = accuracy(model, val, device) if val is not None else out["curve"][-1]
        out["val_curve"].append(score if val is not None else None)
        action = plateau.update(score if val is not None else float(plateau.epochs))  # no val: the last epoch
        if action == "best":
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif action == "drop" and best_state is not None:
            model.load_state_dict(best_state)
        shown = f"val {100 * score:.1f}% " if val is not None else ""
        print(f"  {name}: epoch {epoch + 1} loss {out['loss'][-1]:.3f} {shown}test {100 * out['curve'][-1]:.1f}% "
              f"({out['epoch_times'][-1]:.1f} s){' lr drop' if action == 'drop' else ''}", flush=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    out.update(step_ms=1e3 * statistics.mean(steps) if steps else 0.0, best_epoch=plateau.best_epoch,
               stopped=plateau.stopped, lr_drops=plateau.dropped, test_accuracy=out["curve"][plateau.best_epoch - 1])
    return out


def accuracy(model: nn.Module, test: Any, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in test:
            correct += int((model(to_device(x, device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / max(total, 1)


def shards_for(experiment: str, rows: list[rw.Row], cfg: TrainConfig) -> tuple[dict[str, str], dict[str, Any], str]:
    """The data step for ``experiment``: its source folders, then the shard sets its rows read; the VAE the
    latent rows encode with (:func:`data.vae_model`) and the EnCodec weights the EnCodec rows use ("" if none)."""
    p, work = cfg.spec, cfg.workdir()
    workers = os.cpu_count() or 1  # data builds and shard jobs use every core
    if experiment == "speech":
        dirs = data.speech_dirs(cfg.audio_data, work, p.keywords, workers=workers, progress=cfg.progress)
    else:
        dirs = data.image_dirs(cfg.data, work, p.photos, progress=cfg.progress)
    encodec = choose_weights(cfg.encodec_weights) if any(r.shards == "encodec" for r in rows) else ""
    vae = {"model": ""}
    if any(r.shards == "vae" for r in rows):
        from ..media.vae_fit import FitVaeConfig

        vae = data.vae_model(cfg.vae, dirs["train"], work, FitVaeConfig(**p.vae_fit), progress=cfg.progress)
    urls = data.shard_sets([r.shards for r in rows], dirs, work, sizes=p.sizes, vae=vae["model"], encodec=encodec,
                           workers=workers, progress=cfg.progress)
    return urls, vae, encodec


def run(cfg: TrainConfig, command: str | None = None) -> dict[str, Any]:
    """Every row of the chosen experiments; ``results.json`` in ``cfg.out`` after each row (``command``: how the
    run was started, quoted in the report). Returns its content."""
    os.makedirs(cfg.out, exist_ok=True)
    t0 = time.perf_counter()
    results = {"config": {**dataclasses.asdict(cfg), "sizes": dataclasses.asdict(cfg.spec.sizes)},
               "command": command, "machine": describe(), "rows": [],
               "stop_rule": stop_record(cfg)}
    plan = {e: rows for e in cfg.experiments() if (rows := cfg.rows_of(e))}
    total = sum(len(rows) for rows in plan.values())
    trained: dict[tuple[str, int], nn.Module] = {}  # (row, seed) -> model: the teachers of later rows
    for experiment, rows in plan.items():
        print(f"[{experiment}] data: bundled or given sources -> shard sets ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        urls, vae, encodec = shards_for(experiment, rows, cfg)
        if vae.get("source"):
            results["vae"] = vae
        if encodec:
            results["encodec"] = {"weights": encodec}
        for row in rows:
            done = len(results["rows"])
            print(f"[{done + 1}/{total}] {experiment}/{row.name} ({time.perf_counter() - t0:.0f} s elapsed)",
                  flush=True)
            r = run_row(row, urls, cfg, trained)
            results["rows"].append(r)
            std = f" ± {100 * r['test_accuracy_std']:.1f}" if r["test_accuracy_std"] is not None else ""
            acc = "loader only" if r["test_accuracy"] is None else f"accuracy {100 * r['test_accuracy']:.1f}%{std}"
            print(f"  {experiment}/{row.name}: {acc}, {r['loader_samples_per_s']:.0f} samples/s", flush=True)
            results["seconds"] = time.perf_counter() - t0
            write_results(results, cfg.out)
    return results


def stop_record(cfg: TrainConfig) -> dict[str, Any]:
    """The stopping rule every row shares (their caps differ), as the report states it."""
    rule = cfg.rule_for(rw.ROWS[0])
    return {"patience": rule.patience, "lr_drops": rule.drops, "factor": rule.factor}


def write_results(results: dict[str, Any], out: str) -> str:
    path = os.path.join(out, RESULTS)
    with open(path + ".partial", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".partial", path)
    return path
