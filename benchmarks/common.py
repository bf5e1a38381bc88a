"""What every benchmark shares: the raw read limit of a shard set and interleaved, repeated timing."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from lossyload import make_loader
from lossyload.datasets.photos import PhotosConfig, build_photos
from lossyload.bench.payload import payload_bytes
from lossyload.fs import join, open_url, read_index
from lossyload.loader import tario
from lossyload.shard import ShardJob, run_job

# one_pass(url, codec, options, batch, epoch) -> Pass
OnePass = Callable[[str, "str | None", "dict | None", int, int], "Pass"]


def read_limit(url: str, storage_options: dict | None = None) -> tuple[int, int]:
    """(samples, payload bytes) of reading every shard: tar parsing and member bytes, no decode."""
    root, index = read_index(url, storage_options)
    n = nbytes = 0
    for shard in index.shards:
        u = join(root, shard.url)
        with open_url(u, "rb", storage_options, size=shard.bytes) as f:
            for s in tario.samples(f, u):
                nbytes += len(s[index.member])
                n += 1
    return n, nbytes


@dataclass(frozen=True)
class Pass:
    """Samples, input bytes per sample, seconds from opening the dataset to the first batch, and the seconds
    the samples took when not the whole pass (``epochs`` > 1: the epochs after the first)."""

    samples: int
    input_bytes: int
    first_batch_s: float | None = None
    seconds: float | None = None
    delivered: int | None = None  # every sample of the pass (the CPU time covers them all)


def one_pass(url: str, codec: str | None, options: dict | None, batch: int, epoch: int,
             transforms: list | None = None, storage_options: dict | None = None, num_workers: int | str = 0,
             worker_type: str = "process", epochs: int = 1, device: str | None = None) -> Pass:
    """One loader, ``epochs`` epochs with ``transforms`` (default: the codec's default transforms); with more
    than one, the samples and seconds are those of the epochs after the first (a loader built once, as in
    training; the first epoch's start-up is its time to the first batch). ``codec=None``: the read limit."""
    t0 = time.perf_counter()
    if codec is None:
        n, _ = read_limit(url, storage_options)
        return Pass(n, 0)
    ld = make_loader(url, batch_size=batch, codec=codec, options=options, seed=0, transforms=transforms,
                     storage_options=storage_options, num_workers=num_workers, worker_type=worker_type,
                     device=device)
    try:
        first = drain(ld, epoch, t0)
        if epochs <= 1:
            return first
        t1, n = time.perf_counter(), 0
        for _ in range(epochs - 1):
            n += drain(ld, None, t1).samples
        return Pass(n, first.input_bytes, first.first_batch_s, time.perf_counter() - t1, n + first.samples)
    finally:
        ld.close()  # the worker processes end here, so their CPU time is counted


def drain(ld, epoch: int | None, t0: float) -> Pass:
    """Epoch ``epoch`` of loader ``ld`` (``None``: its next), opened at ``t0`` (``time.perf_counter()``)."""
    if epoch is not None:
        ld.set_epoch(epoch)
    n = per = 0
    first = 0.0
    for x, y in ld:
        if not n:
            first = time.perf_counter() - t0
            per = sum(v[0].nbytes for v in (x.values() if isinstance(x, dict) else [x]))
        n += len(y)
    if n and getattr(y, "is_cuda", False):
        import torch

        torch.cuda.synchronize()
    return Pass(n, per, first)


def transfer_bytes(url: str, codec: str, options: dict | None, batch: int,
                   storage_options: dict | None = None) -> tuple[float, float]:
    """Bytes per sample of the input tensors a batch moves to the device: ``(host path, device path)``, i.e.
    the finished outputs and the codec's wire form (``make_loader(..., device=...)``)."""
    from lossyload.loader.dataset import LossyDataset
    from lossyload.loader.plan import World

    sizes = []
    for wire in (False, True):
        ds = LossyDataset(url, codec=codec, options=options, batch_size=batch, seed=0, storage_options=storage_options)
        ds.report, ds.wire = True, wire
        xs, y, _ = next(iter(ds.iter_worker(World())))
        sizes.append(sum(v.nbytes for v in xs.values()) / len(y))
    return sizes[0], sizes[1]


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader workers of past epochs)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(rows: list[tuple], urls: dict[str, str], one_pass: OnePass, reps: int, batch: int,
            storage_options: dict[str, dict] | None = None) -> list[dict]:
    """Time ``rows`` of ``(label, variant, codec, options)``. Repetitions are interleaved across rows (rep 1 of
    every row, then rep 2, ...) so that a drift in machine speed hits every row alike; the median and the
    spread of each row are reported. ``storage_options``: per variant, for remote URLs. CPU time counts the
    loader worker processes too."""
    progress = Progress(len(rows) * (reps + 1))
    rates: dict[str, list[float]] = {label: [] for label, *_ in rows}
    cpu: dict[str, list[float]] = {label: [] for label, *_ in rows}
    firsts: dict[str, list[float]] = {label: [] for label, *_ in rows}
    per: dict[str, int] = {}
    for label, variant, codec, options in rows:  # warm-up: page cache, imports, allocator
        one_pass(urls[variant], codec, options, batch, 99)
        progress.step(f"warm-up · {label}")
    for rep in range(reps):
        for label, variant, codec, options in rows:
            t0, c0 = time.perf_counter(), _cpu_seconds()
            p = one_pass(urls[variant], codec, options, batch, rep)
            if not p.samples:
                raise SystemExit(f"{label}: no full batch of {batch} in {urls[variant]}; use a smaller --batch-size")
            rates[label].append(p.samples / (p.seconds if p.seconds is not None else time.perf_counter() - t0))
            cpu[label].append((_cpu_seconds() - c0) / (p.delivered or p.samples))
            per[label] = p.input_bytes
            if p.first_batch_s is not None:
                firsts[label].append(p.first_batch_s)
            progress.step(f"rep {rep + 1}/{reps} · {label}: {rates[label][-1]:.0f} samples/s")
    results = []
    for label, variant, codec, _ in rows:
        _, index = read_index(urls[variant], (storage_options or {}).get(variant))
        r = rates[label]
        results.append({"representation": label, "samples_per_s": statistics.median(r), "spread": [min(r), max(r)],
                        "rates": list(r),  # per repetition, in the interleaved order
                        "cpu_ms_per_sample": 1e3 * statistics.median(cpu[label]),
                        "input_bytes_per_sample": per[label], "stored_bytes_per_sample": index.bytes / index.samples,
                        "first_batch_s": statistics.median(firsts[label]) if firsts[label] else None})
        print(f"{label}: {statistics.median(r):.0f} samples/s", flush=True)
    return results


class Progress:
    """One line per finished pass: how many of how many, the time so far and the time left (estimated)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def step(self, what: str) -> None:
        self.done += 1
        spent = time.perf_counter() - self.t0
        left = spent / self.done * (self.total - self.done)
        print(f"[{self.done}/{self.total} {clock(spent)} elapsed, ~{clock(left)} left] {what}", flush=True)


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def add_arguments(p: argparse.ArgumentParser, *, photos: bool) -> None:
    """The options every benchmark shares: ``--per-class`` (benchmarks over the photo set), ``--reps`` and
    ``--batch-size``."""
    if photos:
        p.add_argument("--per-class", type=int, default=100, help="images per class (10 classes)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)


def photo_sets(out: str, per_class: int, sets: dict[str, tuple[str, dict]], maxcount: int) -> dict[str, str]:
    """The bundled photos rebuilt at ImageNet-like sizes (short side 256-320) under ``out/photos``, sharded as
    each ``name -> (codec, config)`` of ``sets`` into ``out/name``; their URLs by name. Built once: a rerun
    over complete shard sets is a no-op."""
    photos = os.path.join(out, "photos")
    build_photos(photos, PhotosConfig(train_per_class=per_class, test_per_class=1, short_side=(256, 320)),
                 progress=False)
    urls = {}
    for name, (codec, config) in sets.items():
        dest = urls[name] = os.path.join(out, name)
        run_job(ShardJob(src=os.path.join(photos, "train"), dest=dest, codec=codec, config=config, maxcount=maxcount,
                         workers=os.cpu_count() or 1, progress=False))
    return urls


def add_payload_bytes(results: list[dict], rows: list[tuple], urls: dict[str, str]) -> None:
    """Set each result's ``payload_bytes_per_sample``: the codec member's mean size, without the tar container."""
    sizes: dict[str, float] = {}
    for (_, variant, *_), r in zip(rows, results):
        if variant not in sizes:
            sizes[variant] = payload_bytes(urls[variant])
        r["payload_bytes_per_sample"] = sizes[variant]


def report(out: str, name: str, text: str, record: dict) -> None:
    """Print ``text`` and write ``record`` as ``<out>/<name>.json``."""
    print(text)
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
