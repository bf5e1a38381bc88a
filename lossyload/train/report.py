"""The comparison report, made from ``results.json`` alone (so it can be regenerated): a markdown table per
experiment in the seeds' shape (baseline row, then codec-domain rows with ratios to it), the targets met or
missed by how much, and PNG plots."""

from __future__ import annotations

import json
import os
from typing import Any

from ..chart import bar_chart, line_chart
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


def table(rows: list[dict]) -> str:
    base = baseline_of(rows)
    head = ("| representation · model | epochs | test accuracy | vs baseline | parameters | MFLOPs/sample "
            f"| feature memory MiB/batch ({rows[0]['batch_size']}) | vs baseline | input bytes/batch "
            "| stored bytes/sample | loader samples/s | vs baseline | train step ms | epoch s | peak RSS MB | seed |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        acc, feat, rate = r["test_accuracy"], r["feature_bytes_per_batch"], r["loader_samples_per_s"]
        other = base is not None and r is not base
        rel_acc = f"{acc / base['test_accuracy']:.0%}" if other and base["test_accuracy"] else "—"
        rel_feat = f"{base['feature_bytes_per_batch'] / feat:.1f}x less" if other and feat else "—"
        rel_rate = f"{rate / base['loader_samples_per_s']:.1f}x" if other else "—"
        lines.append(f"| {r['representation']} | {r['epochs']} | {100 * acc:.1f}% | {rel_acc} | {r['params']:,} "
                     f"| {r['flops_per_sample'] / 1e6:,.1f} | {feat / MIB:,.2f} | {rel_feat} "
                     f"| {r['input_bytes_per_batch']:,} | {r['stored_bytes_per_sample']:,.0f} | {rate:,.0f} | {rel_rate} "
                     f"| {r['train_step_ms']:.1f} | {r['epoch_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['seed'] or '—'} |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets for this experiment's rows: each met, or missed by how much."""
    named = {r["name"]: r for r in rows}
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
    for experiment, rows in by_experiment(results["rows"]).items():
        first = rows[0]
        parts.append(f"### {experiment}\n\n{first['train_samples']:,} training samples, {first['classes']} classes, "
                     f"batch {first['batch_size']}, device {first['device']}"
                     f"{' (quick mode: tiny data, figures are not meaningful)' if cfg.get('quick') else ''}.\n\n"
                     + table(rows) + "\n\n" + "\n".join(targets(rows)))
    notes = []
    if str(cfg.get("vae", "")).startswith("random:") and any(r["codec"] == "vae" for r in results["rows"]):
        notes.append(f"VAE {cfg['vae']}: RANDOM-initialised weights (no pretrained VAE was given): the latent row "
                     "measures the pipeline, not what real latents are worth.")
    return "\n\n".join(parts + notes) + "\n"


def plots(results: dict[str, Any], out: str) -> list[str]:
    """Per experiment: accuracy vs stored bytes, accuracy vs feature memory, loader samples/s per row."""
    paths = []
    for experiment, rows in by_experiment(results["rows"]).items():
        short = {r["name"]: [r] for r in rows}
        for key, xlabel, scale in (("stored_bytes_per_sample", "stored bytes per sample", 1),
                                   ("feature_bytes_per_batch", "feature memory per batch (MiB)", MIB)):
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
