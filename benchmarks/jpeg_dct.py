"""Loader samples/s of ``jpeg-dct`` (JPEG bytes and pre-extracted) against the ``rgb`` pipeline from the same
JPEG shards, in one run, one process, one thread (what one loader worker gets).

    python -m benchmarks.jpeg_dct [--per-class 100] [--reps 3] [--out runs/bench-jpeg]

Data: the bundled photo set rebuilt at ImageNet-like sizes (short side 256-320), cropped to 224 at load time.
Rows: the raw read limit (tar parsing + payload bytes, no decode), rgb with PIL/torchvision and with
libjpeg-turbo (decode, RandomResizedCrop, flip, normalize to float32), and jpeg-dct variants (decode to
quantized coefficients, block-aligned random crop, flip in the DCT domain).
"""

from __future__ import annotations

import argparse

import torch


from . import common
from .common import measure
from lossyload.bench.machine import describe, format_machine

VARIANTS = {
    "jpeg": {},
    "coef64": {"storage": "coefficients"},
    "coef16": {"storage": "coefficients", "keep": [16, 8]},
    "coef64-lz4": {"storage": "coefficients", "compression": "lz4"},
    "coef16-lz4": {"storage": "coefficients", "keep": [16, 8], "compression": "lz4"},
}
ROWS = [  # label, shard variant, codec, options
    ("read limit (tar + bytes, no decode)", "jpeg", None, None),
    ("rgb · PIL/torchvision", "jpeg", "rgb", {"backend": "pil"}),
    ("rgb · libjpeg-turbo", "jpeg", "rgb", {"backend": "turbo"}),
    ("jpeg-dct · from JPEG, 64+2x64", "jpeg", "jpeg-dct", {}),
    ("jpeg-dct · from JPEG, 16+2x8", "jpeg", "jpeg-dct", {"keep": [16, 8]}),
    ("jpeg-dct · pre-extracted zstd, 64+2x64", "coef64", "jpeg-dct", {}),
    ("jpeg-dct · pre-extracted zstd, 16+2x8", "coef16", "jpeg-dct", {}),
    ("jpeg-dct · pre-extracted lz4, 64+2x64", "coef64-lz4", "jpeg-dct", {}),
    ("jpeg-dct · pre-extracted lz4, 16+2x8", "coef16-lz4", "jpeg-dct", {}),
]


def prepare(out: str, per_class: int) -> dict[str, str]:
    return common.photo_sets(out, per_class, {name: ("jpeg-dct", config) for name, config in VARIANTS.items()},
                             maxcount=200)


def one_pass(url: str, codec: str | None, options: dict | None, batch: int, epoch: int) -> common.Pass:
    """One epoch with augmentation, cropped to 224 pixels."""
    return common.one_pass(url, codec, {**(options or {}), "crop": 224} if codec else None, batch, epoch)


def table(results: list[dict]) -> str:
    turbo = next(r for r in results if "turbo" in r["representation"])["samples_per_s"]
    pil = next(r for r in results if "PIL" in r["representation"])["samples_per_s"]
    float_input = 224 * 224 * 3 * 4
    lines = ["| representation | samples/s (min-max) | vs libjpeg-turbo rgb | vs PIL rgb | CPU ms/sample "
             "| stored B/sample | input B/sample | input vs float32 224²x3 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        per = r["input_bytes_per_sample"]
        inputs = f"{per:,} | {float_input / per:.1f}x smaller" if per else "— | —"
        lines.append(
            f"| {r['representation']} | {r['samples_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) "
            f"| {r['samples_per_s'] / turbo:.2f}x | {r['samples_per_s'] / pil:.2f}x | {r['cpu_ms_per_sample']:.2f} "
            f"| {r['stored_bytes_per_sample']:,.0f} | {inputs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--out", default="runs/bench-jpeg")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    urls = prepare(args.out, args.per_class)
    machine = describe()
    results = measure(ROWS, urls, one_pass, args.reps, args.batch_size)
    text = f"Machine: {format_machine(machine)}\n\n{table(results)}"
    common.report(args.out, "jpeg_dct", text, {"machine": machine, "args": vars(args), "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
