"""Loader samples/s of ``vae`` latents against the ``rgb`` pipeline from the source JPEGs, in one run, one
process, one thread (what one loader worker gets).

    python -m benchmarks.latent [--per-class 100] [--reps 3] [--model random:tiny] [--out runs/bench-latent]

Data: the bundled photo set rebuilt at ImageNet-like sizes (short side 256-320). The rgb rows decode those
JPEGs and crop 224 pixels (RandomResizedCrop, flip, normalize to float32); the vae rows read latents of the
same images encoded at shard time at 256 x 256 (4 x 32 x 32 per image), with latent-space augmentation.
Loader figures do not depend on the VAE's weights (the default random-initialised tiny model encodes fast);
the stored bytes do not either (raw int8 / float16, no entropy coding).
"""

from __future__ import annotations

import argparse

import torch


from . import common
from .common import measure
from lossyload.bench.machine import describe, format_machine

LATENT = {"resolution": 256, "fit_samples": 128}
VARIANTS = {
    "jpeg": ("jpeg-dct", {}),
    "int8": ("vae", LATENT),
    "float16": ("vae", {**LATENT, "storage": "float16"}),
    "int8-std": ("vae", {**LATENT, "store_std": True}),
}
ROWS = [  # label, shard variant, codec, options
    ("read limit · JPEG shards", "jpeg", None, None),
    ("rgb · PIL/torchvision", "jpeg", "rgb", {"backend": "pil", "crop": 224}),
    ("rgb · libjpeg-turbo", "jpeg", "rgb", {"backend": "turbo", "crop": 224}),
    ("read limit · int8 latent shards", "int8", None, None),
    ("vae · int8 4x32x32, flip", "int8", "vae", {}),
    ("vae · int8, crop 28 + flip", "int8", "vae", {"crop": 28}),
    ("vae · float16 4x32x32, flip", "float16", "vae", {}),
    ("vae · int8 mean+std, posterior sample + flip", "int8-std", "vae", "posterior"),
]


def prepare(out: str, per_class: int, model: str) -> dict[str, str]:
    sets = {name: (codec, {**config, "model": model} if codec == "vae" else config)
            for name, (codec, config) in VARIANTS.items()}
    return common.photo_sets(out, per_class, sets, maxcount=500)


def one_pass(url: str, codec: str | None, options, batch: int, epoch: int) -> common.Pass:
    """One epoch with the codec's default augmentation (posterior rows: posterior sample, then flip)."""
    if options != "posterior":
        return common.one_pass(url, codec, options, batch, epoch)
    from lossyload.augment.latent import HFlip, PosteriorSample

    return common.one_pass(url, codec, None, batch, epoch, transforms=[PosteriorSample(), HFlip()])


def table(results: list[dict]) -> str:
    turbo = next(r for r in results if "turbo" in r["representation"])["samples_per_s"]
    pil = next(r for r in results if "PIL" in r["representation"])["samples_per_s"]
    jpeg = results[0]["payload_bytes_per_sample"]  # the source JPEGs (first row: their shards' read limit)
    lines = ["| representation | samples/s (min-max) | vs libjpeg-turbo rgb | vs PIL rgb | CPU ms/sample "
             "| stored B/sample (tar) | payload B/sample | payload vs source JPEG | input B/sample |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        per, payload = r["input_bytes_per_sample"], r["payload_bytes_per_sample"]
        lines.append(
            f"| {r['representation']} | {r['samples_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) "
            f"| {r['samples_per_s'] / turbo:.1f}x | {r['samples_per_s'] / pil:.1f}x | {r['cpu_ms_per_sample']:.3f} "
            f"| {r['stored_bytes_per_sample']:,.0f} | {payload:,.0f} | {jpeg / payload:.1f}x smaller | {f'{per:,}' if per else '—'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(p, photos=True)
    p.add_argument("--model", default="random:tiny", help="the VAE that makes the latent shards")
    p.add_argument("--out", default="runs/bench-latent")
    args = p.parse_args(argv)
    urls = prepare(args.out, args.per_class, args.model)
    torch.set_num_threads(1)
    machine = describe()
    results = measure(ROWS, urls, one_pass, args.reps, args.batch_size)
    common.add_payload_bytes(results, ROWS, urls)
    text = f"Machine: {format_machine(machine)}\n\n{table(results)}"
    common.report(args.out, "latent", text, {"machine": machine, "args": vars(args), "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
