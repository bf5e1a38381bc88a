"""The same shards from local disk and from a local S3 server, in one run: samples/s, MB/s of stored bytes,
time to first batch, and the S3/local ratio; and from S3 through the node-local shard cache (``cache_dir``):
epoch 1 with an empty cache (every shard fetched, verified, written) and epoch 2 from the filled cache (no
request; each shard's sha256 checked before use), with the bytes each fetched and read from the cache.

    python -m benchmarks.storage [--per-class 100] [--reps 3] [--out runs/bench-storage]

The S3 server is moto's, started by this benchmark in its own process on 127.0.0.1 (so it does not share
the loader's interpreter) and stopped at the end; the shards are uploaded with fsspec. A real bucket adds
network latency and bandwidth limits that a loopback server does not have: these figures measure the
client side (fsspec/s3fs, read-ahead, HTTP parsing) against plain file reads. One process, one thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import fsspec
import torch


from . import common
from lossyload.bench.machine import describe, format_machine

VARIANTS = {  # name -> (codec, shard config, loader options)
    "jpeg": ("jpeg-dct", {}, None),
    "coefficients": ("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]}, None),
    "int8 latents": ("vae", {"resolution": 256, "fit_samples": 128, "model": "random:tiny"}, None),
}
BUCKET = "bench"


def start_s3(port: int) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = {"key": "bench", "secret": "bench", "endpoint_url": f"http://127.0.0.1:{port}",
               "client_kwargs": {"region_name": "us-east-1"}}
    deadline = time.monotonic() + 60
    while True:
        try:
            fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
            fs.ls("")  # the server answers
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the S3 server (python -m moto.server) did not start")
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="bench", aws_secret_access_key="bench",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return proc, options


def prepare(out: str, per_class: int, maxcount: int, s3: dict) -> tuple[dict[str, str], dict[str, dict]]:
    sets = {f"{name.replace(' ', '-')}-{maxcount}": (codec, config) for name, (codec, config, _) in VARIANTS.items()}
    local = common.photo_sets(out, per_class, sets, maxcount)
    urls, options = {}, {}
    fs = fsspec.filesystem("s3", **s3)
    for name, url in zip(VARIANTS, local.values()):
        remote = f"{BUCKET}/{os.path.basename(url)}"
        fs.put(url + "/", remote, recursive=True)
        urls[f"{name}/local"], urls[f"{name}/s3"] = url, f"s3://{remote}"
        options[f"{name}/s3"] = s3
    return urls, options


CACHED = {"s3, cache epoch 1": "cold", "s3, cache epoch 2": "warm"}  # row label suffix -> cache state


def cached_pass(url: str, codec: str, options: dict | None, batch: int, epoch: int, s3: dict, cache_dir: str,
                state: str, traffic: dict) -> common.Pass:
    """One loader epoch from S3 through the shard cache at ``cache_dir``: emptied first when ``state`` is
    "cold" (epoch 1 of a run), kept when "warm" (a later epoch). ``traffic[state]`` gets the loader's counts."""
    from lossyload import make_loader

    if state == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    ld = make_loader(url, batch_size=batch, codec=codec, options=options, seed=0, storage_options=s3,
                     cache_dir=cache_dir)
    done = common.drain(ld, epoch, t0)
    traffic[state] = vars(ld.traffic)
    return done


def traffic_lines(traffic: dict[str, dict[str, dict]]) -> str:
    lines = ["", "Shard bytes per epoch through the cache (loader.traffic):"]
    for name, states in traffic.items():
        for state, t in states.items():
            lines.append(f"- {name}, cache {state}: {t['remote_bytes'] / 1e6:.2f} MB fetched from S3 "
                         f"({t['fetched']} shards), {t['cache_bytes'] / 1e6:.2f} MB read from the cache "
                         f"({t['hits']} shards)")
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    by = {r["representation"]: r for r in results}
    lines = ["| representation | storage | samples/s (min-max) | MB/s stored | S3 / local | first batch s |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        what, where = r["representation"].rsplit(" · ", 1)
        local = by[f"{what} · local"]["samples_per_s"]
        lines.append(f"| {what} | {where} | {r['samples_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) "
                     f"| {r['mb_per_s']:.1f} | {r['samples_per_s'] / local:.2f}x | "
                     + (f"{r['first_batch_s']:.3f} |" if r["first_batch_s"] is not None else "— |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--maxcount", type=int, default=250, help="samples per shard (each shard costs a request or two)")
    p.add_argument("--port", type=int, default=0, help="S3 server port (default: a free one)")
    p.add_argument("--out", default="runs/bench-storage")
    args = p.parse_args(argv)
    port = args.port or _free_port()
    server, s3 = start_s3(port)
    try:
        urls, options = prepare(args.out, args.per_class, args.maxcount, s3)
        torch.set_num_threads(1)
        rows = []
        for name, (codec, _, loader_options) in VARIANTS.items():
            for where in ("local", "s3"):
                rows.append((f"{name} read limit · {where}", f"{name}/{where}", None, None))
                rows.append((f"{name} loader · {where}", f"{name}/{where}", codec, loader_options))
            for where in CACHED:  # the same S3 shards, through the cache (a row's options say which)
                urls[f"{name}/{where}"], options[f"{name}/{where}"] = urls[f"{name}/s3"], s3
                rows.append((f"{name} loader · {where}", f"{name}/{where}", codec, ("cache", name, where, loader_options)))
        traffic: dict[str, dict[str, dict]] = {name: {} for name in VARIANTS}

        def one_pass(url, codec, opts, batch, epoch):
            so = s3 if url.startswith("s3://") else None
            if isinstance(opts, tuple):
                _, name, where, opts = opts
                cache_dir = os.path.join(args.out, "cache", name.replace(" ", "-"))
                return cached_pass(url, codec, opts, batch, epoch, s3, cache_dir, CACHED[where], traffic[name])
            return common.one_pass(url, codec, opts, batch, epoch, storage_options=so)

        results = common.measure(rows, urls, one_pass, args.reps, args.batch_size, options)
        for r in results:
            r["mb_per_s"] = r["samples_per_s"] * r["stored_bytes_per_sample"] / 1e6
    finally:
        server.terminate()
        server.wait(10)
    machine = describe()
    text = f"Machine: {format_machine(machine)}\n\n{table(results)}\n{traffic_lines(traffic)}"
    common.report(args.out, "storage", text, {"machine": machine, "args": vars(args), "rows": results,
                                              "cache_traffic": traffic})
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
