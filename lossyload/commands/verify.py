"""``lossyload verify URL``: every shard of a dataset against its index (:mod:`lossyload.verify`); exit 1 on any
problem."""

from __future__ import annotations

import argparse
import sys

from ..verify import verify
from .args import add_storage_option, storage_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="dataset directory or index.json (or a bucket URL)")
    p.add_argument("--no-decode", action="store_true", help="check framing, sizes and hashes only (faster)")
    add_storage_option(p)
    p.add_argument("--show", type=int, default=100, help="list at most this many problems (default 100)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    storage = storage_options(args)
    report = verify(args.url, decode=not args.no_decode, storage_options=storage, progress=not args.no_progress)
    for problem in report.problems[: args.show]:
        print(problem)
    if len(report.problems) > args.show:
        print(f"... and {len(report.problems) - args.show} more")
    status = f"{len(report.problems)} problems" if report.problems else "OK"
    print(f"{args.url}: {report.shards} shards, {report.samples} samples, {report.bytes:,} bytes checked: {status}",
          file=sys.stderr if report.problems else sys.stdout)
    return 1 if report.problems else 0
