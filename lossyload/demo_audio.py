"""The main job, audio half: shard -> stream -> train on keyword clips, log-mel floats against VQ codes and
EnCodec latents (the seed's audio experiment), one table.

On the bundled ``keywords`` set by default (synthesised offline, see ``lossyload.datasets.keywords``), or on
any folder with ``train/`` and ``test/`` class subfolders of audio files (e.g. an imported Speech Commands).
The VQ codebook is fitted on the training split and reused for the test split (``config_from_dataset``).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass

import torch

from . import make_loader
from .codecs.encodec import CHECKPOINT, checkpoint_path
from .demo import fit_and_score, measure_rate
from .errors import CodecError, LossyloadError
from .fs import read_index
from .models import GridNet, LatentNet1d
from .shard import ShardJob, run_job
from .shard.job import config_from_dataset


@dataclass(frozen=True, kw_only=True)
class AudioDemoConfig:
    data: str | None = None  # folder with train/ and test/ class subfolders; None: the bundled keywords set
    out: str = "runs/demo"
    epochs: int = 8
    batch_size: int = 64
    bandwidth: float = 6.0  # EnCodec kbps
    encodec_weights: str = "auto"  # "auto": pretrained when its checkpoint is cached, else random (said so)
    shard_workers: int = 2
    lr: float = 3e-3
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class AudioRow:
    label: str
    codec: str
    options: dict
    model: str | None  # "mel" | "bits" | "vectors" | "latent" | None (loader figures only)


ROWS = [
    AudioRow(label="mel · FLAC -> log-mel float32", codec="mel", options={}, model="mel"),
    AudioRow(label="vq · 4-bit codes uint8", codec="vq", options={"output": "codes"}, model=None),
    AudioRow(label="vq · bit-planes (BNN input)", codec="vq", options={"output": "bits"}, model="bits"),
    AudioRow(label="vq · codebook vectors float32", codec="vq", options={"output": "vectors"}, model="vectors"),
    AudioRow(label="encodec · RVQ codes int16", codec="encodec", options={"output": "codes"}, model=None),
    AudioRow(label="encodec · latent float32", codec="encodec", options={"output": "latent"}, model="latent"),
]


def encodec_weights(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        checkpoint_path("pretrained")
        return "pretrained"
    except CodecError:
        print(f"encodec: no pretrained checkpoint ({CHECKPOINT}) in the torch hub cache: using a RANDOM-initialised "
              "EnCodec (offline demo; its codes are not a real codec's)", flush=True)
        return "random"


def prepare_data(cfg: AudioDemoConfig) -> tuple[str, str]:
    if cfg.data is None:
        from .datasets.keywords import build_keywords

        root = os.path.join(cfg.out, "keywords")
        build_keywords(root)
    else:
        root = cfg.data
    if not all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test")):
        raise LossyloadError(f"{root}: expected class-folder subfolders train/ and test/")
    return os.path.join(root, "train"), os.path.join(root, "test")


def shard_all(cfg: AudioDemoConfig, train_dir: str, test_dir: str) -> dict[str, str]:
    """Shard both splits with each codec (complete shard sets made with the same settings are reused)."""
    configs = {"mel": {}, "vq": {}, "encodec": {"bandwidth": cfg.bandwidth, "weights": encodec_weights(cfg.encodec_weights)}}
    out = {}
    for codec, config in configs.items():
        for split, src in (("train", train_dir), ("test", test_dir)):
            dest = os.path.join(cfg.out, "shards", f"audio-{split}-{codec}")
            if split == "test" and codec == "vq":  # the training split's codebook
                config = config_from_dataset(out[f"train-{codec}"], codec)
            out[f"{split}-{codec}"] = dest
            summary = run_job(ShardJob(src=src, dest=dest, codec=codec, config=config, maxcount=1000,
                                       workers=cfg.shard_workers, progress=True))
            print(summary.format(), flush=True)
    return out


def payload_bytes(url: str) -> float:
    """Mean size of the codec member (the representation without tar headers) over every shard."""
    root, index = read_index(url)
    sizes = []
    for shard in index.shards:
        with tarfile.open(os.path.join(root, shard.url)) as tf:
            sizes += [m.size for m in tf.getmembers() if m.name.endswith("." + index.member)]
    return sum(sizes) / len(sizes)


def build_model(row: AudioRow, classes: int) -> torch.nn.Module:
    if row.model == "mel":
        return GridNet(1, classes, stem_stride=2)
    if row.model in ("bits", "vectors"):
        return GridNet(4, classes)
    return LatentNet1d(128, classes)


def run_audio_demo(cfg: AudioDemoConfig) -> list[dict]:
    train_dir, test_dir = prepare_data(cfg)
    urls = shard_all(cfg, train_dir, test_dir)
    results = []
    for row in ROWS:
        train_url, test_url = urls[f"train-{row.codec}"], urls[f"test-{row.codec}"]
        _, index = read_index(train_url)
        pcm = 2 * index.config["sample_rate"] * index.config["seconds"]
        loader = make_loader(train_url, batch_size=cfg.batch_size, options=row.options, seed=cfg.seed)
        rate, batch_bytes = measure_rate(loader)
        r = {"representation": row.label, "stored_bytes_per_sample": index.bytes / index.samples,
             "payload_bytes_per_sample": payload_bytes(train_url), "pcm16_bytes_per_sample": pcm,
             "input_bytes_per_batch": batch_bytes, "loader_samples_per_s": rate, "train_step_ms": None,
             "test_accuracy": None}
        if row.model:
            torch.manual_seed(cfg.seed)
            test = make_loader(test_url, batch_size=cfg.batch_size, options=row.options, train=False)
            r["train_step_ms"], r["test_accuracy"] = fit_and_score(
                build_model(row, len(index.labels)), loader, test, epochs=cfg.epochs, lr=cfg.lr, label=row.label)
        results.append(r)
        print(f"  {row.label}: {rate:.0f} samples/s", flush=True)
    return results


def format_audio_table(results: list[dict], batch_size: int) -> str:
    base = next(r for r in results if r["representation"].startswith("mel"))
    lines = [f"| audio representation | stored bytes/sample (tar) | payload bytes/sample | vs 16-bit PCM (payload) "
             f"| input bytes/batch ({batch_size}) | loader samples/s | vs mel | train step ms | test accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        step = "—" if r["train_step_ms"] is None else f"{r['train_step_ms']:.1f}"
        acc = "—" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}%"
        lines.append(
            f"| {r['representation']} | {r['stored_bytes_per_sample']:,.0f} | {r['payload_bytes_per_sample']:,.0f} "
            f"| {r['pcm16_bytes_per_sample'] / r['payload_bytes_per_sample']:.1f}x | {r['input_bytes_per_batch']:,} "
            f"| {r['loader_samples_per_s']:.0f} | {r['loader_samples_per_s'] / base['loader_samples_per_s']:.1f}x "
            f"| {step} | {acc} |")
    return "\n".join(lines)
