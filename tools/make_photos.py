"""Build the offline ``photos`` dataset: ``python tools/make_photos.py DEST [--train-per-class N] ...``."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from lossyload.commands.make_photos import add_arguments, run  # noqa: E402

parser = argparse.ArgumentParser(prog="make_photos", description=__doc__)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
