"""``lossyload inspect URL``: what a shard set holds, from its index (and one decoded sample with ``--sample``)."""

from __future__ import annotations

import argparse

from ..errors import LossyloadError
from .args import add_storage_option, storage_options


def describe(url: str, storage_options: dict | None = None, *, sample: bool = False) -> str:
    """A few lines describing shard set ``url``: codec and config, assets, members, counts, labels, output
    tensors (and, with ``sample``, the first sample's tensors)."""
    from ..fs import read_index
    from ..loader.resolve import resolve_codec

    root, index = read_index(url, storage_options)
    codec = resolve_codec(index, None, None, root, storage_options)
    n = max(index.samples, 1)
    shown = {k: (f"<{len(v)} entries>" if isinstance(v, list) and len(str(v)) > 60 else v) for k, v in index.config.items()}
    lines = [f"{root}: lossyload index v{index.version}", f"  codec     {index.codec} {shown}"]
    if index.assets:
        lines.append(f"  assets    {', '.join(index.assets)} (sha256 checked on open)")
    lines += [f"  member    .{index.member} + .cls",
              f"  samples   {index.samples} in {len(index.shards)} shards, {index.bytes:,} bytes ({index.bytes / n:,.0f}/sample)",
              f"  labels    {len(index.labels)}: {', '.join(index.labels[:10])}{' ...' if len(index.labels) > 10 else ''}",
              f"  transcoded {sum(len(s.transcoded) for s in index.shards)}, skipped at shard time {len(index.skipped)}"]
    lines += [f"  output    {k}: {spec.describe()}" for k, spec in codec.output_spec().items()]
    if sample:
        from .. import open_dataset

        first = next(iter(open_dataset(url, train=False, shuffle=False, storage_options=storage_options)), None)
        if first is None:
            raise LossyloadError(f"{root}: --sample: the dataset holds no samples")
        x, y = first
        for k, v in (x.items() if isinstance(x, dict) else [("x", x)]):
            lines.append(f"  sample    {k}: {tuple(v.shape)} {v.dtype}  label {y} ({index.labels[y]})")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="dataset directory or index.json")
    p.add_argument("--sample", action="store_true", help="also decode one sample and show its tensors")
    add_storage_option(p)


def run(args: argparse.Namespace) -> int:
    print(describe(args.url, storage_options(args), sample=args.sample))
    return 0
