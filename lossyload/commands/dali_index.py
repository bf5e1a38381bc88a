"""``lossyload dali-index URL``: DALI index files for a local shard set (:mod:`lossyload.dali.index`); every
sample is checked by decoding it, bad ones are listed and left out."""

from __future__ import annotations

import argparse
import os

from ..dali.index import INDEX_DIR, build, local_root
from ..fs import check_inside, join, read_index


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="local dataset directory or index.json")
    p.add_argument("--codec", default=None, help="the codec the DALI loader will read with (default: the index's; "
                   "e.g. rgb over jpeg-dct JPEG shards): payloads are checked by decoding with it")
    p.add_argument("--out", default=None, help=f"where to write the index files (default: <dataset>/{INDEX_DIR})")


def run(args: argparse.Namespace) -> int:
    from ..loader.resolve import resolve_codec

    root, index = read_index(args.url)
    for shard in index.shards:
        check_inside(local_root(root), os.path.join(local_root(root), shard.url))
    out = args.out or os.path.join(local_root(root), INDEX_DIR)
    manifest = build(root, index, resolve_codec(index, args.codec, None, root), out)
    problems = [(s.url, k, r) for s in manifest.shards for k, r in s.problems]
    for url, key, reason in problems[:100]:
        print(f"{join(root, url)} [{key}]: {reason}")
    indexed = sum(len(s.keys) for s in manifest.shards)
    print(f"{out}: {len(manifest.shards)} DALI index files, {indexed} samples indexed, {len(problems)} left out")
    return 1 if problems else 0
