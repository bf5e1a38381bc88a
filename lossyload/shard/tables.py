"""Sources published as tables: Parquet files (a file, or a folder of them, e.g. a Hugging Face ``datasets``
Parquet export), a folder written by ``datasets``' ``save_to_disk`` (Arrow IPC stream files, read with
pyarrow; ``datasets`` itself is not needed), and a CSV or JSON Lines manifest of ``path,label`` rows.

One column holds each sample's bytes: binary, or a struct with a ``bytes`` field (and a ``path`` used when the
bytes are null), as ``datasets`` stores its ``Image`` and ``Audio`` features; another holds its label. String
labels are mapped to indices in sorted order and recorded in the index; integer labels are indices, named by
the ``datasets`` ``ClassLabel`` names when the files carry them (else ``"0"``, ``"1"``, ...). A row without
bytes or label is skipped and listed by its file and row number, as an undecodable row is.

Shuffled (``shuffle``), a manifest's rows come in a seeded random order; a Parquet or Arrow table, whose rows
are read in row groups, is read as :data:`~.items.RUNS` contiguous runs of rows at once, in a seeded random
interleaving that is a pure function of the row count (so a rank's share is its slice of the one order).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LossyloadError, require
from ..fs import filesystem, is_local
from .items import ORDER_SEED, RUNS, SHUFFLED, Item, Source, interleave, run_picks, safe_key, span
from .items import fingerprint as _fingerprint

MANIFESTS = (".csv", ".jsonl", ".ndjson")
_MEDIA_NAMES = ("image", "img", "audio", "bytes")


@dataclass(frozen=True, kw_only=True)
class TableColumns:
    """Which columns hold the sample (bytes, or a path in a manifest) and its label. ``media=None``: ``image``,
    ``img`` or ``audio`` if present, else the one bytes column (``path`` in a manifest)."""

    media: str | None = None
    label: str = "label"


@dataclass(frozen=True)
class _File:
    """One table file: its path in ``fs``, byte size and format (``parquet`` or ``arrow``)."""

    path: str
    size: int
    kind: str


def detect(src: str, storage_options: dict | None = None) -> str | None:
    """``"manifest"``, ``"parquet"`` or ``"arrow"`` (``save_to_disk``) when ``src`` is such a source, else None."""
    if src.lower().endswith(MANIFESTS):
        return "manifest"
    if src.lower().endswith(".parquet"):
        return "parquet"
    fs, path = filesystem(src, storage_options)
    if not fs.isdir(path):
        return None
    names = {posixpath.basename(p) for p in fs.ls(path, detail=False)}
    if "dataset_dict.json" in names:
        splits = sorted(n for n in names if fs.isdir(f"{path}/{n}"))
        raise LossyloadError(f"{src}: a datasets DatasetDict; pass one of its splits, e.g. {src.rstrip('/')}/"
                             f"{splits[0] if splits else 'train'} (splits: {splits})")
    if "state.json" in names and any(n.endswith(".arrow") for n in names):
        return "arrow"
    if any(fs.glob(f"{path}/{'*/' * depth}*.parquet") for depth in range(3)):  # e.g. a Parquet export's data/
        return "parquet"
    return None


def open_table(src: str, kind: str, storage_options: dict | None = None, part: tuple[int, int] = (0, 1),
               columns: TableColumns | None = None, shuffle: bool = False) -> Source:
    """The :class:`Source` of a table source of ``kind`` (see :func:`detect`)."""
    columns = columns or TableColumns()
    if kind == "manifest":
        return manifest(src, storage_options, part, columns, shuffle)
    fs, path = filesystem(src, storage_options)
    files = _table_files(fs, path, kind, src)
    pa = require("pyarrow", "tables")
    schema, features, counts = _survey(fs, files, src)
    media = _media_column(schema, columns, src, pa)
    label = _column(schema, columns.label, "label", src)
    raw = [v for f in files for v in _column_values(fs, f, label)]
    labels, index_of = _label_map(raw, features.get(label, {}).get("names"))
    total = sum(counts)
    lo, hi = span(total, part)
    listing = [f"{f.path}\t{f.size}" for f in files] + [f"columns\t{media}\t{label}", json.dumps(labels)]

    def between(a: int, b: int) -> Iterator[Item]:  # rows [a, b) of the source, in file order
        start = 0
        for f, n in zip(files, counts):
            if start + n > a and start < b:
                rows = _rows(fs, f, [media, label], start, a, b)
                for row, (value, lab) in rows:
                    yield _table_item(src, fs, f, row, value, lab, index_of, raw_path=path)
            start += n

    if not shuffle:
        return Source(labels=labels, items=between(lo, hi), total=hi - lo, fingerprint=_fingerprint(listing))
    runs = [span(total, (k, RUNS)) for k in range(RUNS)]
    picks = run_picks([b - a for a, b in runs])
    before, mine = (np.bincount(picks[s], minlength=RUNS) for s in (slice(0, lo), slice(lo, hi)))
    reads = [between(a + int(m), a + int(m) + int(n)) for (a, _), m, n in zip(runs, before, mine)]
    return Source(labels=labels, items=interleave(reads, picks[lo:hi]), total=hi - lo,
                  fingerprint=_fingerprint(listing + [SHUFFLED]))


# ------------------------------------------------------------------------------------------- files
def _table_files(fs, path: str, kind: str, src: str) -> list[_File]:
    if kind == "arrow":
        with fs.open(f"{path}/state.json", "rb") as f:
            state = json.loads(f.read())
        names = [d["filename"] for d in state.get("_data_files", [])]
        paths = [f"{path}/{n}" for n in names] or sorted(p for p in fs.ls(path, detail=False) if p.endswith(".arrow"))
    elif path.endswith(".parquet"):
        paths = [path]
    else:
        paths = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    if not paths:
        raise LossyloadError(f"{src}: no {kind} files")
    return [_File(p, fs.size(p), "arrow" if kind == "arrow" else "parquet") for p in paths]


def _where(fs, path: str) -> str:
    """``path`` as a user named it: a plain path when local, else a URL."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _open(fs, f: _File):
    """The file for pyarrow: memory-mapped when local, else an fsspec file."""
    import pyarrow as pa

    return pa.memory_map(f.path) if is_local(fs) else fs.open(f.path, "rb")


def _survey(fs, files: list[_File], src: str) -> tuple[Any, dict, list[int]]:
    """(schema of the first file, ``datasets`` features recorded in the files, rows per file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, counts = None, []
    for f in files:
        with _open(fs, f) as fh:
            try:
                if f.kind == "parquet":
                    pf = pq.ParquetFile(fh)
                    this, n = pf.schema_arrow, pf.metadata.num_rows
                else:
                    reader = pa.ipc.open_stream(fh)
                    this, n = reader.schema, sum(b.num_rows for b in reader)
            except (pa.ArrowInvalid, OSError) as exc:
                raise LossyloadError(f"{_where(fs, f.path)}: not a readable {f.kind} file ({exc})") from exc
        if schema is not None and this.names != schema.names:
            raise LossyloadError(f"{_where(fs, f.path)}: columns {this.names} differ from the first file's "
                                 f"{schema.names}")
        schema = schema or this
        counts.append(n)
    meta = (schema.metadata or {}).get(b"huggingface")
    features = json.loads(meta).get("info", {}).get("features", {}) if meta else {}
    if not features and files[0].kind == "arrow":
        info = posixpath.join(posixpath.dirname(files[0].path), "dataset_info.json")
        if fs.exists(info):
            with fs.open(info, "rb") as fh:
                features = json.loads(fh.read()).get("features", {}) or {}
    return schema, features, counts


def _column(schema, name: str, what: str, src: str) -> str:
    if name not in schema.names:
        raise LossyloadError(f"{src}: no {what} column {name!r}; the columns are {schema.names}")
    return name


def _is_bytes(t, pa) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    return pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields))


def _media_column(schema, columns: TableColumns, src: str, pa) -> str:
    if columns.media is not None:
        name = _column(schema, columns.media, "image/audio", src)
        if not _is_bytes(schema.field(name).type, pa):
            raise LossyloadError(f"{src}: column {name!r} holds {schema.field(name).type}, not bytes (nor a struct "
                                 "with a 'bytes' field)")
        return name
    found = [n for n in _MEDIA_NAMES if n in schema.names] or [
        f.name for f in schema if _is_bytes(f.type, pa) and f.name != columns.label]
    if len(found) != 1 and not (found and found[0] in _MEDIA_NAMES):
        raise LossyloadError(f"{src}: which column holds the images or audio? pass --image-column or "
                             f"--audio-column; the columns are {schema.names}")
    return found[0]


def _batches(fs, f: _File, cols: list[str], row_groups: list[int] | None = None) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open(fs, f) as fh:
        if f.kind == "parquet":
            yield from pq.ParquetFile(fh).iter_batches(batch_size=256, columns=cols, row_groups=row_groups)
        else:
            for b in pa.ipc.open_stream(fh):
                yield b.select(cols)


def _column_values(fs, f: _File, col: str) -> Iterator[Any]:
    for b in _batches(fs, f, [col]):
        yield from b.column(0).to_pylist()


def _rows(fs, f: _File, cols: list[str], start: int, lo: int, hi: int) -> Iterator[tuple[int, tuple]]:
    """``(row number in the file, values)`` of rows ``[lo, hi)`` of the source (this file's rows begin at
    ``start``); of a Parquet file only the row groups that hold them are read."""
    groups, first = None, 0
    if f.kind == "parquet":
        import pyarrow.parquet as pq

        with _open(fs, f) as fh:
            meta = pq.ParquetFile(fh).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        ends = [start + sum(sizes[: i + 1]) for i in range(len(sizes))]
        groups = [i for i, end in enumerate(ends) if end > lo and end - sizes[i] < hi]
        first = (ends[groups[0]] - sizes[groups[0]] - start) if groups else 0
    row = first
    for b in _batches(fs, f, cols, groups):
        for values in zip(*(b.column(i).to_pylist() for i in range(len(cols)))):
            if lo <= start + row < hi:
                yield row, values
            row += 1


# ------------------------------------------------------------------------------------------- labels
def _label_map(raw: list, names: list[str] | None) -> tuple[list[str], dict]:
    """``(label names, value -> index)``: ints are indices (named by ``names`` when given); anything else is
    a name, indexed in sorted order. A CSV's text ``"3"`` counts as the int 3 when every label is a digit string."""
    present = [v for v in raw if v is not None]
    if present and all(isinstance(v, str) and v.strip().isdigit() for v in present):
        present = [int(v) for v in present]
        raw[:] = [None if v is None else int(v) for v in raw]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        top = max((v for v in present if v >= 0), default=-1)
        labels = list(names) if names and len(names) > top else [str(i) for i in range(top + 1)]
        return labels, {i: i for i in range(len(labels))}
    labels = sorted({str(v) for v in present})
    return labels, {name: i for i, name in enumerate(labels)}


def _label(value: Any, index_of: dict) -> tuple[int, str | None]:
    if value is None:
        return 0, "no label (null)"
    if isinstance(value, str) and value.strip().isdigit() and value not in index_of:
        value = int(value)
    key = value if isinstance(value, int) and not isinstance(value, bool) else str(value)
    if key not in index_of:
        return 0, f"label {value!r} is not a class index (negative: unlabelled)"
    return index_of[key], None


# ------------------------------------------------------------------------------------------- items
def _table_item(src: str, fs, f: _File, row: int, value: Any, lab: Any, index_of: dict, raw_path: str) -> Item:
    rel = posixpath.relpath(f.path, raw_path) if f.path != raw_path else posixpath.basename(f.path)
    name = f"{_where(fs, f.path)} row {row}"
    key = f"{safe_key(rel)}/{row:08d}"
    label, error = _label(lab, index_of)
    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None and isinstance(value, dict) and value.get("path"):
        return Item(key=key, label=label, name=name, path=value["path"], error=error)
    if data is None:
        error = error or "no bytes (null value)"
    return Item(key=key, label=label, name=name, data=data or b"", error=error)


def manifest(src: str, storage_options: dict | None = None, part: tuple[int, int] = (0, 1),
             columns: TableColumns | None = None, shuffle: bool = False) -> Source:
    """A CSV (with a header row) or JSON Lines file of ``path,label`` rows; relative paths are relative to the
    manifest's folder, and may be fsspec URLs (read with ``storage_options``). ``shuffle``: the rows in a
    seeded random order."""
    columns = columns or TableColumns()
    fs, path = filesystem(src, storage_options)
    try:
        with fs.open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LossyloadError(f"{src}: manifest cannot be read ({type(exc).__name__}: {exc})") from exc
    rows = _manifest_rows(text, src)
    have = sorted({k for r in rows for k in r}) if rows else []
    media = columns.media or "path"
    for col, what in ((media, "path"), (columns.label, "label")):
        if rows and col not in have:
            raise LossyloadError(f"{src}: no {what} column {col!r}; the columns are {have}")
    raw = [r.get(columns.label) or None for r in rows]
    labels, index_of = _label_map(raw, None)
    base = src.rsplit("/", 1)[0] if "/" in src else "."
    order = list(range(len(rows)))
    if shuffle:
        random.Random(ORDER_SEED).shuffle(order)
    lo, hi = span(len(rows), part)
    listing = [f"{r.get(media)}\t{r.get(columns.label)}" for r in rows] + [json.dumps(labels)]

    def items() -> Iterator[Item]:
        seen: set[str] = set()
        for n in order[lo:hi]:
            yield _manifest_item(rows[n], raw[n], n, src, base, media, index_of, seen, storage_options)

    return Source(labels=labels, items=items(), total=hi - lo,
                  fingerprint=_fingerprint(listing + ([SHUFFLED] if shuffle else [])))


def _manifest_rows(text: str, src: str) -> list[dict]:
    if src.lower().endswith(".csv"):
        return [dict(r) for r in csv.DictReader(io.StringIO(text))]
    rows = []
    for n, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise LossyloadError(f"{src}: line {n + 1} is not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise LossyloadError(f"{src}: line {n + 1} is not a JSON object")
            rows.append(row)
    return rows


def _manifest_item(row: dict, lab: Any, n: int, src: str, base: str, media: str, index_of: dict,
                   seen: set[str], storage_options: dict | None) -> Item:
    rel = str(row.get(media) or "")
    name = f"{src} row {n}" + (f" ({rel})" if rel else "")
    label, error = _label(lab, index_of)
    if not rel:
        return Item(key=f"row-{n:08d}", label=0, name=name, data=b"", error=f"no {media!r} value")
    url = rel if "://" in rel or rel.startswith("/") else posixpath.join(base, rel)
    key = safe_key(rel.split("://", 1)[-1].lstrip("/")) or f"row-{n:08d}"
    while key in seen:
        key += "_"
    seen.add(key)
    fs, path = filesystem(url, storage_options)
    if is_local(fs):
        return Item(key=key, label=label, name=name, path=path, error=error)
    try:
        data = b"" if error else fs.cat_file(path)
    except OSError as exc:
        data, error = b"", f"unreadable ({type(exc).__name__}: {exc})"
    return Item(key=key, label=label, name=name, data=data, error=error)
