"""Loader samples/s of the DALI backend against the torch loader, same shards, same codec, one run.

    python -m benchmarks.dali [--per-class 100] [--reps 3] [--batch-size 64] [--threads 1] [--out runs/bench-dali]

Data: the bundled photo set rebuilt at ImageNet-like sizes (short side 256-320), sharded twice: as JPEG
(read by ``rgb``: decode, RandomResizedCrop 224, flip, normalize) and as ``vae`` int8 latents of 256-pixel
views (4 x 32 x 32, flip). Each codec is timed through the torch loader (``num_workers=0``, one torch thread)
and through DALI on the CPU (``device_id=None``, ``--threads`` DALI threads), repetitions interleaved; on a
machine with a GPU, DALI on the GPU too (``device_id=0``: nvJPEG and GPU operators), labelled with the device.
DALI index files are written before timing (``lossyload dali-index``), as a user would.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lossyload import make_loader
from lossyload.dali import index as dali_index
from lossyload.fs import read_index
from lossyload.loader.dataset import resolve_codec
from lossyload.bench.machine import describe, format_machine

from . import common

LATENT = {"resolution": 256, "fit_samples": 64}
VARIANTS = {"jpeg": ("jpeg-dct", {}), "int8": ("vae", LATENT)}
CODECS = {"jpeg": "rgb", "int8": "vae"}  # the codec each shard variant is read with


def rows_for(gpu: str | None, threads: int) -> list[tuple]:
    """``(label, variant, codec, options)``; ``options`` carries the backend and device for :func:`one_pass`."""
    rows = []
    for variant, codec in CODECS.items():
        what = "rgb · JPEG, RandomResizedCrop 224 + flip" if codec == "rgb" else "vae · int8 4x32x32, flip"
        rows.append((f"{what} · torch", variant, codec, {"backend": "torch"}))
        rows.append((f"{what} · DALI CPU ({threads} thread{'s' if threads > 1 else ''})", variant, codec,
                     {"backend": "dali", "device_id": None, "threads": threads}))
        if gpu:
            rows.append((f"{what} · DALI GPU ({gpu})", variant, codec,
                         {"backend": "dali", "device_id": 0, "threads": threads}))
    return rows


def one_pass(url: str, codec: str | None, options: dict, batch: int, epoch: int) -> common.Pass:
    """One training epoch (the codec's default augmentation), from building the loader to the last batch."""
    t0 = time.perf_counter()
    kw = {"backend": "dali", "device_id": options["device_id"], "num_workers": options["threads"]} \
        if options["backend"] == "dali" else {}
    ld = make_loader(url, batch_size=batch, codec=codec, seed=epoch, drop_last=True, **kw)
    n = per = 0
    first = 0.0
    for x, y in ld:
        if not n:
            first = time.perf_counter() - t0
            per = x[0].nbytes
        n += len(y)
    if options.get("device_id") is not None:
        torch.cuda.synchronize()
    return common.Pass(n, per, first)


def prepare(out: str, per_class: int, model: str) -> dict[str, str]:
    sets = {name: (codec, {**config, "model": model} if codec == "vae" else config)
            for name, (codec, config) in VARIANTS.items()}
    urls = common.photo_sets(out, per_class, sets, maxcount=500)
    for name, url in urls.items():  # the DALI index for the codec each set is read with
        root, index = read_index(url)
        dest = os.path.join(url, dali_index.INDEX_DIR)
        if dali_index.load(root, index, CODECS[name], dest) is None:
            dali_index.build(root, index, resolve_codec(index, CODECS[name], None, root), dest)
    return urls


def table(results: list[dict]) -> str:
    lines = ["| pipeline | samples/s (min-max) | vs torch loader, same codec | CPU ms/sample | first batch s |",
             "|---|---:|---:|---:|---:|"]
    base: dict[str, float] = {}
    for r in results:
        codec = r["representation"].split(" · ")[0]
        if r["representation"].endswith("· torch"):
            base[codec] = r["samples_per_s"]
        first = r["first_batch_s"]
        lines.append(f"| {r['representation']} | {r['samples_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) "
                     f"| {r['samples_per_s'] / base[codec]:.2f}x | {r['cpu_ms_per_sample']:.2f} "
                     f"| {'—' if first is None else f'{first:.2f}'} |")
    return "\n".join(lines)


def machine() -> dict:
    """The shared machine description (CPU, cores, versions, commit) and the GPU, if any."""
    return {**describe(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--threads", type=int, default=1, help="DALI CPU threads (the torch loader runs in-process)")
    p.add_argument("--model", default="random:tiny", help="the VAE that makes the latent shards")
    p.add_argument("--no-gpu", action="store_true", help="CPU rows only, even with a GPU")
    p.add_argument("--out", default="runs/bench-dali")
    args = p.parse_args(argv)
    urls = prepare(args.out, args.per_class, args.model)
    torch.set_num_threads(1)
    info = machine()
    rows = rows_for(None if args.no_gpu else info["gpu"], args.threads)
    results = common.measure(rows, urls, one_pass, args.reps, args.batch_size)
    gpu = f", GPU {info['gpu']}" if info["gpu"] and not args.no_gpu else ", no GPU"
    text = f"Machine: {format_machine(info)}{gpu}\n\n{table(results)}"
    common.report(args.out, "dali", text, {"machine": info, "args": vars(args), "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
