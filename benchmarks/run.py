"""Every representation against the conventional pipeline of its modality, in one run on the same cores.

    python -m benchmarks.run [--per-class 100] [--voices 100] [--reps 3] [--workers 0,1,2]
                             [--worker-type thread,process] [--no-auto] [--epochs 2] [--device cuda]
                             [--repeat-scale 1] [--storage local,s3] [--out runs/bench]

For each representation (images: rgb with PIL and with libjpeg-turbo, jpeg-dct from JPEG bytes and
pre-extracted, vae int8 latents; audio: log-mel from WAV, vq bit-planes, EnCodec codes) the loader's
samples/s and MB/s (stored bytes) with its default training augmentation, CPU ms per sample (loader worker
processes included), stored and input bytes per sample and the time to the first batch; with each number of
loader workers (thread workers and process workers, and ``num_workers="auto"``), from local disk and from a
local S3 server (moto, started here in its own process on 127.0.0.1). Each pass builds one loader and runs
``--epochs`` epochs on it, as training does: samples/s are those of the epochs after the first (process
workers persist across epochs; the first epoch's start-up is the time to the first batch). With ``--device``
(default: ``cuda`` when there is one) rows with ``make_loader(device=...)`` are added; a table gives the bytes
per sample each path moves to the device (the finished outputs, or the codec's stored integers). A **read
limit** row per shard set reads the same tars without decoding (tar parsing and payload bytes): how close
each loader gets to what the storage delivers. Ratios are against the conventional pipeline of the same
modality (``rgb`` libjpeg-turbo for images, ``mel`` from WAV for audio) measured in the same setting of the
same run; the workers table compares each worker setting with 0 workers. An epoch lists each shard set
several times (``REPEAT``, more for small sets: ``MIN_SAMPLES``; hard links, a valid shard set), a good part of a
second for the fastest loaders of the set.
Repetitions are interleaved across all rows; median (min-max). Each finished pass prints a progress line
(elapsed, estimated time left); the report states the run's duration.

Data: the bundled photo set rebuilt at ImageNet-like sizes (short side 256-320 px, cropped to 224 at load
time) and the bundled keyword-audio set. VAE latents come from the random-initialised tiny VAE and EnCodec
from a random-initialised model when no checkpoint is cached: loader speed and sizes do not depend on the
weights. NVIDIA DALI rows are added by its own benchmark when DALI is installed. The scaling curve is
``python -m benchmarks.scaling``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import fsspec
import torch

from lossyload.codecs.encodec import choose_weights
from lossyload.fs import read_index

from . import audio, common, mixture
from lossyload.bench.chart import bar_chart
from lossyload.bench.machine import describe, format_machine
from .scaling import repeated
from .storage import BUCKET, _free_port, start_s3

IMAGE_SETS = {  # shard set -> (codec, config)
    "jpeg": ("jpeg-dct", {}),
    "coef16": ("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]}),
    "int8": ("vae", {"resolution": 256, "fit_samples": 128, "model": "random:tiny"}),
}


@dataclass(frozen=True)
class Rep:
    """One representation as the loader delivers it."""

    modality: str
    label: str
    shards: str
    codec: str | None  # None: the read limit of the shard set
    options: dict | None = field(default=None, hash=False)
    conventional: bool = False


REPS = [
    Rep("image", "rgb · PIL/torchvision", "jpeg", "rgb", {"backend": "pil", "crop": 224}),
    Rep("image", "rgb · libjpeg-turbo", "jpeg", "rgb", {"backend": "turbo", "crop": 224}, conventional=True),
    Rep("image", "jpeg-dct · from JPEG, 16+2x8", "jpeg", "jpeg-dct", {"keep": [16, 8], "crop": 224}),
    Rep("image", "jpeg-dct · pre-extracted zstd, 16+2x8", "coef16", "jpeg-dct", {"crop": 224}),
    Rep("image", "vae · int8 4x32x32, flip", "int8", "vae", {}),
    Rep("audio", "mel · WAV -> log-mel float32", "mel-wav", "mel", {}, conventional=True),
    Rep("audio", "vq · bit-planes int8", "vq", "vq", {"output": "bits"}),
    Rep("audio", "encodec 6 kbps · codes int16", "encodec", "encodec", {"output": "codes"}),
] + [Rep(m, f"read limit · {s} shards", s, None) for m, s in
     [("image", "jpeg"), ("image", "coef16"), ("image", "int8"), ("audio", "mel-wav"), ("audio", "vq"),
      ("audio", "encodec")]]


@dataclass(frozen=True)
class Setting:
    storage: str  # "local" | "s3"
    workers: int | str  # a count, or "auto" (num_workers="auto", worker_type="auto")
    kind: str = "thread"  # worker_type of the loader ("process" | "thread"); nothing with 0 workers
    device: str | None = None  # make_loader(device=...): the codec's integers moved there and finished there

    @property
    def name(self) -> str:
        name = "auto" if self.workers == "auto" else f"{self.workers}w" + (f" {self.kind}" if self.workers else "")
        return name + (f" -> {self.device}" if self.device else "")


def prepare(out: str, per_class: int, voices: int | None) -> dict[str, str]:
    """Local shard sets by name (built once; reruns reuse them)."""
    urls = common.photo_sets(out, per_class, IMAGE_SETS, maxcount=250)
    sets = audio.prepare(os.path.join(out, "audio"), voices, choose_weights("auto"))
    urls.update({k: v for k, v in sets.items() if k in ("mel-wav", "vq", "encodec")})
    return urls


# How many times an epoch lists each shard set, and the fewest samples an epoch of it holds: long enough that
# an epoch of the set's fastest loaders lasts a good part of a second whatever --per-class and --voices are,
# so what a pass pays once per epoch (the workers' start of the pass, the last batches' drain) stays a small
# share of every row.
REPEAT = {"jpeg": 4, "coef16": 12, "int8": 40, "mel-wav": 4, "vq": 30, "encodec": 30}
MIN_SAMPLES = {"coef16": 4000, "int8": 20000, "vq": 15000, "encodec": 25000}


def repeat(urls: dict[str, str], scale: float, out: str) -> dict[str, str]:
    """Each shard set listed ``REPEAT[name]`` times, or more to hold ``MIN_SAMPLES[name]``, times ``scale``
    (at least once): what one measured epoch reads."""
    times = {}
    for k, url in urls.items():
        base = read_index(url)[1].samples
        times[k] = max(1, round(max(REPEAT[k], -(-MIN_SAMPLES.get(k, 0) // max(base, 1))) * scale))
    return {k: repeated(v, times[k], os.path.join(out, "epochs", k)) for k, v in urls.items()}


def upload(urls: dict[str, str], s3: dict) -> dict[str, str]:
    fs = fsspec.filesystem("s3", **s3)
    remote = {}
    for name, local in urls.items():
        fs.put(local.rstrip("/") + "/", f"{BUCKET}/{name}", recursive=True)
        remote[name] = f"s3://{BUCKET}/{name}"
    return remote


def rows_for(settings: list[Setting]) -> list[tuple[str, str, str | None, tuple[Rep, Setting]]]:
    """``measure`` rows: (label, shard set in its storage, codec, (representation, setting)). Read limits are
    one reader, so they are measured once per storage."""
    rows = []
    for s in settings:
        for rep in REPS:
            if rep.codec is None and s != next(x for x in settings if x.storage == s.storage):
                continue
            rows.append((key(rep, s), f"{rep.shards}/{s.storage}", rep.codec, (rep, s)))
    return rows


def key(rep: Rep, s: Setting) -> str:
    return f"{rep.label} · {s.storage} · {s.name}"


def annotate(results: list[dict], rows: list[tuple]) -> None:
    """Add modality, storage, workers, MB/s and the ratio to the conventional pipeline of the same setting."""
    by_key = {r["representation"]: r for r in results}
    for r, (_, _, _, (rep, s)) in zip(results, rows):
        base = next(x for x in REPS if x.modality == rep.modality and x.conventional)
        conv = by_key[key(base, s)]
        r.update(modality=rep.modality, label=rep.label, storage=s.storage, workers=s.workers, group=rep.modality,
                 setting=s.name, kind=s.kind if s.workers else None, device=s.device,
                 mb_per_s=r["samples_per_s"] * r["stored_bytes_per_sample"] / 1e6,
                 ratio=r["samples_per_s"] / conv["samples_per_s"])


def table(results: list[dict]) -> str:
    lines = ["| modality | representation | storage | workers | samples/s (min-max) | vs conventional | MB/s "
             "| CPU ms/sample | stored B/sample | input B/sample | first batch s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        first = f"{r['first_batch_s']:.3f}" if r["first_batch_s"] is not None else "—"
        per = f"{r['input_bytes_per_sample']:,}" if r["input_bytes_per_sample"] else "—"
        lines.append(
            f"| {r['modality']} | {r['label']} | {r['storage']} | {r['setting'] if 'limit' not in r['label'] else '—'} "
            f"| {r['samples_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) | {r['ratio']:.2f}x "
            f"| {r['mb_per_s']:.1f} | {r['cpu_ms_per_sample']:.3f} | {r['stored_bytes_per_sample']:,.0f} | {per} "
            f"| {first} |")
    return "\n".join(lines)


TARGETS = [  # label, representation, floor (x the conventional pipeline)
    ("vq >= 40x", "vq · bit-planes int8", 40.0),
    ("encodec >= 40x", "encodec 6 kbps · codes int16", 40.0),
    ("vae latents >= 40x", "vae · int8 4x32x32, flip", 40.0),
    ("jpeg-dct pre-extracted >= 8x", "jpeg-dct · pre-extracted zstd, 16+2x8", 8.0),
    ("jpeg-dct from JPEG >= 2x", "jpeg-dct · from JPEG, 16+2x8", 2.0),
]
LATENT = "vae · int8 4x32x32, flip"


def _row(results: list[dict], label: str, storage: str, setting: str) -> dict | None:
    return next((x for x in results if x["label"] == label and x["storage"] == storage
                 and x.get("setting") == setting), None)


def targets(results: list[dict]) -> str:
    """The floors, per setting: met or missed, with the measured figure."""
    settings = sorted({(r["storage"], r["setting"]) for r in results if r["label"] == REPS[0].label})
    lines = ["| target | " + " | ".join(f"{s} {w}" for s, w in settings) + " |", "|---|" + "---:|" * len(settings)]
    for name, label, floor in TARGETS:
        cells = []
        for s, w in settings:
            r = _row(results, label, s, w)
            cells.append(f"{r['ratio']:.2f}x {'met' if r['ratio'] >= floor else 'MISSED'}" if r else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for s, w in settings:  # the latent loader against the raw read limit of its shards (one reader)
        lat = _row(results, LATENT, s, w)
        lim = next(x for x in results if x["label"] == "read limit · int8 shards" and x["storage"] == s)
        frac = lat["samples_per_s"] / lim["samples_per_s"]
        cells.append(f"{100 * frac:.0f}% {'met' if frac >= 0.8 else 'MISSED'}")
    lines.append("| latent loader >= 80% of the read limit | " + " | ".join(cells) + " |")
    return "\n".join(lines)


WORKER_FLOOR = 0.9  # workers against none: at least this ratio
DECODE_BOUND = {"rgb · PIL/torchvision", "rgb · libjpeg-turbo", "jpeg-dct · from JPEG, 16+2x8",
                "mel · WAV -> log-mel float32"}  # here workers should also be faster than none


def paired(r: dict, zero: dict) -> tuple[float, float, float]:
    """``(median, min, max)`` of the ratios of ``r``'s samples/s to ``zero``'s, repetition by repetition (each
    pair measured minutes apart at most, under the same load); the ratio of the medians without ``rates``."""
    a, b = r.get("rates"), zero.get("rates")
    if not a or not b or len(a) != len(b):
        ratio = r["samples_per_s"] / zero["samples_per_s"]
        return ratio, ratio, ratio
    ratios = [x / y for x, y in zip(a, b)]
    return statistics.median(ratios), min(ratios), max(ratios)


def worker_targets(results: list[dict]) -> str:
    """Each representation with workers (1, 2, auto) against 0 workers, same storage and run: the median of
    the per-repetition ratios (min-max), met at :data:`WORKER_FLOOR`, and for the decode-bound ones "faster"
    when above 1."""
    reps = [r for r in REPS if r.codec]
    names = sorted({(r["storage"], r["setting"]) for r in results
                    if r["workers"] and not r.get("device") and r["label"] == REPS[0].label}, key=str)
    lines = ["| representation | " + " | ".join(f"{s} {w} / 0w" for s, w in names) + " |",
             "|---|" + "---:|" * len(names)]
    for rep in reps:
        cells = []
        for s, w in names:
            r, zero = _row(results, rep.label, s, w), _row(results, rep.label, s, "0w")
            ratio, lo, hi = paired(r, zero) if r and zero else (float("nan"),) * 3
            verdict = "met" if ratio >= WORKER_FLOOR else "MISSED"
            if rep.label in DECODE_BOUND:
                verdict += ", faster" if ratio > 1 else ", not faster"
            cells.append(f"{ratio:.2f}x ({lo:.2f}-{hi:.2f}) {verdict}" if hi > lo else f"{ratio:.2f}x {verdict}")
        lines.append(f"| {rep.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def transfer_table(sizes: dict[str, tuple[float, float]]) -> str:
    """Host-to-device bytes per sample: the finished outputs (host path) and the codec's wire form
    (``make_loader(..., device=...)``)."""
    lines = ["| representation | host path B/sample | device path B/sample | fewer bytes |", "|---|---:|---:|---:|"]
    for label, (host, dev) in sizes.items():
        lines.append(f"| {label} | {host:,.0f} | {dev:,.0f} | {host / dev:.1f}x |")
    return "\n".join(lines)


def storage_targets(results: list[dict]) -> str:
    """Each representation from the S3 server against local disk, same workers: met at 70%."""
    names = sorted({r["setting"] for r in results if r["storage"] == "s3" and r["label"] == REPS[0].label})
    if not names or not any(r["storage"] == "local" for r in results):
        return "(no S3 rows in this run)"
    lines = ["| representation | " + " | ".join(f"s3/local {w}" for w in names) + " |", "|---|" + "---:|" * len(names)]
    for rep in [r for r in REPS if r.codec]:
        cells = []
        for w in names:
            r, loc = _row(results, rep.label, "s3", w), _row(results, rep.label, "local", w)
            ratio = r["samples_per_s"] / loc["samples_per_s"] if r and loc else float("nan")
            cells.append(f"{100 * ratio:.0f}% {'met' if ratio >= 0.7 else 'MISSED'}")
        lines.append(f"| {rep.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--voices", type=int, default=100, help="voices of the keyword set (8 clips each)")
    p.add_argument("--repeat-scale", type=float, default=1.0,
                   help="scale the number of times an epoch lists each shard set (REPEAT; default 1)")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts, comma-separated")
    p.add_argument("--worker-type", default="thread,process",
                   help="kinds of loader workers for the counts above 0: thread and/or process, comma-separated")
    p.add_argument("--storage", default="local,s3", help="local and/or s3, comma-separated")
    p.add_argument("--auto", action=argparse.BooleanOptionalAction, default=True,
                   help="add num_workers='auto', worker_type='auto' rows (default: on)")
    p.add_argument("--epochs", type=int, default=2,
                   help="epochs per loader (built once, as in training); samples/s over those after the first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "",
                   help="add rows with make_loader(device=...) (default: cuda when there is one)")
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    storages = [s for s in args.storage.split(",") if s]
    if set(storages) - {"local", "s3"}:
        p.error("--storage takes local and/or s3")
    kinds = [k for k in args.worker_type.split(",") if k]
    if set(kinds) - {"thread", "process"} or not kinds:
        p.error("--worker-type takes thread and/or process")
    counts = [int(w) for w in args.workers.split(",")]
    settings = [Setting(s, w, k) for s in storages for w in counts for k in (kinds if w else kinds[:1])]
    settings += [Setting(s, "auto", "auto") for s in storages if args.auto]
    if args.device:
        settings += [Setting(s, w, "auto" if w == "auto" else kinds[0], args.device) for s in storages
                     for w in (0, "auto")]
    started = time.perf_counter()
    local = repeat(prepare(args.out, args.per_class, args.voices), args.repeat_scale, args.out)
    server = None
    urls = {f"{k}/local": v for k, v in local.items()}
    options: dict[str, dict] = {}
    if "s3" in storages:
        server, s3 = start_s3(_free_port())
        urls.update({f"{k}/s3": v for k, v in upload(local, s3).items()})
        options = {f"{k}/s3": s3 for k in local}
    try:
        torch.set_num_threads(1)
        rows = rows_for(settings)

        def one_pass(url, codec, row, batch, epoch):
            rep, setting = row
            return common.one_pass(url, codec, rep.options, batch, epoch, num_workers=setting.workers,
                                   storage_options=options.get(f"{rep.shards}/{setting.storage}"),
                                   worker_type=setting.kind, epochs=args.epochs, device=setting.device)

        results = common.measure(rows, urls, one_pass, args.reps, args.batch_size, options)
        sizes = {rep.label: common.transfer_bytes(urls[f"{rep.shards}/{storages[0]}"], rep.codec, rep.options,
                                                  args.batch_size, options.get(f"{rep.shards}/{storages[0]}"))
                 for rep in REPS if rep.codec}
        mixed = []
        if "local" in storages:  # a 3-source mixture of the coef16 shards against them as one source
            whole, parts = mixture.prepare(args.out, args.per_class, base=local["coef16"], times=1)
            mixed = mixture.measure(whole, parts, args.reps, args.batch_size)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    annotate(results, rows)
    machine = describe()
    duration = common.clock(time.perf_counter() - started)
    text = (f"Machine: {format_machine(machine)}\nDuration: {duration} (data preparation included)\n\n"
            f"{table(results)}\n\nTargets (ratios in this run):\n\n{targets(results)}\n\n"
            f"Workers against 0 workers (met: at least {WORKER_FLOOR}x; decode-bound rows: faster or not):"
            f"\n\n{worker_targets(results)}\n\n"
            f"Host-to-device bytes per sample (input tensors, labels aside):\n\n{transfer_table(sizes)}\n\n"
            f"S3 against local disk (met: at least 70%):\n\n{storage_targets(results)}\n\n"
            f"Mixtures (coef16 shards split in 3 sources, local, 0 workers; python -m benchmarks.mixture):\n\n"
            f"{mixture.table(mixed) if mixed else '(no local rows in this run)'}")
    common.report(args.out, "run", text, {"machine": machine, "args": vars(args), "rows": results,
                                          "transfer_bytes": sizes, "mixture": mixed, "duration": duration})
    first = settings[0]
    chart_rows = [r for r in results if (r["storage"], r["setting"]) == (first.storage, first.name)
                  and "limit" not in r["label"]]
    bar_chart(chart_rows, os.path.join(args.out, "run.png"), label="label", group="group",
              title=f"loader samples/s vs the conventional pipeline ({first.storage}, {first.workers} workers)",
              xlabel="samples/s as a multiple of the modality's conventional pipeline (median of the reps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
