"""The comparison report, made from ``results.json`` alone (so it can be regenerated): the targets met or
missed by how much (:mod:`lossyload.lab.targets`), a table per experiment in the seeds' shape (baseline row,
then the other rows with ratios to it; accuracy as mean ± std over seeds), the ablations against the rows they
ablate, PNG plots (accuracy vs bytes, accuracy per epoch, loader rate) and notes on how the run was made."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from typing import Any, Callable
from urllib.parse import quote

from ..bench.chart import bar_chart, line_chart, use_log
from ..bench.machine import format_machine
from ..errors import LossyloadError
from .targets import MIB, accuracy, evaluate, gap, seeds, vae_of, vae_text

REPORT = "report.md"
CHARTS = {  # file suffix -> caption; each experiment gets those its rows have data for (chart_files)
    "accuracy-vs-stored": "test accuracy vs stored bytes per sample",
    "accuracy-vs-feature": "test accuracy vs feature memory per batch",
    "curves": "test accuracy after each epoch (mean over the seeds that trained it; band: min to max)",
    "samples-per-s": "loader samples/s per row",
}


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


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def epochs_cell(r: dict) -> str:
    """Epochs a row trained, over its seeds: ``ran (best validation epoch) / cap, why it stopped``, e.g.
    ``17-19 (best 14-16) / 40, plateau``; the bare count for results without that record."""
    runs = [run for run in r.get("runs") or [] if "best_epoch" in run]
    if not runs:
        return "—" if r.get("epochs") is None else f"{r['epochs']:.0f}"
    stops = ", ".join(sorted({run["stopped"] for run in runs}))
    return (f"{_span([run['epochs'] for run in runs])} (best {_span([run['best_epoch'] for run in runs])}) / "
            f"{r.get('epochs_cap') or '?'}, {stops}")


def caveats(results: dict[str, Any]) -> dict[str, str]:
    """Row name -> what its label must say about the weights it ran with (a random VAE or EnCodec)."""
    vae, weights = vae_of(results).get("source"), encodec_of(results)
    enc = {"random": "RANDOM EnCodec weights", "auto": "EnCodec weights pretrained or random: see Notes"}.get(weights)
    out = {}
    for r in results["rows"]:
        if r["codec"] == "vae" and vae == "random":
            out[r["name"]] = "RANDOM VAE"
        if r["codec"] == "encodec" and enc:
            out[r["name"]] = enc
    return out


def table(rows: list[dict], caveat: dict[str, str] | None = None) -> str:
    """One experiment's full table: every measured column, ratios to its baseline row; "—" where a row has no
    model (loader figures only) or the figure does not apply. Accuracy is the mean ± std over seeds."""
    base, caveat = baseline_of(rows) or {}, caveat or {}
    speech = any(r.get("pcm16_bytes_per_sample") for r in rows)
    head = ("| row | representation (model) | epochs run (best) / cap | test accuracy (mean ± std) | vs baseline | parameters "
            f"| MFLOPs/sample | feature memory MiB/batch ({rows[0]['batch_size']}) | vs baseline | input bytes/batch "
            "| stored bytes/sample | payload bytes/sample" + (" | payload vs 16-bit PCM" if speech else "")
            + " | loader samples/s | vs baseline | train step ms | epoch s | peak RSS MB | published |")
    lines = [head, "|---|---" + "|---:" * (16 if speech else 15) + "|---|"]
    for r in rows:
        other = r is not base
        acc, feat = r["test_accuracy"], r["feature_bytes_per_batch"]
        label = r["representation"] + (f" ({r['model']})" if r.get("model") else "") + (
            f" **{caveat[r['name']]}**" if r["name"] in caveat else "")
        cells = [r["name"], label, epochs_cell(r), accuracy(r),
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


def ablation_table(rows: list[dict]) -> str:
    """The ablation rows: what each changes, and its accuracy against the row it ablates (difference of means)."""
    named = {r["name"]: r for r in rows}
    lines = ["| row | ablation of | what changes | test accuracy (mean ± std) | the ablated row's | difference |",
             "|---|---|---|---:|---:|---:|"]
    for r in (r for r in rows if r.get("ablation_of")):
        of = named.get(r["ablation_of"])
        delta = "—" if r["test_accuracy"] is None or not of or of["test_accuracy"] is None else (
            f"{gap(r, of):+.1f} points")
        lines.append(f"| {r['name']} | {r['ablation_of']} | {r.get('ablation') or '—'} | {accuracy(r)} "
                     f"| {accuracy(of)} | {delta} |")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """The one table the main job prints: every row of every experiment, the headline columns."""
    lines = ["| row | representation | model | stored B/sample | input B/batch | loader samples/s | vs baseline "
             "| MFLOPs/sample | feature MiB/batch | test accuracy |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for experiment, rows in by_experiment(results["rows"]).items():
        base = baseline_of(rows) or {}
        for r in rows:
            lines.append(
                f"| {experiment}/{r['name']} | {r['representation']} | {r.get('model') or 'loader only'} "
                f"| {r['stored_bytes_per_sample']:,.0f} | {r['input_bytes_per_batch']:,} | {r['loader_samples_per_s']:,.0f} "
                f"| {_ratio(r['loader_samples_per_s'], base.get('loader_samples_per_s'), '{:.2f}x')} "
                f"| {_num(r['flops_per_sample'], ',.1f', 1e6)} | {_num(r['feature_bytes_per_batch'], ',.2f', MIB)} "
                f"| {accuracy(r)} |")
    return "\n".join(lines)


Series = dict[str, list[tuple[float, float]]]
Bands = dict[str, list[tuple[float, float, float]]]


def curves(rows: list[dict]) -> tuple[Series, Bands]:
    """Per trained row: (epoch, mean test accuracy %) over the seeds that trained that epoch (runs stop at their
    own plateau), and (epoch, min %, max %) where several did."""
    series: Series = {}
    bands: Bands = {}
    for r in rows:
        runs = [run["curve"] for run in r.get("runs") or [] if run.get("curve")]
        if r["test_accuracy"] is None or not runs:
            continue
        epochs = [[100 * c[i] for c in runs if i < len(c)] for i in range(max(map(len, runs)))]
        series[r["name"]] = [(i + 1, statistics.mean(v)) for i, v in enumerate(epochs)]
        if len(runs) > 1:
            bands[r["name"]] = [(i + 1, min(v), max(v)) for i, v in enumerate(epochs) if len(v) > 1]
    return series, bands


def chart_files(experiment: str, rows: list[dict]) -> list[tuple[str, str]]:
    """(file name, caption) of each plot ``experiment`` gets: the accuracy plots only with a trained row."""
    trained = any(r["test_accuracy"] is not None for r in rows)
    have = {"accuracy-vs-stored": trained, "accuracy-vs-feature": trained, "curves": bool(curves(rows)[0]),
            "samples-per-s": True}
    return [(f"{experiment}-{kind}.png", caption) for kind, caption in CHARTS.items() if have[kind]]


def seed_range(row: dict) -> tuple[float, float] | None:
    """The lowest and highest final test accuracy over a row's seeds, in %; None with fewer than two seeds."""
    accs = [100 * run["test_accuracy"] for run in row.get("runs") or [] if run.get("test_accuracy") is not None]
    return (min(accs), max(accs)) if len(accs) > 1 else None


def draw(kind: str, title: str, rows: list[dict], path: str) -> None:
    """One plot of :data:`CHARTS` for one experiment's rows."""
    ablations = {r["name"] for r in rows if r.get("ablation_of")}
    if kind == "samples-per-s":
        bar_chart([{"representation": r["name"], "rate": r["loader_samples_per_s"]} for r in rows], path, title,
                  value="rate", reference=None, suffix="", xlabel="loader samples/s")
    elif kind == "curves":
        series, bands = curves(rows)
        line_chart(series, path, title, "epoch", "test accuracy (%)", bands=bands, percent=True, epochs=True,
                   band_label="band: min to max over seeds", dashed=ablations)
    else:
        key, xlabel, scale = {"accuracy-vs-stored": ("stored_bytes_per_sample", "stored bytes per sample", 1),
                              "accuracy-vs-feature": ("feature_bytes_per_batch", "feature memory per batch (MiB)",
                                                      MIB)}[kind]
        trained = [r for r in rows if r["test_accuracy"] is not None]
        xs = {r["name"]: r[key] / scale for r in trained}
        bars = {r["name"]: [(xs[r["name"]], *span)] for r in trained if (span := seed_range(r))}
        line_chart({r["name"]: [(xs[r["name"]], 100 * r["test_accuracy"])] for r in trained}, path, title, xlabel,
                   "test accuracy (%), mean over seeds", logx=use_log(xs.values()), percent=True, bands=bars,
                   band_label="bar: min to max over seeds")


def duration(seconds: float) -> str:
    """``42 s``, ``6 min 36 s``, ``1 h 02 min``."""
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s % 60:02d} s" if m else f"{s} s"


def encodec_of(results: dict[str, Any]) -> str:
    """The EnCodec weights the run used: recorded, else the config's choice (``auto`` leaves it open)."""
    recorded = (results.get("encodec") or {}).get("weights")
    return str(recorded or results.get("config", {}).get("encodec_weights") or "auto")


def encodec_line(results: dict[str, Any]) -> str:
    if not any(r["codec"] == "encodec" for r in results["rows"]):
        return "- EnCodec: not used (no encodec row in this run)."
    w = encodec_of(results)
    return "- EnCodec weights: " + {
        "pretrained": "the pretrained checkpoint.",
        "random": "RANDOM-initialised: the encodec rows measure the pipeline, not what real EnCodec codes are worth.",
        "auto": "pretrained when the checkpoint was in the torch hub cache, else RANDOM-initialised; this "
                "results.json does not record which (the run's log says).",
    }.get(w, f"checkpoint {w}.")


def vae_line(results: dict[str, Any]) -> str:
    if not any(r["codec"] == "vae" for r in results["rows"]):
        return "- VAE: not used (no latents row in this run)."
    vae = vae_of(results)
    random = (": the latents row measures the pipeline, not what real latents are worth"
              if vae.get("source") == "random" else "")
    return f"- {vae_text(vae)}{random}."


def per_row(results: dict[str, Any], figure: Callable[[dict], Any]) -> str:
    """``speech: mel 16, vq-bnn 32; images: ...``: ``figure(row)`` for each trained row."""
    return "; ".join(f"{e}: " + ", ".join(f"{r['name']} {figure(r)}" for r in rows) for e, rows in
                     by_experiment([r for r in results["rows"] if r["test_accuracy"] is not None]).items()) or "none"


def baselines_line(results: dict[str, Any]) -> str:
    base = [r for r in results["rows"] if r["baseline"] and r["flops_per_sample"] is not None]
    figures = "; ".join(f"{r['name']} ({r['model']}) {r['flops_per_sample'] / 1e6:,.1f} MFLOPs per sample, "
                        f"{r['feature_bytes_per_batch'] / MIB:,.2f} MiB feature memory per batch of "
                        f"{r['batch_size']}" for r in base)
    return ("- The published column quotes the seed deck's figure for a row; this run's baselines stand beside it"
            + (f": {figures}" if figures else "") + ". The seed deck's models differ from these, so compare the "
            "trade-offs between rows, not the absolute figures.")


def machine_text(m: dict) -> str:
    """:func:`~lossyload.bench.machine.format_machine`, tolerant of what an older results file lacks."""
    if not m.get("cpu"):
        return "not recorded"
    full = {"cores": "?", "python": "?", "versions": {}, **m, "commit": m.get("commit") or "not recorded"}
    return format_machine(full).rstrip("; ")


def stop_line(results: dict[str, Any]) -> str:
    """How the runs stopped (``results["stop_rule"]``; older results trained fixed epochs)."""
    rule = results.get("stop_rule")
    if not rule:
        return "- Epochs: a fixed number per row (this run predates the validation-plateau rule)."
    return (f"- Epochs: each trained row runs until its validation accuracy plateaus (no new best for "
            f"{rule['patience']} epochs: the learning rate drops x{rule['factor']:g} from the best weights, at most "
            f"{rule['lr_drops']} times, then the run stops) or reaches its cap; its test accuracy is that of its best "
            "validation epoch.")


def run_lines(results: dict[str, Any], seconds: float | None) -> list[str]:
    """The run's time and command; for merged runs (``lossyload-train --merge``) each part's."""
    if results.get("parts"):
        return [f"- Runs merged into this report (side by side; wall time {duration(seconds)}): " + "; ".join(
            f"{', '.join(p.get('rows') or p['experiments'])}: `{p['command']}`, {duration(p['seconds']) if p.get('seconds') is not None else 'time not recorded'}, commit "
            f"{p.get('commit') or 'not recorded'}" for p in results["parts"]) + "."]
    return [f"- Run time: {duration(seconds)} in all (data, shards, loader passes and training)." if seconds
            is not None else "- Run time: not recorded.",
            f"- Command: `{results['command']}`." if results.get("command") else "- Command: not recorded."]


def notes(results: dict[str, Any]) -> list[str]:
    """How the run was made: time, command, machine, epochs, seeds, the VAE and EnCodec weights, the baselines."""
    cfg = results.get("config", {})
    devices = sorted({r["device"] for r in results["rows"]})
    seconds = results.get("seconds")
    return [*run_lines(results, seconds),
            f"- Machine: {machine_text(results.get('machine') or {})}; device {', '.join(devices) or '?'}.",
            stop_line(results) + f" Epochs run (best) / cap per trained row: {per_row(results, epochs_cell)}.",
            f"- Seeds per trained row (seed {cfg.get('seed', 0)} upward): {per_row(results, seeds)}.",
            vae_line(results), encodec_line(results), baselines_line(results)]


def section(experiment: str, rows: list[dict], results: dict[str, Any], images: str) -> list[str]:
    """``## <experiment>``: the table, the ablations, the plots."""
    first, quick = rows[0], results.get("config", {}).get("preset") == "quick"
    main = [r for r in rows if not r.get("ablation_of")] or rows
    parts = [f"## {experiment}", f"{first['train_samples']:,} training samples, {first['classes']} classes, batch "
             f"{first['batch_size']}, device {first['device']}"
             f"{' (quick preset: tiny data, figures are not meaningful)' if quick else ''}.",
             table(main, caveats(results))]
    if any(r.get("ablation_of") for r in rows):
        parts += [f"### {experiment} ablations", ablation_table(rows)]
    parts += [f"### {experiment} plots", "\n\n".join(
        f"![{experiment}: {caption}]({images}{quote(name)})" for name, caption in chart_files(experiment, rows))]
    return parts


def markdown(results: dict[str, Any], images: str = "") -> str:
    """The report page; ``images``: the prefix of its PNG links (a folder beside the page, or none)."""
    preset = results.get("config", {}).get("preset", "?")
    parts = [f"# Reference trainer report: {preset} preset",
             "Test accuracy is the mean over a row's seeds ± their standard deviation (a single figure: one seed); "
             "the targets are judged on the means. Regenerate this page from results.json with "
             "`lossyload-train --report-only --out DIR`.", "## Targets", "\n".join(evaluate(results))]
    for experiment, rows in by_experiment(results["rows"]).items():
        parts += section(experiment, rows, results, images)
    return "\n\n".join(parts + ["## Notes", "\n".join(notes(results))]) + "\n"


def plots(results: dict[str, Any], out: str) -> list[str]:
    """Per experiment, the files of :func:`chart_files` drawn into ``out``; returns their paths."""
    paths = []
    for experiment, rows in by_experiment(results["rows"]).items():
        for name, caption in chart_files(experiment, rows):
            paths.append(os.path.join(out, name))
            draw(name.removeprefix(f"{experiment}-").removesuffix(".png"), f"{experiment}: {caption}", rows, paths[-1])
    return paths


def docs_folder(path: str) -> str:
    """The folder of the page's images: ``docs/results.md`` -> ``docs/results``."""
    if not path.endswith(".md") or not os.path.basename(path)[: -len(".md")]:
        raise LossyloadError(f"{path}: --docs expects a .md path (its images go into a folder of the same name)")
    return path[: -len(".md")]


def write_docs(results: dict[str, Any], pngs: list[str], path: str) -> str:
    """The page at ``path`` (``docs/results.md``) with its plots copied into the folder of the same name
    (``docs/results/``) and linked relative to the page; returns the markdown."""
    folder = docs_folder(path)
    os.makedirs(folder, exist_ok=True)
    for png in pngs:
        dst = os.path.join(folder, os.path.basename(png))
        if os.path.abspath(png) != os.path.abspath(dst):
            shutil.copyfile(png, dst)
    text = markdown(results, images=quote(os.path.basename(folder)) + "/")
    with open(path, "w") as f:
        f.write(text)
    return text


def write(out: str, docs: str | None = None) -> str:
    """Regenerate ``report.md`` and the plots in ``out`` from its ``results.json`` (and the page at ``docs``
    with its images, when given); returns the markdown of ``report.md``."""
    results = load(out)
    folder = out if os.path.isdir(out) else os.path.dirname(out)
    pngs = plots(results, folder)
    text = markdown(results)
    with open(os.path.join(folder, REPORT), "w") as f:
        f.write(text)
    if docs:
        write_docs(results, pngs, docs)
    return text
