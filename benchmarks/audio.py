"""Loader samples/s of ``vq`` and ``encodec`` against the conventional ``mel`` pipeline (decode WAV/FLAC ->
log-mel float32 128 x 128) over the same clips, in one run, one process, one thread; plus stored bytes per
sample against 16-bit PCM.

    python -m benchmarks.audio [--voices 200] [--reps 3] [--out runs/bench-audio]

Data: the training split of the bundled keyword set (1 s clips at 16 kHz; ``--voices`` limits the voices).
The vq codebook is fitted on it; EnCodec uses the pretrained checkpoint when it is in the torch hub cache and
a random-initialised model otherwise (same code size and load path; the run says which).
"""

from __future__ import annotations

import argparse
import os

import torch

from lossyload.datasets.keywords import KeywordsConfig, build_keywords
from lossyload.codecs.encodec import choose_weights
from lossyload.shard import ShardJob, run_job

from . import common
from .common import measure, one_pass
from lossyload.bench.machine import describe, format_machine

ROWS = [  # label, shard variant, codec, options
    ("read limit (tar + bytes, no decode), vq shards", "vq", None, None),
    ("mel · WAV -> log-mel float32", "mel-wav", "mel", {}),
    ("mel · FLAC -> log-mel float32", "mel-flac", "mel", {}),
    ("vq · 4-bit codes uint8", "vq", "vq", {"output": "codes"}),
    ("vq · bit-planes int8 (BNN input)", "vq", "vq", {"output": "bits"}),
    ("vq · codebook vectors float32", "vq", "vq", {"output": "vectors"}),
    ("encodec 6 kbps · codes int16", "encodec", "encodec", {"output": "codes"}),
    ("encodec 6 kbps · latent float32", "encodec", "encodec", {"output": "latent"}),
    ("encodec 1.5 kbps (load-time) · latent", "encodec", "encodec", {"output": "latent", "bandwidth": 1.5}),
]


def prepare(out: str, voices: int | None, weights: str) -> dict[str, str]:
    data = os.path.join(out, "keywords")
    build_keywords(data, KeywordsConfig(max_voices=voices), progress=False)
    variants = {"mel-wav": ("mel", {"format": "wav"}), "mel-flac": ("mel", {"format": "flac"}), "vq": ("vq", {}),
                "encodec": ("encodec", {"bandwidth": 6.0, "weights": weights})}
    urls = {}
    for name, (codec, config) in variants.items():
        dest = urls[name] = os.path.join(out, name)
        run_job(ShardJob(src=os.path.join(data, "train"), dest=dest, codec=codec, config=config, maxcount=1000,
                         workers=os.cpu_count() or 1, progress=False))
    return urls


def table(results: list[dict], pcm: float) -> str:
    wav = next(r for r in results if "WAV" in r["representation"])["samples_per_s"]
    flac = next(r for r in results if "FLAC" in r["representation"])["samples_per_s"]
    lines = ["| representation | samples/s (min-max) | vs mel WAV | vs mel FLAC | CPU ms/sample | stored B/sample (tar) "
             "| payload B/sample | payload vs 16-bit PCM | input B/sample |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        per = f"{r['input_bytes_per_sample']:,}" if r["input_bytes_per_sample"] else "—"
        lines.append(
            f"| {r['representation']} | {r['samples_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) "
            f"| {r['samples_per_s'] / wav:.1f}x | {r['samples_per_s'] / flac:.1f}x | {r['cpu_ms_per_sample']:.3f} "
            f"| {r['stored_bytes_per_sample']:,.0f} | {r['payload_bytes_per_sample']:,.0f} "
            f"| {pcm / r['payload_bytes_per_sample']:.1f}x smaller | {per} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voices", type=int, help="voices of the keyword set (default: all 707; 8 clips each)")
    common.add_arguments(p, photos=False)
    p.add_argument("--encodec-weights", default="auto", help="auto | pretrained | random | checkpoint path")
    p.add_argument("--out", default="runs/bench-audio")
    args = p.parse_args(argv)
    weights = choose_weights(args.encodec_weights)
    urls = prepare(args.out, args.voices, weights)
    torch.set_num_threads(1)
    machine = describe()
    results = measure(ROWS, urls, one_pass, args.reps, args.batch_size)
    pcm = 2 * 16000 * 1.0
    common.add_payload_bytes(results, ROWS, urls)
    text = f"Machine: {format_machine(machine)}; EnCodec weights: {weights}\n\n{table(results, pcm)}"
    common.report(args.out, "audio", text,
                  {"machine": machine, "args": vars(args), "encodec_weights": weights, "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
