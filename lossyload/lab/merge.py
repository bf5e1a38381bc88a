"""``lossyload-train --merge DIR DIR ... --out OUT``: one results file from runs of one preset that each ran
other rows (``--experiment speech`` and ``--experiment images`` side by side, say, one core each, or one
experiment's rows split with ``--rows``), so that one report covers them all. The presets, seeds and stop rules
must agree. A row in two runs is kept from the first only if both trained it alike (the teacher of an ablation
run, trained again there); rows come out in the table's order. The merged file keeps every run's command, time,
commit and rows (``parts``)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import LossyloadError
from .report import load
from .rows import EXPERIMENTS, NAMES

AGREE = ("preset", "seed", "seeds", "epochs", "patience", "batch_size", "lr", "device")  # config fields


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
    for d, r in zip(dirs, runs):
        for row in r["rows"]:
            key = (row["experiment"], row["name"])
            if key in kept:
                first, other = kept[key]
                if _how(other) != _how(row):
                    raise LossyloadError(f"--merge: row {key[0]}/{key[1]} is in both {first} and {d}, trained "
                                         "differently")
                continue
            kept[key] = (d, row)
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
                        "rows": [row["name"] for row in r["rows"] if kept[(row["experiment"], row["name"])][0] == d],
                        "command": r.get("command"), "seconds": r.get("seconds"),
                        "commit": (r.get("machine") or {}).get("commit")} for d, r in zip(dirs, runs)]
    merged["seconds"] = max((r.get("seconds") or 0.0) for r in runs)
    merged["command"] = " ; ".join(str(r.get("command")) for r in runs)
    os.makedirs(out, exist_ok=True)
    write_results(merged, out)
    return merged


def _how(row: dict[str, Any]) -> tuple:
    """What must agree for one row trained in two runs to count as the same: its settings, not its timings."""
    return tuple(row.get(k) for k in ("representation", "codec", "model", "batch_size", "train_samples", "seeds",
                                      "epochs_cap", "params"))
