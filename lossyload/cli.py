"""``lossyload``: subcommands around a shard set (``inspect``, ``verify``, ``preview``), VAEs (``vae-check``), the bundled data (``make-photos``,
``make-keywords``) and the main job (``demo``)."""

from __future__ import annotations

import argparse
import sys

from .errors import LossyloadError


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="dataset directory or index.json")
    p.add_argument("--sample", action="store_true", help="also decode one sample and show its tensors")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option for a bucket URL, JSON value, e.g. endpoint_url=http://127.0.0.1:9000 "
                   "(repeatable)")


def _inspect(args: argparse.Namespace) -> int:
    from .fs import read_index
    from .loader.dataset import resolve_codec
    from .shard.cli import key_values

    storage = key_values(args.storage_option, "--storage-option") or None
    root, index = read_index(args.url, storage)
    codec = resolve_codec(index, None, None, root, storage)
    n = max(index.samples, 1)
    print(f"{root}: lossyload index v{index.version}")
    shown = {k: (f"<{len(v)} entries>" if isinstance(v, list) and len(str(v)) > 60 else v) for k, v in index.config.items()}
    print(f"  codec     {index.codec} {shown}")
    if index.assets:
        print(f"  assets    {', '.join(index.assets)} (sha256 checked on open)")
    print(f"  member    .{index.member} + .cls")
    print(f"  samples   {index.samples} in {len(index.shards)} shards, {index.bytes:,} bytes ({index.bytes / n:,.0f}/sample)")
    print(f"  labels    {len(index.labels)}: {', '.join(index.labels[:10])}{' ...' if len(index.labels) > 10 else ''}")
    print(f"  transcoded {sum(len(s.transcoded) for s in index.shards)}, skipped at shard time {len(index.skipped)}")
    for k, spec in codec.output_spec().items():
        print(f"  output    {k}: {spec.describe()}")
    if args.sample:
        from . import open_dataset

        first = next(iter(open_dataset(args.url, train=False, shuffle=False, storage_options=storage)), None)
        if first is None:
            raise LossyloadError(f"{root}: --sample: the dataset holds no samples")
        x, y = first
        for k, v in (x.items() if isinstance(x, dict) else [("x", x)]):
            print(f"  sample    {k}: {tuple(v.shape)} {v.dtype}  label {y} ({index.labels[y]})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import dali, demo, preview, vae_check, verify
    from .datasets import keywords, photos

    p = argparse.ArgumentParser(prog="lossyload", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {
        "inspect": (_inspect_args, _inspect, "describe a shard set from its index"),
        "verify": (verify.add_arguments, verify.run,
                   "check every shard against the index (size, sha256, samples, keys, payload dtypes/shapes); exit 1 on any mismatch"),
        "make-photos": (photos.add_arguments, photos.run, "build the bundled photo-of-origin image set"),
        "make-keywords": (keywords.add_arguments, keywords.run, "build the offline keyword-spotting audio set"),
        "preview": (preview.add_arguments, preview.run, "write a PNG grid of vae latents through a linear latent-to-RGB map"),
        "vae-check": (vae_check.add_arguments, vae_check.run, "measure how equivariant a VAE's latents are to flips and crops"),
        "dali-index": (dali.add_arguments, dali.run,
                       "write DALI index files for a local shard set (checks every sample; bad ones are left out)"),
        "demo": (demo.add_arguments, demo.run, "the main job: shard, stream and train pixels vs DCT vs VAE latents, log-mel vs VQ codes vs EnCodec"),
    }
    for name, (add, _, text) in commands.items():
        add(sub.add_parser(name, help=text, description=text))
    args = p.parse_args(argv)
    try:
        return commands[args.command][1](args)
    except LossyloadError as exc:
        print(f"lossyload {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
