"""What a source is made of, for every kind of source (folders, tars, tables): :class:`Item` (one sample),
:class:`Source` (a label list and an ordered item sequence), tar-safe keys and rank shares."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..media.audio import AUDIO_EXTS

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm")
MEDIA_EXTS = IMAGE_EXTS + AUDIO_EXTS
_UNSAFE = re.compile(r"[^A-Za-z0-9_/-]")
ORDER_SEED = 0x5EED  # the fixed seed of a source's shuffled item order (a pure function of its listing)
RUNS = 16  # a table or tar source in shuffled order is read as this many runs at once, interleaved
SHUFFLED = "order: shuffled"  # in a shuffled source's fingerprint listing: a resume must not mix two orders


@dataclass(frozen=True)
class Item:
    """One source sample: a tar-safe key, its label index, a name for messages, and its bytes or path."""

    key: str
    label: int
    name: str
    data: bytes | None = None
    path: str | None = None
    error: str | None = None  # a problem found while reading the source (reported as a skip)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            return f.read()


def safe_key(rel: str) -> str:
    """A WebDataset key from a relative path: no extension, no dots (they split keys), no ``..``."""
    stem = rel.rsplit(".", 1)[0] if "." in os.path.basename(rel) else rel
    return _UNSAFE.sub("_", stem.replace(os.sep, "/")).strip("/")


@dataclass
class Source:
    labels: list[str]
    items: Iterator[Item]
    total: int | None  # None when unknown before reading (tars)
    fingerprint: str  # changes when the source's content list changes (a resumed run must see the same)


def fingerprint(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def span(n: int, part: tuple[int, int]) -> tuple[int, int]:
    """``[lo, hi)``: rank ``part[0]`` of ``part[1]``'s contiguous share of ``n`` things."""
    rank, world = part
    return rank * n // world, (rank + 1) * n // world


def run_picks(sizes: list[int]) -> np.ndarray:
    """For each position of a shuffled order, the run its item comes from: a seeded random interleaving of
    runs of ``sizes`` items (a uniform shuffle of the multiset of run numbers), each run read in its order."""
    runs = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    return np.random.default_rng(ORDER_SEED).permutation(runs)


def interleave(runs: list[Iterator[Item]], picks: Iterable[int] | None = None, seed: int = 0) -> Iterator[Item]:
    """The items of ``runs`` in the order ``picks`` (run numbers, see :func:`run_picks`) takes them, or, for
    runs of unknown length, each next item from a run drawn uniformly among the unfinished ones (seeded)."""
    if picks is not None:
        for k in picks:
            yield next(runs[k])
        return
    rng, live = np.random.default_rng([ORDER_SEED, seed]), list(runs)
    while live:
        k = int(rng.integers(len(live)))
        item = next(live[k], None)
        if item is None:
            live.pop(k)
        else:
            yield item
