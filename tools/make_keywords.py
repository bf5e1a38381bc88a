"""Build the offline ``keywords`` dataset: ``python tools/make_keywords.py DEST [--voices N] [--tars] ...``."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from lossyload.commands.make_keywords import add_arguments, run  # noqa: E402

parser = argparse.ArgumentParser(prog="make_keywords", description=__doc__)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
