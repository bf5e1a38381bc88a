"""``lossyload-shard SRC DEST --codec NAME``: encode a dataset into codec-domain WebDataset shards."""

from __future__ import annotations

import argparse
import os
import sys

from ..codecs import list_codecs
from ..errors import LossyloadError
from ..shard.distributed import merge_parts
from ..shard.job import ShardJob, config_from_dataset, run_job
from ..shard.tables import TableColumns
from .args import add_storage_option, key_values, storage_options


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lossyload-shard",
        description="Turn an image or audio folder (class subfolders) or WebDataset tars into codec-domain shards "
        "with a self-describing index.json. Rerun the same command to resume an interrupted run.",
    )
    p.add_argument("src", nargs="?", help="class-folder directory (images or audio), a .tar URL, a brace pattern "
                   "(data-{000..009}.tar) or a folder of tars; a Parquet file or folder of them, a Hugging Face "
                   "datasets save_to_disk folder, or a CSV/JSONL manifest of path,label rows")
    p.add_argument("dest", nargs="?", help="output directory (or fsspec URL)")
    p.add_argument("--codec", default="jpeg-dct", choices=list_codecs())
    media = p.add_mutually_exclusive_group()
    media.add_argument("--image-column", metavar="NAME", help="table sources: the column of image bytes (binary, "
                       "or a datasets Image struct); in a manifest, the column of paths (default: image, img or "
                       "audio if present, else the one bytes column; 'path' in a manifest)")
    media.add_argument("--audio-column", metavar="NAME", help="table sources: the column of audio file bytes "
                       "(binary, or a datasets Audio struct); in a manifest, the column of paths")
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="table sources: the label column (class indices, or names mapped to indices in sorted "
                   "order and recorded in the index; default: label)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="codec config field, JSON value, e.g. --set storage='\"coefficients\"' --set keep=[16,8] "
                   "(repeatable)")
    p.add_argument("--config-from", metavar="DATASET",
                   help="start from the codec config of an existing dataset (e.g. the training split's fitted vq "
                   "codebook for the validation and test splits); --set and the options below override it")
    p.add_argument("--storage", choices=["jpeg", "coefficients"], help="jpeg-dct: keep JPEG bytes or pre-extract")
    p.add_argument("--resize", type=int, help="resize the short side to this many pixels at shard time")
    p.add_argument("--quality", type=int, help="JPEG quality for transcoded sources")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--maxsize", type=_size, default=256 << 20, help="bytes per shard, e.g. 512M (default 256M)")
    p.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    p.add_argument("--on-error", choices=["skip", "raise"], default="skip",
                   help="skip (count and report) bad inputs, or stop at the first")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at DEST")
    add_storage_option(p, "SRC and DEST")
    p.add_argument("--rank", type=int, help="distributed sharding: this process's rank (default: $RANK from torchrun, else 0)")
    p.add_argument("--world-size", type=int,
                   help="distributed sharding: number of ranks; each writes DEST/part-R-of-N and the last to finish "
                   "writes the merged index (default: $WORLD_SIZE from torchrun, else 1)")
    p.add_argument("--merge", metavar="DEST", help="only merge the complete parts at DEST into DEST/index.json")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--keep-order", dest="shuffle", action="store_false",
                       help="write samples in the source's order (folder order, tar order, row order) instead of "
                       "the default seeded shuffled order, in which every shard mixes the classes (a loader's "
                       "shuffle buffer only mixes nearby samples: keep the order only for evaluation sets or "
                       "sources already shuffled)")
    order.add_argument("--shuffle", dest="shuffle", action="store_true", default=True,
                       help="the seeded shuffled order (the default; kept for older command lines)")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args: argparse.Namespace, storage_options: dict | None = None) -> dict:
    config = config_from_dataset(args.config_from, args.codec, storage_options) if args.config_from else {}
    config.update(key_values(args.set, "--set"))
    for key in ("storage", "resize", "quality"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config




def _world(args: argparse.Namespace) -> tuple[int, int, int]:
    """(rank, world size, local rank): the flags, else what torchrun exports, else a single process."""
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", 0))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def _use_local_gpu(local_rank: int) -> None:
    """Under torchrun on a GPU node, each rank encodes on its own GPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.merge and not (args.src and args.dest):
        parser.error("SRC and DEST are required (or --merge DEST)")
    try:
        storage = storage_options(args)
        rank, world, local_rank = _world(args)
        if args.merge:
            merged = merge_parts(args.merge, world, storage, require=True)
            print(f"{args.merge}: merged {merged.samples} samples in {len(merged.shards)} shards from {world} parts")
            return 0
        if world > 1:
            _use_local_gpu(local_rank)
        job = ShardJob(
            src=args.src, dest=args.dest, codec=args.codec, config=config_from_args(args, storage), maxcount=args.maxcount,
            maxsize=args.maxsize, workers=args.workers, on_error=args.on_error, overwrite=args.overwrite,
            progress=not args.no_progress, storage_options=storage, rank=rank, world_size=world,
            columns=TableColumns(media=args.image_column or args.audio_column, label=args.label_column),
            shuffle=args.shuffle,
        )
        summary = run_job(job)
    except LossyloadError as exc:
        print(f"lossyload-shard: error: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
