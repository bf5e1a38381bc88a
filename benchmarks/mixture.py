"""A weighted mixture of three shard sets against the single-source loader over the same shards, in one run.

    python -m benchmarks.mixture [--per-class 100] [--reps 3] [--batch-size 64] [--workers 0] [--out runs/bench-mixture]

Data: the bundled photos (short side 256-320) sharded as pre-extracted JPEG DCT coefficients (zstd, 16+2x8,
cropped to 224 at load time; ``coef16`` of ``benchmarks.run``), listed ``REPEAT`` times (hard links) so an
epoch lasts about a second, then split into three shard sets of about 1/2, 1/3 and 1/6 of the shards. Rows:

- **single source**: ``make_loader(whole)``, the whole shard set as one source;
- **mixture of 3, weights = sizes**: ``make_loader([a, b, c])``: the same samples, interleaved by the
  seeded source order (what mixing costs: the order, one reader per source, batches decoded per source);
- **mixture of 3, weights 1:1:1**: ``make_loader([a, b, c], weights=[1, 1, 1])``, as many samples per epoch:
  the small source repeats (about 2x), the large one is subsampled.

Each row is whole epochs (start-up included), repetitions interleaved across rows, median (min-max), and the
ratio to the single-source row of the same run. ``python -m benchmarks.run`` measures the same rows (0 workers)
after its own table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import torch

from lossyload import make_loader
from lossyload.fs import read_index
from lossyload.index import INDEX_NAME, shard_name
from lossyload.bench.machine import describe, format_machine

from . import common
from .scaling import link, repeated

SET = ("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]})
OPTIONS = {"crop": 224}
REPEAT = 12
SPLIT = (3, 2, 1)  # sixths of the shards in each source


def split(url: str, dest: str) -> list[str]:
    """Three shard sets at ``dest/part-<i>`` holding consecutive shards of ``url`` (hard links), in the
    proportions of :data:`SPLIT`; their URLs."""
    root, index = read_index(url)
    n = len(index.shards)
    cuts = [0]
    for part in SPLIT:
        cuts.append(min(n, cuts[-1] + max(1, round(n * part / sum(SPLIT)))))
    cuts[-1] = n
    urls = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        out = os.path.join(dest, f"part-{i}")
        os.makedirs(out, exist_ok=True)
        shards = []
        for j, s in enumerate(index.shards[a:b]):
            target = os.path.join(out, shard_name(j))
            if os.path.exists(target):
                os.remove(target)
            link(os.path.join(root, s.url), target)
            shards.append(dataclasses.replace(s, url=shard_name(j)))
        with open(os.path.join(out, INDEX_NAME), "w") as f:
            f.write(dataclasses.replace(index, shards=shards).to_json())
        urls.append(out)
    return urls


def rows(whole: str, parts: list[str]) -> list[tuple[str, object, list | None]]:
    """``(label, url or list of URLs, weights)`` of each measured row."""
    return [("single source", whole, None),
            ("mixture of 3, weights = sizes", parts, None),
            ("mixture of 3, weights 1:1:1", parts, [1, 1, 1])]


def measure(whole: str, parts: list[str], reps: int, batch: int, workers: int = 0) -> list[dict]:
    """samples/s of each row (median and spread over ``reps`` interleaved epochs; one warm-up epoch)."""
    rs = rows(whole, parts)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in rs}
    shares: dict[str, dict[str, int]] = {}
    for rep in range(-1, reps):
        for label, url, weights in rs:
            extra = {} if weights is None else {"weights": weights}
            t0 = time.perf_counter()
            ld = make_loader(url, batch_size=batch, codec=SET[0], options=OPTIONS, seed=0, num_workers=workers,
                             worker_type="thread", return_keys=True, **extra)
            ld.set_epoch(max(rep, 0))
            n, per = 0, {}
            for _, y, keys in ld:
                n += len(y)
                if isinstance(url, list):
                    for k in keys:
                        name = k.split(":", 1)[0]
                        per[name] = per.get(name, 0) + 1
            if rep >= 0:
                rates[label].append(n / (time.perf_counter() - t0))
                shares[label] = per
            print(f"{'warm-up' if rep < 0 else f'rep {rep + 1}/{reps}'} · {label}: {n / (time.perf_counter() - t0):.0f} "
                  "samples/s", flush=True)
    base = statistics.median(rates["single source"])
    out = []
    for label, url, weights in rs:
        r = rates[label]
        total = sum(shares[label].values()) or 1
        out.append({"label": label, "sources": len(url) if isinstance(url, list) else 1, "weights": weights,
                    "samples_per_s": statistics.median(r), "spread": [min(r), max(r)],
                    "ratio": statistics.median(r) / base,
                    "shares": {k: v / total for k, v in sorted(shares[label].items())}, "workers": workers})
    return out


def table(results: list[dict]) -> str:
    lines = ["| loader | sources | workers | samples/s (min-max) | vs single source | drawn per source |",
             "|---|---:|---:|---:|---:|---|"]
    for r in results:
        drawn = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["shares"].items()) or "—"
        lines.append(f"| {r['label']} | {r['sources']} | {r['workers']} | {r['samples_per_s']:.0f} "
                     f"({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) | {r['ratio']:.2f}x | {drawn} |")
    return "\n".join(lines)


def prepare(out: str, per_class: int, base: str | None = None, times: int = REPEAT) -> tuple[str, list[str]]:
    """The whole shard set (``base``, default the coef16 photo set, listed ``times`` times) and its parts."""
    base = base or common.photo_sets(out, per_class, {"coef16": SET}, maxcount=50)["coef16"]
    whole = repeated(base, times, os.path.join(out, "mixture", "whole"))
    return whole, split(whole, os.path.join(out, "mixture"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--workers", type=int, default=0, help="loader (thread) workers")
    p.add_argument("--out", default="runs/bench-mixture")
    args = p.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    whole, parts = prepare(args.out, args.per_class)
    results = measure(whole, parts, args.reps, args.batch_size, args.workers)
    text = (f"Machine: {format_machine(describe())}\nDuration: {common.clock(time.perf_counter() - started)} "
            f"(data preparation included)\n\n{table(results)}")
    common.report(args.out, "mixture", text, {"args": vars(args), "rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
