"""``lossyload``: subcommands around a shard set (``inspect``, ``verify``, ``preview``, ``dali-index``), VAEs
(``vae-check``, ``fit-vae``), the bundled data (``make-photos``, ``make-keywords``) and the main job (``demo``).

Each subcommand's module is imported only when that subcommand runs (``lossyload --help`` imports none of
them, and nothing here imports torch)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import LossyloadError

# name: (module, its add-arguments function, its run function, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "inspect": ("lossyload.commands.inspect", "add_arguments", "run", "describe a shard set from its index"),
    "verify": ("lossyload.commands.verify", "add_arguments", "run", "check every shard against the index (size, sha256, "
               "samples, keys, payload dtypes/shapes); exit 1 on any mismatch"),
    "preview": ("lossyload.commands.preview", "add_arguments", "run",
                "write a PNG grid of vae latents through a linear latent-to-RGB map"),
    "vae-check": ("lossyload.commands.vae_check", "add_arguments", "run",
                  "measure how equivariant a VAE's latents are to flips and crops"),
    "fit-vae": ("lossyload.commands.fit_vae", "add_arguments", "run",
                "fit a small VAE on a folder of images, starting from resampling (a vae codec model when no pretrained "
                "one is cached)"),
    "dali-index": ("lossyload.commands.dali_index", "add_arguments", "run",
                   "write DALI index files for a local shard set (checks every sample; bad ones are left out)"),
    "make-photos": ("lossyload.commands.make_photos", "add_arguments", "run", "build the bundled photo-of-origin image set"),
    "make-keywords": ("lossyload.commands.make_keywords", "add_arguments", "run",
                      "build the offline keyword-spotting audio set"),
    # the one entry into the lab (lossyload/lab), by name: the library itself never imports it
    "demo": ("lossyload.lab.cli", "add_demo_arguments", "run_demo", "the main job: the reference trainer's demo "
             "preset (every codec through the loader, the rows behind each target trained to their plateau; about 10 minutes on 2 CPU cores)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    p = argparse.ArgumentParser(prog="lossyload", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    module = None
    for name, (path, add, _, text) in COMMANDS.items():
        sp = sub.add_parser(name, help=text, description=text)
        if name == chosen:
            module = importlib.import_module(path)
            getattr(module, add)(sp)
    args = p.parse_args(argv)
    args.argv = [a for a in argv if a != args.command]  # the subcommand's own arguments
    try:
        return getattr(module, COMMANDS[args.command][2])(args)
    except LossyloadError as exc:
        print(f"lossyload {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
