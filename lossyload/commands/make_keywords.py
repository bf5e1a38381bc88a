"""``lossyload make-keywords DEST``: build the bundled keyword-spotting set
(:mod:`lossyload.datasets.keywords`)."""

from __future__ import annotations

import argparse
import sys

from ..datasets.keywords import KeywordsConfig, build_keywords
from ..datasets.speech_commands import import_speech_commands
from ..errors import LossyloadError

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lossyload make-keywords DEST``."""
    defaults = KeywordsConfig()
    parser.add_argument("dest", help="output folder (DEST/{train,validation,test}/<word>/, or DEST/{split}.tar)")
    parser.add_argument("--voices", type=int, default=None, help="a seed-chosen subset of N voices (default: all)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--format", choices=("wav", "flac"), default=None, help="audio format (default wav)")
    parser.add_argument("--tars", action="store_true", help="write WebDataset tars DEST/{split}.tar")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--speech-commands", metavar="PATH", default=None,
                        help="import a Google Speech Commands folder instead of synthesising")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the set described by ``args`` (see :func:`add_arguments`); print a one-line summary."""
    try:
        if args.speech_commands:
            if args.voices is not None or args.format == "flac":
                raise ValueError("--voices and --format flac do not apply to --speech-commands")
            summary = import_speech_commands(args.speech_commands, args.dest, tars=args.tars, progress=not args.quiet)
        else:
            config = KeywordsConfig(max_voices=args.voices, seed=args.seed, format=args.format or "wav", tars=args.tars)
            summary = build_keywords(args.dest, config, workers=args.workers, progress=not args.quiet)
    except (FileExistsError, ValueError, LossyloadError) as exc:
        print(f"make-keywords: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dest}: {len(summary['labels'])} words, {summary['totals']}, {summary['bytes']} bytes")
    return 0
