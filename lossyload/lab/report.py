"""The comparison report, made from ``results.json`` alone (so it can be regenerated): a markdown table per
experiment in the seeds' shape (baseline row, then codec-domain rows with ratios to it), the targets met or
missed by how much, and PNG plots."""

from __future__ import annotations

import json
import os
from typing import Any

from .chart import bar_chart, line_chart
from ..errors import LossyloadError

REPORT = "report.md"
MIB = 2**20


def load(out: str) -> dict[str, Any]:
    path = os.path.join(out, "results.json") if os.path.isdir(out) else out
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as exc:
        raise LossyloadError(f"{path}: cannot read trainer results ({exc})") from exc
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise LossyloadError(f"{path}: not a lossyload-train results file (no 'rows' list)")
    return results


def by_experiment(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["experiment"], []).append(r)
    return out


def baseline_of(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["baseline"]), None)


def _num(v: float | None, fmt: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(v / scale if scale != 1.0 else v, fmt)


def _ratio(v: float | None, base: float | None, fmt: str) -> str:
    return "—" if not v or not base else fmt.format(v / base)


def table(rows: list[dict]) -> str:
    """One experiment's full table: every measured column, ratios to its baseline row; "—" where a row has no
    model (loader figures only) or the figure does not apply."""
    base = baseline_of(rows) or {}
    speech = any(r.get("pcm16_bytes_per_sample") for r in rows)
    head = ("| representation (model) | epochs | test accuracy | vs baseline | parameters | MFLOPs/sample "
            f"| feature memory MiB/batch ({rows[0]['batch_size']}) | vs baseline | input bytes/batch "
            "| stored bytes/sample | payload bytes/sample" + (" | payload vs 16-bit PCM" if speech else "")
            + " | loader samples/s | vs baseline | train step ms | epoch s | peak RSS MB | published |")
    lines = [head, "|---" + "|---:" * (16 if speech else 15) + "|---|"]
    for r in rows:
        other = r is not base
        acc, feat = r["test_accuracy"], r["feature_bytes_per_batch"]
        cells = [r["representation"] + (f" ({r['model']})" if r.get("model") else ""), _num(r["epochs"], "d"),
                 "—" if acc is None else f"{100 * acc:.1f}%",
                 _ratio(acc, base.get("test_accuracy"), "{:.0%}") if other else "—",
                 _num(r["params"], ","), _num(r["flops_per_sample"], ",.1f", 1e6), _num(feat, ",.2f", MIB),
                 _ratio(base.get("feature_bytes_per_batch"), feat, "{:.1f}x less") if other else "—",
                 f"{r['input_bytes_per_batch']:,}", f"{r['stored_bytes_per_sample']:,.0f}",
                 _num(r.get("payload_bytes_per_sample"), ",.0f")]
        if speech:
            cells.append(_ratio(r.get("pcm16_bytes_per_sample"), r.get("payload_bytes_per_sample"), "{:.1f}x"))
        cells += [f"{r['loader_samples_per_s']:,.0f}",
                  _ratio(r["loader_samples_per_s"], base.get("loader_samples_per_s"), "{:.1f}x") if other else "—",
                  _num(r["train_step_ms"], ".1f"), _num(r["epoch_s"], ".1f"), _num(r["peak_rss_mb"], ",.0f"),
                  r.get("published") or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """The one table the main job prints: every row of every experiment, the headline columns."""
    lines = ["| row | representation | model | stored B/sample | input B/batch | loader samples/s | vs baseline "
             "| MFLOPs/sample | feature MiB/batch | test accuracy |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for experiment, rows in by_experiment(results["rows"]).items():
        base = baseline_of(rows) or {}
        for r in rows:
            acc = r["test_accuracy"]
            lines.append(
                f"| {experiment}/{r['name']} | {r['representation']} | {r.get('model') or 'loader only'} "
                f"| {r['stored_bytes_per_sample']:,.0f} | {r['input_bytes_per_batch']:,} | {r['loader_samples_per_s']:,.0f} "
                f"| {_ratio(r['loader_samples_per_s'], base.get('loader_samples_per_s'), '{:.2f}x')} "
                f"| {_num(r['flops_per_sample'], ',.1f', 1e6)} | {_num(r['feature_bytes_per_batch'], ',.2f', MIB)} "
                f"| {'—' if acc is None else f'{100 * acc:.1f}%'} |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The seeds' trade-offs for this experiment's trained rows: each target met, or missed by how much."""
    named = {r["name"]: r for r in rows if r["test_accuracy"] is not None}
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- {'met' if ok else '**missed**'}: {text}")

    if {"mel", "vq-bnn"} <= set(named):
        mel, bnn = named["mel"], named["vq-bnn"]
        share = bnn["test_accuracy"] / mel["test_accuracy"] if mel["test_accuracy"] else 0.0
        line(share >= 0.94, f"VQ + BNN accuracy {100 * bnn['test_accuracy']:.1f}% is {share:.0%} of the mel "
             f"baseline's {100 * mel['test_accuracy']:.1f}% (target >= 94%, seed 79/84 = 94%)")
        less = mel["feature_bytes_per_batch"] / bnn["feature_bytes_per_batch"]
        line(less >= 16, f"VQ + BNN feature memory {bnn['feature_bytes_per_batch'] / MIB:.2f} MiB vs mel "
             f"{mel['feature_bytes_per_batch'] / MIB:.2f} MiB per batch: {less:.1f}x less (target >= 16x, seed 32x)")
    if {"latents", "pixels-small"} <= set(named):
        lat, small = named["latents"], named["pixels-small"]
        gap = 100 * (lat["test_accuracy"] - small["test_accuracy"])
        line(gap > 0, f"latents {100 * lat['test_accuracy']:.1f}% vs resampled pixels of the same input size "
             f"{100 * small['test_accuracy']:.1f}%: {gap:+.1f} points (target > 0, seed +5)")
    if {"dct", "pixels"} <= set(named):
        dct, pix = named["dct"], named["pixels"]
        gap = 100 * (dct["test_accuracy"] - pix["test_accuracy"])
        line(gap >= -2, f"DCT-domain network {100 * dct['test_accuracy']:.1f}% vs pixel baseline "
             f"{100 * pix['test_accuracy']:.1f}%: {gap:+.1f} points (target >= -2)")
        line(dct["flops_per_sample"] < pix["flops_per_sample"],
             f"DCT-domain network {dct['flops_per_sample'] / 1e6:.0f} vs {pix['flops_per_sample'] / 1e6:.0f} "
             f"MFLOPs per sample ({pix['flops_per_sample'] / dct['flops_per_sample']:.2f}x fewer; target: fewer)")
    return out


def markdown(results: dict[str, Any]) -> str:
    cfg, parts = results.get("config", {}), []
    quick = cfg.get("preset") == "quick"
    for experiment, rows in by_experiment(results["rows"]).items():
        first, met = rows[0], targets(rows)
        parts.append(f"### {experiment}\n\n{first['train_samples']:,} training samples, {first['classes']} classes, "
                     f"batch {first['batch_size']}, device {first['device']}"
                     f"{' (quick preset: tiny data, figures are not meaningful)' if quick else ''}.\n\n"
                     + table(rows) + ("\n\n" + "\n".join(met) if met else ""))
    notes = []
    if str(cfg.get("vae", "")).startswith("random:") and any(r["codec"] == "vae" for r in results["rows"]):
        notes.append(f"VAE {cfg['vae']}: RANDOM-initialised weights (no pretrained VAE was given): the latent row "
                     "measures the pipeline, not what real latents are worth.")
    if cfg.get("encodec_weights") in ("auto", "random") and any(r["codec"] == "encodec" for r in results["rows"]):
        notes.append(f"EnCodec weights {cfg['encodec_weights']}: random-initialised unless the pretrained checkpoint "
                     "was in the torch hub cache (the run's log says which).")
    if "seconds" in results:
        m = results.get("machine", {})
        notes.append(f"Preset {cfg.get('preset')}: {results['seconds'] / 60:.1f} minutes in all (data, shards, loader "
                     f"passes and training) on {m.get('cpu', '?')}, {m.get('cores', '?')} cores"
                     + (f", commit {m['commit']}" if m.get("commit") else "")
                     + (f"; command `{results['command']}`" if results.get("command") else "") + ".")
    return "\n\n".join(parts + notes) + "\n"


def plots(results: dict[str, Any], out: str) -> list[str]:
    """Per experiment: accuracy vs stored bytes, accuracy vs feature memory, loader samples/s per row."""
    paths = []
    for experiment, rows in by_experiment(results["rows"]).items():
        short = {r["name"]: [r] for r in rows if r["test_accuracy"] is not None}
        for key, xlabel, scale in (("stored_bytes_per_sample", "stored bytes per sample", 1),
                                   ("feature_bytes_per_batch", "feature memory per batch (MiB)", MIB))[: 2 * bool(short)]:
            path = os.path.join(out, f"{experiment}-accuracy-vs-{key.split('_')[0]}.png")
            line_chart({n: [(r[key] / scale, 100 * r["test_accuracy"])] for n, (r,) in short.items()}, path,
                       f"{experiment}: test accuracy vs {xlabel}", xlabel, "test accuracy (%)", logx=True)
            paths.append(path)
        path = os.path.join(out, f"{experiment}-samples-per-s.png")
        bar_chart([{"representation": r["name"], "rate": r["loader_samples_per_s"]} for r in rows], path,
                  f"{experiment}: loader samples/s per representation", value="rate", reference=None, suffix="")
        paths.append(path)
    return paths


def write(out: str) -> str:
    """Regenerate ``report.md`` and the plots in ``out`` from its ``results.json``; returns the markdown."""
    results = load(out)
    text = markdown(results)
    folder = out if os.path.isdir(out) else os.path.dirname(out)
    plots(results, folder)
    with open(os.path.join(folder, REPORT), "w") as f:
        f.write(text)
    return text
