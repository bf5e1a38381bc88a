"""``lossyload make-photos DEST``: build the bundled photo set
(:mod:`lossyload.datasets.photos`)."""

from __future__ import annotations

import argparse
import sys

from ..datasets.photos import PhotosConfig, build_photos

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lossyload make-photos DEST``."""
    defaults = PhotosConfig()
    parser.add_argument("dest", help="output folder (ImageFolder layout: DEST/train, DEST/validation, DEST/test)")
    parser.add_argument("--train-per-class", type=int, default=defaults.train_per_class)
    parser.add_argument("--val-per-class", type=int, default=defaults.val_per_class)
    parser.add_argument("--test-per-class", type=int, default=defaults.test_per_class)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the set described by ``args`` (see :func:`add_arguments`); print a one-line summary."""
    try:
        config = PhotosConfig(train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                              val_per_class=args.val_per_class, seed=args.seed)
        summary = build_photos(args.dest, config, progress=not args.quiet)
    except (FileExistsError, ValueError) as exc:
        print(f"make-photos: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dest}: {len(summary['classes'])} classes, {summary['counts']}, {summary['bytes']} bytes")
    return 0
