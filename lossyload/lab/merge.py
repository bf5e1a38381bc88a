"""``lossyload-train --merge DIR DIR ... --out OUT``: one results file from runs of one preset that each ran
other rows (``--experiment speech`` and ``--experiment images`` side by side, say, one core each, or one
experiment's rows split with ``--rows``, or one row's seeds split with ``--seed S --seeds 1``), so that one
report covers them all. The presets and stop rules must agree. A row in several runs must have been trained
alike there (its settings, not its seeds): its runs of seeds not seen before are joined to it (mean ± std
recomputed over all of them), a seed seen before is kept from the first run (a teacher trained again in
another run); rows come out in the table's order. The merged file keeps every run's command, time, commit and
the rows (and seeds) it gave (``parts``)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import LossyloadError
from .report import load
from .rows import EXPERIMENTS, NAMES

AGREE = ("preset", "epochs", "patience", "batch_size", "lr", "device")  # config fields


def merge(dirs: list[str], out: str) -> dict[str, Any]:
    """The merged results of the runs in ``dirs``, written to ``out``/results.json."""
    from .trainer import write_results

    if len(dirs) < 2:
        raise LossyloadError("--merge needs at least two results folders")
    runs = [load(d) for d in dirs]
    first = runs[0].get("config", {})
    for d, r in zip(dirs[1:], runs[1:]):
        cfg = r.get("config", {})
        differ = [k for k in AGREE if cfg.get(k) != first.get(k)]
        if differ or r.get("stop_rule") != runs[0].get("stop_rule"):
            what = ", ".join(f"{k} {first.get(k)!r} vs {cfg.get(k)!r}" for k in differ) or "the stop rule"
            raise LossyloadError(f"--merge: {dirs[0]} and {d} are not runs of one setting ({what})")
    kept: dict[tuple[str, str], tuple[str, dict]] = {}
    gave: dict[str, list[str]] = {d: [] for d in dirs}
    for d, r in zip(dirs, runs):
        for row in r["rows"]:
            key = (row["experiment"], row["name"])
            if key not in kept:
                kept[key] = (d, row)
                gave[d].append(row["name"] + _seeds_text(row["runs"]))
                continue
            owner, other = kept[key]
            if _how(other) != _how(row):
                raise LossyloadError(f"--merge: row {key[0]}/{key[1]} is in both {owner} and {d}, trained "
                                     "differently")
            have = {run["seed"] for run in other["runs"]}
            new = [run for run in row["runs"] if run["seed"] not in have]
            if new:
                kept[key] = (owner, _joined(other, new))
                gave[d].append(row["name"] + _seeds_text(new))
    order = {name: i for i, name in enumerate(NAMES)}
    rows = sorted((row for _, row in kept.values()), key=lambda row: (EXPERIMENTS.index(row["experiment"])
                                                                       if row["experiment"] in EXPERIMENTS else 99,
                                                                       order.get(row["name"], 99)))
    merged: dict[str, Any] = {**runs[0], "rows": rows}
    for key in ("vae", "encodec"):
        found = [r[key] for r in runs if r.get(key)]
        merged.pop(key, None)
        if found:
            merged[key] = found[0]
    merged["parts"] = [{"dir": d, "experiments": sorted({row["experiment"] for row in r["rows"]}),
                        "rows": gave[d],
                        "command": r.get("command"), "seconds": r.get("seconds"),
                        "commit": (r.get("machine") or {}).get("commit")} for d, r in zip(dirs, runs)]
    merged["seconds"] = max((r.get("seconds") or 0.0) for r in runs)
    merged["command"] = " ; ".join(str(r.get("command")) for r in runs)
    os.makedirs(out, exist_ok=True)
    write_results(merged, out)
    return merged


def _how(row: dict[str, Any]) -> tuple:
    """What must agree for one row trained in two runs to count as the same: its settings, not its seeds or
    timings."""
    return tuple(row.get(k) for k in ("representation", "codec", "model", "batch_size", "train_samples",
                                      "epochs_cap", "params", "flops_per_sample", "feature_bytes_per_batch"))


def _seeds_text(runs: list[dict[str, Any]]) -> str:
    return f" (seed{'s' if len(runs) > 1 else ''} {', '.join(str(r['seed']) for r in runs)})" if runs else ""


def _joined(row: dict[str, Any], new: list[dict[str, Any]]) -> dict[str, Any]:
    """``row`` with the training runs ``new`` (other seeds) added, its per-row figures recomputed over all."""
    from .trainer import seed_summary

    runs = sorted(row["runs"] + new, key=lambda run: run["seed"])
    return {**row, "runs": runs, **seed_summary(runs)}
