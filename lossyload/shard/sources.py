"""Where samples come from: an ImageFolder-layout directory, existing WebDataset tars, or a table (Parquet,
``datasets`` folder, CSV/JSONL manifest: :mod:`.tables`).

A source is a label list plus a deterministic, ordered sequence of :class:`Item`; the shard job resumes by
item position, so the order must not depend on anything but the source's content and the job's ``shuffle``.
Shuffled (the job's default), since a class-sorted stream cannot be mixed by a loader's shuffle buffer: a
folder's or manifest's items in a seeded random order; a table's rows read as :data:`~.items.RUNS` runs at
once in a seeded random interleaving; tars in a seeded order, a rank's share read :data:`~.items.RUNS` tars
at once, interleaved. Unshuffled, every source keeps the order it has.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

from ..errors import LossyloadError
from ..fs import filesystem, open_url
from ..loader import tario
from . import tables
from .items import IMAGE_EXTS, MEDIA_EXTS, ORDER_SEED, RUNS, SHUFFLED, Item, Source, interleave, safe_key, span  # noqa: F401
from .items import fingerprint as _fingerprint


def image_folder(root: str, part: tuple[int, int] = (0, 1), shuffle: bool = False) -> Source:
    """Class-subfolder layout: ``root/<class>/**/<file>``; every regular file is an item (non-images are
    reported as skipped by the encoder, never silently ignored). Hidden files and folders are ignored.

    Items come in folder order, or with ``shuffle`` in a seeded random order (fixed seed: a pure function of
    the listing, so resuming works). Shuffle for training sets: in folder order every shard holds one or two
    classes, and a loader's shuffle buffer, which mixes only nearby samples, hands training class-sorted
    batches."""
    if not os.path.isdir(root):
        raise LossyloadError(f"{root}: not a directory")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise LossyloadError(f"{root}: no class subfolders (expected ImageFolder layout root/<class>/<image>)")
    files: list[tuple[str, int]] = []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, cls)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [(os.path.join(dirpath, f), label) for f in sorted(filenames) if not f.startswith(".")]
    seen: set[str] = set()
    items = []
    for path, label in files:
        key = safe_key(os.path.relpath(path, root))
        while key in seen:  # a.jpg and a.png in one folder
            key += "_"
        seen.add(key)
        items.append(Item(key=key, label=label, name=path, path=path))
    listing = [f"{it.key}\t{it.label}\t{os.path.getsize(it.path)}" for it in items]  # type: ignore[arg-type]
    if shuffle:
        random.Random(ORDER_SEED).shuffle(items)
        listing.append(SHUFFLED)  # a resume must not mix the two orders
    lo, hi = span(len(items), part)
    return Source(labels=classes, items=iter(items[lo:hi]), total=hi - lo, fingerprint=_fingerprint(listing))


def webdataset_tars(urls: list[str], storage_options: dict | None = None, part: tuple[int, int] = (0, 1),
                    shuffle: bool = False) -> Source:
    """Existing WebDataset tars: the sample is the first member with an image or audio extension, the label the
    integer ``cls`` member. Labels are the class numbers seen (as strings), known once reading ends. A part
    (rank, world size) of the source is a contiguous share of the tars. With ``shuffle`` the tars come in a
    seeded order and a part's share is read as up to :data:`~.items.RUNS` runs of tars at once, each next
    sample from a run drawn at random (seeded): so the order depends on the world size."""
    labels: list[str] = []
    order = list(urls)
    if shuffle:
        random.Random(ORDER_SEED).shuffle(order)
    lo, hi = span(len(order), part)
    mine = order[lo:hi]
    seen: set[str] = set()

    def items() -> Iterator[Item]:
        if not shuffle:
            return read(mine)
        n = min(RUNS, len(mine))
        return interleave([read(mine[slice(*span(len(mine), (k, n)))]) for k in range(n)], seed=part[0])

    def read(tars: list[str]) -> Iterator[Item]:
        for url in tars:
            try:
                f = open_url(url, "rb", storage_options)
            except OSError as exc:  # a source that cannot be read at all stops the job, naming it
                raise LossyloadError(f"{url}: source tar cannot be read ({type(exc).__name__}: {exc})") from exc
            with f:
                for sample in tario.samples(f, url, check_names=False):
                    key = str(sample["__key__"])
                    ext = next((e for e in MEDIA_EXTS if e in sample), None)
                    error = None if ext else f"no image or audio member (members: {sorted(k for k in sample if not k.startswith('__'))})"
                    if tario.unsafe_name(key):
                        error = "unsafe member name (an absolute path or one with '..'): refused"
                    try:
                        label = int(sample.get("cls", b"").decode().strip())
                        if label < 0:
                            raise ValueError(label)
                    except ValueError:
                        label, error = 0, error or "missing, negative or non-integer 'cls' member"
                    while label >= len(labels):
                        labels.append(str(len(labels)))
                    data = sample[ext] if ext else b""
                    safe = safe_key(key)
                    if not error:  # keys that differ only in characters a key cannot hold stay distinct
                        while safe in seen:
                            safe += "_"
                        seen.add(safe)
                    yield Item(key=safe, label=label, name=f"{url}:{key}", data=data, error=error)

    return Source(labels=labels, items=items(), total=None,
                  fingerprint=_fingerprint(list(urls) + ([SHUFFLED] if shuffle else [])))


def open_source(src: str | list[str], storage_options: dict | None = None, part: tuple[int, int] = (0, 1),
                columns: Any = None, shuffle: bool = False) -> Source:
    """A class-folder directory (images or audio), a ``.tar`` URL, a brace pattern or a list of tar URLs, or
    a table source (Parquet, ``datasets`` ``save_to_disk`` folder, CSV/JSONL manifest: see :mod:`.tables`,
    whose :class:`~.tables.TableColumns` ``columns`` names the columns to read); ``part=(rank, world_size)``
    selects one rank's contiguous share (items of a folder or table, files of tars); ``shuffle``: the items
    in a seeded shuffled order (see the module's description)."""
    if isinstance(src, list):
        return webdataset_tars(src, storage_options, part, shuffle)
    if kind := tables.detect(src, storage_options):
        return tables.open_table(src, kind, storage_options, part, columns, shuffle)
    if src.endswith(".tar") or "{" in src:
        import braceexpand

        return webdataset_tars(list(braceexpand.braceexpand(src)), storage_options, part, shuffle)
    fs, path = filesystem(src, storage_options)
    if fs.isdir(path) and any(p.endswith(".tar") for p in fs.ls(path, detail=False)) and not any(
        fs.isdir(p) for p in fs.ls(path, detail=False)
    ):
        tars = sorted(fs.unstrip_protocol(p) for p in fs.ls(path, detail=False) if p.endswith(".tar"))
        return webdataset_tars(tars, storage_options, part, shuffle)
    return image_folder(src, part, shuffle)
