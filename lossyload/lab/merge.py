"""``lossyload-train --merge DIR DIR ... --out OUT``: one results file from runs of one preset that each ran
other experiments (``--experiment speech`` and ``--experiment images`` side by side, say, one core each), so
that one report covers them all. Each experiment must come from exactly one run; the presets, seeds and stop
rules must agree. The merged file keeps every run's command, time and commit (``parts``)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import LossyloadError
from .report import load

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
    owner: dict[str, str] = {}
    for d, r in zip(dirs, runs):
        for experiment in {row["experiment"] for row in r["rows"]}:
            if experiment in owner:
                raise LossyloadError(f"--merge: experiment {experiment} is in both {owner[experiment]} and {d}")
            owner[experiment] = d
    merged: dict[str, Any] = {**runs[0], "rows": [row for r in runs for row in r["rows"]]}
    for key in ("vae", "encodec"):
        found = [r[key] for r in runs if r.get(key)]
        merged.pop(key, None)
        if found:
            merged[key] = found[0]
    merged["parts"] = [{"dir": d, "experiments": sorted({row["experiment"] for row in r["rows"]}),
                        "command": r.get("command"), "seconds": r.get("seconds"),
                        "commit": (r.get("machine") or {}).get("commit")} for d, r in zip(dirs, runs)]
    merged["seconds"] = max((r.get("seconds") or 0.0) for r in runs)
    merged["command"] = " ; ".join(str(r.get("command")) for r in runs)
    os.makedirs(out, exist_ok=True)
    write_results(merged, out)
    return merged
