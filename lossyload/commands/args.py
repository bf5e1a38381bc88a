"""Arguments several commands share: ``KEY=VALUE`` pairs with JSON values and fsspec storage options."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import LossyloadError


def json_value(text: str) -> Any:
    """``text`` as JSON, else the text itself (``--set name=foo`` needs no quotes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` as a dict of JSON values; a pair without ``=`` is an error naming ``flag``."""
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep:
            raise LossyloadError(f"{flag} {kv!r}: expected KEY=VALUE")
        out[key.strip()] = json_value(value)
    return out


def add_storage_option(p: argparse.ArgumentParser, what: str = "a bucket URL") -> None:
    """``--storage-option KEY=VALUE`` (repeatable)."""
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help=f"fsspec storage option for {what}, JSON value, e.g. endpoint_url=http://127.0.0.1:9000 or "
                   "profile=myprofile (repeatable)")


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--storage-option`` pairs as fsspec storage options (None when there are none)."""
    return key_values(args.storage_option, "--storage-option") or None
