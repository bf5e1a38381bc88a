"""How a process worker's batches should cross to the training process: measured, one loader per variant,
built once and run for several epochs (as in training), repetitions interleaved.

    python -m benchmarks.handover [--per-class 100] [--voices 100] [--reps 3] [--epochs 2] [--out runs/bench]

Variants, each with 1 process worker against 0 workers: the batch as new shared-memory tensors each time
(``tensors``: torch's own way, what a plain ``DataLoader`` does), its arrays pickled through the queue
(``inline``), or written into the worker's preallocated shared-memory slots (``slots``); each with the finished
outputs crossing (``final``) or the codec's stored integers, finished in the training process (``wire``, the
default for a codec with a numpy finish); batches in groups of about 10 ms of building (the default) or one
per queue item (``ungrouped``).
Per variant: samples/s (median, min-max) and CPU microseconds per sample of the training process and of
the worker (from ``getrusage``; the worker's counted when the loader is closed, its start-up included).
Data: the shard sets of ``benchmarks.run`` (built there, or here on first use).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from lossyload import make_loader
from lossyload.loader import handover

from . import common
from .run import REPS, prepare, repeat

ROWS = ["vae · int8 4x32x32, flip", "vq · bit-planes int8", "encodec 6 kbps · codes int16",
        "jpeg-dct · pre-extracted zstd, 16+2x8", "rgb · libjpeg-turbo"]
VARIANTS = ["0w", "tensors final", "tensors wire", "inline wire", "slots final ungrouped", "slots wire ungrouped",
            "slots final", "slots wire"]


def one(url: str, rep, variant: str, batch: int, epochs: int) -> tuple[float, float, float, int]:
    """``(samples/s of the epochs after the first, main CPU s, worker CPU s, samples)`` of one variant."""
    workers = 0 if variant == "0w" else 1
    ld = make_loader(url, batch_size=batch, codec=rep.codec, options=rep.options, seed=0, num_workers=workers)
    grouping = handover.GROUP_BATCHES
    if workers:
        mode, form, *ungrouped = variant.split()
        ld.handover_mode = mode
        ld.dataset.wire = form == "wire"  # dataset.wire_form(): only where the codec has one
        if ungrouped:
            handover.GROUP_BATCHES = 1  # read by the worker, forked on the first pass
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    main0 = time.process_time()
    n = 0
    for _ in ld:  # the first epoch: start-up
        pass
    handover.GROUP_BATCHES = grouping
    t0 = time.perf_counter()
    for _ in range(epochs - 1):
        for _, y in ld:
            n += len(y)
    rate = n / (time.perf_counter() - t0)
    main = time.process_time() - main0
    ld.close()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
    return rate, main, kids, n * epochs // max(epochs - 1, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--voices", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeat-scale", type=float, default=0.5)
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    urls = repeat(prepare(args.out, args.per_class, args.voices), args.repeat_scale, args.out)
    torch.set_num_threads(1)
    reps = [r for r in REPS if r.label in ROWS]
    runs: dict[tuple[str, str], list[tuple]] = {(r.label, v): [] for r in reps for v in VARIANTS}
    for _ in range(args.reps):
        for r in reps:
            for v in VARIANTS:
                runs[(r.label, v)].append(one(urls[r.shards], r, v, args.batch_size, args.epochs))
    lines = ["| representation | variant | samples/s (min-max) | vs 0w | main CPU us/sample | worker CPU us/sample |",
             "|---|---|---:|---:|---:|---:|"]
    for r in reps:
        zero = statistics.median(x[0] for x in runs[(r.label, "0w")])
        for v in VARIANTS:
            xs = runs[(r.label, v)]
            rate = statistics.median(x[0] for x in xs)
            main_us = statistics.median(1e6 * x[1] / x[3] for x in xs)
            kid_us = statistics.median(1e6 * x[2] / x[3] for x in xs)
            lines.append(f"| {r.label} | {v} | {rate:,.0f} ({min(x[0] for x in xs):,.0f}-{max(x[0] for x in xs):,.0f}) "
                         f"| {rate / zero:.2f}x | {main_us:.1f} | {kid_us:.1f} |")
    from lossyload.bench.machine import describe, format_machine

    machine = describe()
    common.report(args.out, "handover", f"Machine: {format_machine(machine)}\n\n" + "\n".join(lines),
                  {"machine": machine, "args": vars(args), "lines": lines})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
