"""The loader's fixed costs as the index grows to 100,000 shards / 10 million samples.

    python -m benchmarks.large_index [--shards 1000,10000,100000] [--per-shard 100] [--world-size 8]
                                     [--batch-size 64] [--reps 3] [--out runs/bench-index]

Data: one real shard of ``--per-shard`` tiny samples (16 x 16 px photos as pre-extracted DCT coefficients,
:func:`benchmarks.scaling.build_tiny`), hard-linked under a new name for every entry of the index: an
``index.json`` with one entry per shard (url, samples, bytes, sha256, keys) as a 10-million-sample set's
would be, whose every shard can be read.

Each size runs in two fresh Python processes: a bare ``json.load`` of the index (its time and its RSS growth,
the yardstick), then one with torch and lossyload imported and the one-shard base set opened once and dropped, so
that no size pays the first open's imports, for rank 0 of ``--world-size``: ``make_loader`` (open: read and check the index, build the
codec), the plan (the epoch's shard order and the shard ranges of the rank's worker), ``len(loader)``,
``loader.state_dict()`` and the rank's first batch. Memory: RSS before the open, and the peak from the open
to the first batch (the kernel's peak record reset before the open; MB = 10^6 bytes). Sizes are
interleaved over ``--reps``; times are medians, memory maxima.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

from lossyload.fs import read_index
from lossyload.index import INDEX_NAME, shard_name

from .scaling import REPO, build_tiny, link


def linked(base_url: str, shards: int, dest: str) -> str:
    """``dest``: an index of ``shards`` entries, each a hard link to the one shard of ``base_url``. Kept
    when it already has that many entries."""
    path = os.path.join(dest, INDEX_NAME)
    if os.path.exists(path):
        with open(path) as f:
            if len(json.load(f)["shards"]) == shards:
                return dest
    root, index = read_index(base_url)
    os.makedirs(dest, exist_ok=True)
    src = os.path.join(root, index.shards[0].url)
    entries = []
    for i in range(shards):
        target = os.path.join(dest, shard_name(i))
        if not os.path.exists(target):
            link(src, target)
        # an index may not list one sha256 twice: each link gets a sha256 of its own (derived, not its content's;
        # what is measured here never checks it: no verify, no cache)
        sha = hashlib.sha256(f"{index.shards[0].sha256}/{i}".encode()).hexdigest() if i else index.shards[0].sha256
        entries.append(dataclasses.replace(index.shards[0], url=shard_name(i), sha256=sha))
    for name in index.assets:
        if not os.path.exists(os.path.join(dest, name)):
            link(os.path.join(root, name), os.path.join(dest, name))
    with open(path, "w") as f:
        f.write(dataclasses.replace(index, shards=entries).to_json())
    return dest


def child(url: str, world_size: int, batch_size: int, warm_url: str) -> dict:
    """The costs of one size (runs in the child process). ``warm_url``: a small shard set of the same codec,
    opened first so that the measured open pays no imports (a large one would also leave the allocator
    tuned to its sizes, which a process opening its index once never is)."""
    import torch

    from lossyload import World, make_loader
    from lossyload.bench.memory import peak_rss_mb, reset_peak, status_mb
    from lossyload.loader import plan

    torch.set_num_threads(1)
    warm = make_loader(warm_url, batch_size=batch_size, options={"crop": 16})  # the imports a first open pays
    del warm
    gc.collect()
    before, exact = status_mb("VmRSS") or peak_rss_mb(), reset_peak()
    times = {}
    t = time.perf_counter()
    ld = make_loader(url, batch_size=batch_size, seed=0, world=World(rank=0, world_size=world_size),
                     options={"crop": 16})
    times["open"] = time.perf_counter() - t
    ds = ld.dataset
    t = time.perf_counter()
    order = plan.shard_order(len(ds.index.shards), seed=ds.seed, epoch=0, shuffle=ds.shuffle)
    world = plan.World(rank=0, world_size=world_size)
    ranges = plan.shard_ranges(order, [s.samples for s in ds.index.shards],
                               *plan.worker_span(ds.index.samples, world, batch_size, ds.drop_last))
    times["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    batches = len(ld)
    times["len"] = time.perf_counter() - t
    t = time.perf_counter()
    json.dumps(ld.state_dict())
    times["state_dict"] = time.perf_counter() - t
    t = time.perf_counter()
    _, y = next(iter(ld))
    times["first_batch"] = time.perf_counter() - t
    return {"shards": len(ds.index.shards), "samples": ds.index.samples, "batches_per_rank": batches, "ranges": len(ranges),
            **{f"{k}_s": v for k, v in times.items()}, "first_batch_samples": len(y),
            "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(), "peak_exact": exact}


def bare_child(url: str) -> dict:
    """A bare ``json.load`` of the index in a fresh process (runs in the child): its time, and its peak RSS over
    the RSS before it, the yardstick of the open's."""
    from lossyload.bench.memory import peak_rss_mb, reset_peak, status_mb

    gc.collect()
    before, _ = status_mb("VmRSS") or peak_rss_mb(), reset_peak()
    t = time.perf_counter()
    with open(os.path.join(url, INDEX_NAME)) as f:
        entries = len(json.load(f)["shards"])
    return {"json_load_s": time.perf_counter() - t, "json_load_growth_mb": peak_rss_mb() - before, "shards": entries}


def run_child(url: str, world_size: int, batch_size: int, warm_url: str) -> dict:
    """One size, measured in two fresh processes: the bare ``json.load``, then the loader."""
    out = {}
    for extra in (["--bare"], ["--warm", warm_url]):
        cmd = [sys.executable, "-m", "benchmarks.large_index", "--child", url, "--world-size", str(world_size),
               "--batch-size", str(batch_size), *extra]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def aggregate(runs: list[dict]) -> dict:
    row = dict(runs[-1])
    for k in row:
        if k.endswith("_s"):
            row[k] = statistics.median(r[k] for r in runs)
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    row["rss_before_mb"] = statistics.median(r["rss_before_mb"] for r in runs)
    row["growth_mb"] = max(r["peak_rss_mb"] - r["rss_before_mb"] for r in runs)
    row["json_load_growth_mb"] = max(r["json_load_growth_mb"] for r in runs)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| shards | samples | json.load s | open s | open / json.load | plan s | len s | state_dict s "
             "| first batch s | RSS before MB | peak RSS MB | growth MB | json.load growth MB | growth - json.load |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shards']:,} | {r['samples']:,} | {r['json_load_s']:.3f} | {r['open_s']:.3f} "
                     f"| {r['open_s'] / r['json_load_s']:.1f}x | {r['plan_s']:.3f} | {r['len_s']:.4f} "
                     f"| {r['state_dict_s']:.4f} | {r['first_batch_s']:.3f} | {r['rss_before_mb']:.0f} "
                     f"| {r['peak_rss_mb']:.0f} | {r['growth_mb']:.1f} | {r['json_load_growth_mb']:.1f} "
                     f"| {r['growth_mb'] - r['json_load_growth_mb']:+.1f} |")
    peaks = [r["peak_rss_mb"] for r in rows]
    spread = (max(peaks) - min(peaks)) / min(peaks)
    lines.append(f"\nPeak RSS across sizes: {min(peaks):.0f}-{max(peaks):.0f} MB, spread {spread:.1%} of the smallest "
                 f"({'flat' if spread <= 0.10 else 'NOT flat'}: within 10%).")
    return "\n".join(lines)


def measure(out: str, shards: list[int], per_shard: int, world_size: int, batch_size: int, reps: int) -> list[dict]:
    base = build_tiny(os.path.join(out, "base"), per_shard, per_shard)
    urls = {n: linked(base, n, os.path.join(out, f"shards-{n}")) for n in shards}
    runs: dict[int, list[dict]] = {n: [] for n in shards}
    for _ in range(reps):  # interleaved
        for n in shards:
            runs[n].append(run_child(urls[n], world_size, batch_size, base))
    return [aggregate(runs[n]) for n in shards]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", default="1000,10000,100000")
    p.add_argument("--per-shard", type=int, default=100)
    p.add_argument("--world-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="runs/bench-index")
    p.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--warm", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(bare_child(args.child) if args.bare
                         else child(args.child, args.world_size, args.batch_size, args.warm)))
        return 0
    from lossyload.bench.machine import describe, format_machine

    from . import common

    rows = measure(args.out, [int(n) for n in args.shards.split(",")], args.per_shard, args.world_size,
                   args.batch_size, args.reps)
    machine = describe()
    common.report(args.out, "large_index", f"Machine: {format_machine(machine)}\n\n{table(rows)}",
                  {"machine": machine, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
