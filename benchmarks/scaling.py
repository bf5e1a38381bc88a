"""Loader cost as the dataset grows: samples/s and peak memory at 1x, 2x, 4x, ... the same data.

    python -m benchmarks.scaling [--per-class 100] [--multiples 1,2,4,8,16] [--reps 3] [--out runs/bench-scaling]
    python -m benchmarks.scaling --tiny 1000 --multiples 1,10,100   # 1,000 to 100,000 tiny samples

The index's own costs up to 100,000 shards / 10 million samples: ``python -m benchmarks.large_index``.

Data: the bundled photo set (10 classes, short side 256-320) sharded once (cached: ``--out/base-<per class>``)
as pre-extracted JPEG DCT coefficients (jpeg-dct, storage "coefficients", keep 16 x 8), chosen over int8 VAE
latents (random:tiny) as far cheaper to make (100 images: 0.5 s against 12 s on 2 cores). The dataset of
multiple m (``--out/x<m>``) lists every base shard m times under new names (hard links), a valid shard set.
``--tiny N``: the base is instead N tiny photos (16 x 16 px, 100 per shard; :func:`build_tiny`), loaded with a
16-px crop, so that a set of 100,000 samples is quick to build and to read.

Each size is measured in a fresh Python process, so its peak RSS is its own: one warm-up batch (unshuffled:
it fills no buffer), then the kernel's peak-RSS record is reset (Linux ``/proc/self/clear_refs``) and one epoch
of ``make_loader(url, batch_size=64, seed=0, drop_last=False)`` is timed (0 workers, 1 torch thread, every
sample counted). Per size: samples/s, seconds, peak RSS of the process (``VmHWM``, start-up included) and
of the epoch, RSS before the epoch and growth during it (MB = 10^6 bytes). Sizes are interleaved over
``--reps``; samples/s, seconds and RSS before are medians, peaks and growth maxima.

"Linear" and "flat", as the run reports them: cost is linear when samples/s does not depend on dataset size:
the samples/s spread across sizes, (max - min) / median in %. Memory is flat when the epoch's peak RSS does
not grow with the number of shards or samples: its spread across sizes, max - min in MB. The loader keeps a
shuffle buffer of up to 1000 undecoded samples (its default): a base smaller than that fills it only at larger
multiples, and memory is flat from there on, bounded by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lossyload.fs import read_index
from lossyload.index import INDEX_NAME, shard_name
from lossyload.bench.memory import peak_rss_mb, reset_peak, status_mb

from lossyload.bench.chart import line_chart
from lossyload.bench.machine import describe, format_machine

CODEC, CONFIG = "jpeg-dct", {"storage": "coefficients", "keep": [16, 8]}
REPO = Path(__file__).resolve().parent.parent  # where ``python -m benchmarks.scaling`` runs the child


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures."""
    per_class: int = 100
    multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    reps: int = 3
    batch_size: int = 64
    out: str = "runs/bench-scaling"
    tiny: int = 0  # > 0: a base of this many tiny photos instead of the photo set


TINY_SIDE = 16  # px: the tiny photos, and the crop they are loaded with


def build_base(out: str, per_class: int) -> str:
    """The base shard set (built once, reused): photos sharded as DCT coefficients; returns its URL."""
    from lossyload.datasets.photos import PhotosConfig, build_photos
    from lossyload.shard import ShardJob, run_job

    photos, dest = os.path.join(out, f"photos-{per_class}"), os.path.join(out, f"base-{per_class}")
    if not os.path.exists(os.path.join(dest, INDEX_NAME)):
        build_photos(photos, PhotosConfig(train_per_class=per_class, test_per_class=1, short_side=(256, 320)),
                     progress=False)
        run_job(ShardJob(src=os.path.join(photos, "train"), dest=dest, codec=CODEC, config=CONFIG, maxcount=100,
                         workers=os.cpu_count() or 1, progress=False))
    return dest


def build_tiny(dest: str, samples: int, maxcount: int = 100) -> str:
    """A shard set of ``samples`` tiny seeded photos (16 x 16 px, 10 classes) as DCT coefficients (built once)."""
    import io

    import numpy as np
    from PIL import Image

    from lossyload.shard import ShardJob, run_job

    if os.path.exists(os.path.join(dest, INDEX_NAME)):
        return dest
    src = dest + "-photos"
    rng = np.random.default_rng(0)
    for i in range(samples):
        d = os.path.join(src, f"c{i % 10}")
        os.makedirs(d, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (TINY_SIDE, TINY_SIDE, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        Path(d, f"{i:07d}.jpg").write_bytes(buf.getvalue())
    run_job(ShardJob(src=src, dest=dest, codec=CODEC, config=CONFIG, maxcount=maxcount, shuffle=True,
                     workers=os.cpu_count() or 1, progress=False))
    shutil.rmtree(src)
    return dest


def link(src: str, dst: str) -> None:
    """Hard-link ``src`` as ``dst`` (a copy where links are not possible)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def repeated(base_url: str, multiple: int, dest: str) -> str:
    """Write at ``dest`` the shard set listing every base shard ``multiple`` times; returns its URL."""
    root, index = read_index(base_url)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    for name in index.assets:  # codec side files travel with the index
        link(os.path.join(root, name), os.path.join(dest, name))
    shards = []
    for i in range(multiple * len(index.shards)):
        s = index.shards[i % len(index.shards)]
        again = i // len(index.shards)
        if not again:
            link(os.path.join(root, s.url), os.path.join(dest, shard_name(i)))
            shards.append(dataclasses.replace(s, url=shard_name(i)))
            continue
        # a repeat is a copy with `again` more zero blocks after the tar's end: the same samples, its own sha256
        # (an index listing one sha256 twice is refused, as a shard listed twice would be read twice)
        with open(os.path.join(root, s.url), "rb") as f:
            data = f.read() + bytes(512 * again)
        with open(os.path.join(dest, shard_name(i)), "wb") as f:
            f.write(data)
        shards.append(dataclasses.replace(s, url=shard_name(i), bytes=len(data),
                                          sha256=hashlib.sha256(data).hexdigest()))
    with open(os.path.join(dest, INDEX_NAME), "w") as f:
        f.write(dataclasses.replace(index, shards=shards).to_json())
    return dest


def epoch(url: str, batch_size: int, crop: int | None = None) -> dict:
    """One warm-up batch, then one timed epoch over every sample of ``url`` (runs in the child process)."""
    import torch

    from lossyload import make_loader

    torch.set_num_threads(1)
    options = {"crop": crop} if crop else None
    next(iter(make_loader(url, batch_size=batch_size, seed=0, drop_last=False, shuffle=False, options=options)))
    t0 = time.perf_counter()
    loader = make_loader(url, batch_size=batch_size, seed=0, drop_last=False, options=options)
    opened = time.perf_counter() - t0
    gc.collect()
    startup_peak, reset = peak_rss_mb(), reset_peak()
    before = status_mb("VmRSS") or peak_rss_mb()  # no /proc: the peak so far, an upper bound
    t0, n, first = time.perf_counter(), 0, 0.0
    for _, y in loader:
        if not n:
            first = time.perf_counter() - t0
        n += len(y)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()  # since the reset: the epoch's own peak (else the process's, an upper bound)
    return {"samples": n, "seconds": seconds, "rss_before_mb": before, "epoch_peak_rss_mb": peak,
            "peak_rss_mb": max(peak, startup_peak), "epoch_peak_exact": reset, "open_s": opened,
            "first_batch_s": opened + first}


def run_child(url: str, batch_size: int, crop: int | None = None) -> dict:
    """:func:`epoch` in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--epoch", url, "--batch-size", str(batch_size)]
    cmd += ["--crop", str(crop)] if crop else []
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def aggregate(multiple: int, url: str, runs: list[dict]) -> dict:
    """The row of one size from its runs; every run must have delivered every sample of the index."""
    _, index = read_index(url)
    if any(r["samples"] != index.samples for r in runs):
        raise RuntimeError(f"x{multiple}: epochs delivered {[r['samples'] for r in runs]} of {index.samples}")
    rates, median = [r["samples"] / r["seconds"] for r in runs], statistics.median
    return {"multiple": multiple, "shards": len(index.shards), "samples": index.samples,
            "samples_per_s": median(rates), "spread": [min(rates), max(rates)],
            "seconds": median(r["seconds"] for r in runs), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "epoch_peak_rss_mb": max(r["epoch_peak_rss_mb"] for r in runs),
            "rss_before_mb": median(r["rss_before_mb"] for r in runs),
            "rss_growth_mb": max(r["epoch_peak_rss_mb"] - r["rss_before_mb"] for r in runs),
            "open_s": median(r["open_s"] for r in runs), "first_batch_s": median(r["first_batch_s"] for r in runs),
            "epoch_peak_exact": all(r["epoch_peak_exact"] for r in runs)}


def measure_sizes(base_url: str, multiples: list[int], out: str, batch_size: int = 64, reps: int = 1,
                  crop: int | None = None) -> list[dict]:
    """One row per multiple of the base: shards, samples, samples/s (median, min-max), seconds, RSS in MB."""
    urls = {m: repeated(base_url, m, os.path.join(out, f"x{m}")) for m in multiples}
    root, index = read_index(base_url)
    for s in index.shards:  # read once: no size pays for a cold page cache
        Path(root, s.url).read_bytes()
    runs: dict[int, list[dict]] = {m: [] for m in multiples}
    for _ in range(reps):  # interleaved: a drift in machine speed hits every size alike
        for m in multiples:
            runs[m].append(run_child(urls[m], batch_size, crop))
    return [aggregate(m, urls[m], runs[m]) for m in multiples]


def summary(rows: list[dict]) -> dict:
    """The spreads across sizes: samples/s, open time and peak RSS in % of the median, peak RSS in MB."""
    rates, peaks = [r["samples_per_s"] for r in rows], [r["epoch_peak_rss_mb"] for r in rows]
    firsts = [r["first_batch_s"] for r in rows]
    return {"samples_per_s_spread_pct": 100 * (max(rates) - min(rates)) / statistics.median(rates),
            "peak_rss_spread_mb": max(peaks) - min(peaks),
            "peak_rss_spread_pct": 100 * (max(peaks) - min(peaks)) / statistics.median(peaks),
            "first_batch_s_spread_pct": 100 * (max(firsts) - min(firsts)) / max(statistics.median(firsts), 1e-9)}


def table(rows: list[dict]) -> str:
    """The markdown table of the rows and a line with the spreads across sizes."""
    lines = ["| size | shards | samples | open s | open to first batch s | samples/s (min-max) | seconds "
             "| peak RSS MB (process) | peak RSS MB (epoch) | RSS before epoch MB | RSS growth in epoch MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['multiple']}x | {r['shards']} | {r['samples']:,} | {r['open_s']:.4f} "
                     f"| {r['first_batch_s']:.3f} "
                     f"| {r['samples_per_s']:,.0f} "
                     f"({r['spread'][0]:,.0f}-{r['spread'][1]:,.0f}) | {r['seconds']:.2f} | {r['peak_rss_mb']:.1f} "
                     f"| {r['epoch_peak_rss_mb']:.1f} | {r['rss_before_mb']:.1f} | {r['rss_growth_mb']:.1f} |")
    s = summary(rows)
    exact = "" if all(r["epoch_peak_exact"] for r in rows) else " (epoch peaks are process peaks: no clear_refs here)"
    flat = lambda pct: "flat" if pct <= 10 else "NOT flat"  # noqa: E731
    lines.append(f"\nAcross sizes: samples/s spread {s['samples_per_s_spread_pct']:.1f}% of the median "
                 f"({flat(s['samples_per_s_spread_pct'])}); open to first batch {s['first_batch_s_spread_pct']:.1f}% "
                 f"({flat(s['first_batch_s_spread_pct'])}); epoch peak RSS {s['peak_rss_spread_mb']:.1f} MB = "
                 f"{s['peak_rss_spread_pct']:.1f}% ({flat(s['peak_rss_spread_pct'])}){exact}.")
    return "\n".join(lines)


def charts(rows: list[dict], out: str) -> list[str]:
    """The two panels of the scaling curve as PNGs under ``out``."""
    paths = [os.path.join(out, "scaling-rate.png"), os.path.join(out, "scaling-rss.png")]
    line_chart({"samples/s (median)": [(r["samples"], r["samples_per_s"]) for r in rows]}, paths[0],
               "Loader samples/s as the dataset grows", "samples in the dataset", "samples/s", logx=True, yzero=True,
               bands={"samples/s (median)": [(r["samples"], *r["spread"]) for r in rows]},
               band_label="band: min to max over the reps")
    line_chart({"peak RSS in the epoch": [(r["samples"], r["epoch_peak_rss_mb"]) for r in rows],
                "RSS before the epoch": [(r["samples"], r["rss_before_mb"]) for r in rows]}, paths[1],
               "Loader process memory as the dataset grows", "samples in the dataset", "RSS (MB)", logx=True,
               yzero=True)
    return paths


def multiples_arg(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``: positive integers."""
    try:
        ms = tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        ms = ()
    if not ms or min(ms) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers, e.g. 1,2,4")
    return ms


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    """The run's settings, and the arguments (``--epoch URL``: be the child measuring one size)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=Settings.per_class, help="images per class (10 classes)")
    p.add_argument("--multiples", type=multiples_arg, default=Settings.multiples, help="comma-separated")
    p.add_argument("--reps", type=int, default=Settings.reps)
    p.add_argument("--batch-size", type=int, default=Settings.batch_size)
    p.add_argument("--out", default=Settings.out)
    p.add_argument("--tiny", type=int, default=0, metavar="N", help="a base of N tiny photos (16 x 16 px) instead")
    p.add_argument("--epoch", metavar="URL", help=argparse.SUPPRESS)  # the child: one epoch, JSON on stdout
    p.add_argument("--crop", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return Settings(args.per_class, args.multiples, args.reps, args.batch_size, args.out, args.tiny), args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse(argv)
    if args.epoch:
        print(json.dumps(epoch(args.epoch, settings.batch_size, args.crop)))
        return 0
    from . import common

    if settings.tiny:
        base, crop = build_tiny(os.path.join(settings.out, f"tiny-{settings.tiny}"), settings.tiny), TINY_SIDE
    else:
        base, crop = build_base(settings.out, settings.per_class), None
    machine = describe()
    rows = measure_sizes(base, list(settings.multiples), settings.out, settings.batch_size, settings.reps, crop)
    text = f"Machine: {format_machine(machine)}\n\n{table(rows)}"
    common.report(settings.out, "scaling", text, {"machine": machine, "settings": dataclasses.asdict(settings),
                                                   "summary": summary(rows), "rows": rows})
    print("\n".join(charts(rows, settings.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
