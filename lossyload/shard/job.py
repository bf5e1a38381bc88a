"""The resumable, parallel shard job behind ``lossyload-shard``.

Items are encoded in order (in a process pool when ``workers > 1``) and written to shards that roll over at
``maxcount`` samples or ``maxsize`` bytes. After each shard is complete and renamed into place, a small
progress record is written beside it; a rerun after an interruption continues from the last record and
produces the same shards and the same index. ``index.json`` is written last; the records are then removed.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from ..codecs import Codec, create_codec
from ..errors import EncodeError, LossyloadError
from ..fs import filesystem, read_index, write_bytes
from ..index import INDEX_NAME, Index, ShardInfo, shard_name
from ..integrity import digest_bytes, file_digest
from .distributed import PART_RECORD, finish_part, part_job
from .sources import Item, open_source
from .spec import ShardJob, ShardSummary
from .writer import ShardWriter

PROGRESS_DIR = "_progress"
CHUNK = 32  # items per encode_batch call (and per pool task)


_CODEC: Codec | None = None


def _init_worker(name: str, config: dict[str, Any], pooled: bool = False) -> None:
    global _CODEC
    _CODEC = create_codec(name, config)
    if pooled:  # parallelism is across processes: one intra-op thread each, or torch codecs oversubscribe
        import torch

        torch.set_num_threads(1)


def _encode_many(items: list[Item]) -> list[tuple[Item, bytes | None, str | None, int]]:
    """(item, payload, transcode-or-skip reason, bytes read) per item; payload None means skipped with that
    reason. The readable items go to the codec in one ``encode_batch`` call (batched model inference)."""
    out: list = [None] * len(items)
    todo: list[tuple[int, bytes]] = []
    for i, item in enumerate(items):
        if item.error:
            out[i] = (item, None, item.error, 0)
            continue
        try:
            todo.append((i, item.read()))
        except OSError as exc:
            out[i] = (item, None, f"unreadable ({exc})", 0)
    encoded = _CODEC.encode_batch([(data, items[i].name) for i, data in todo]) if todo else []  # type: ignore[union-attr]
    for (i, data), enc in zip(todo, encoded):
        item = replace(items[i], data=None)  # don't send the source bytes back
        if isinstance(enc, EncodeError):
            out[i] = (item, None, enc.reason, len(data))
        else:
            out[i] = (item, enc.payload, enc.transcoded, len(data))
    return out


def run_job(job: ShardJob) -> ShardSummary:
    """Run (or resume) ``job``; returns the summary. Raises :class:`LossyloadError` on unusable input. With
    ``world_size > 1`` this process encodes its share into a part folder and the last rank to finish merges
    the parts' indexes (see :mod:`lossyload.shard.distributed`)."""
    if job.world_size > 1:
        return finish_part(job, encode(part_job(job)))
    return encode(job)


def encode(job: ShardJob) -> ShardSummary:
    """Encode ``job``'s share of its source into a complete dataset at ``job.dest``: clear or reuse the
    destination, fit the codec if it learns from data, resume after the last progress record, write the
    shards, then the side files and the index."""
    t0 = time.perf_counter()
    codec = create_codec(job.codec, job.config)
    fs, root = filesystem(job.dest, job.storage_options)
    summary = ShardSummary(dest=job.dest)
    with _dest_io(job.dest):
        if fs.exists(f"{root}/{INDEX_NAME}") and not job.overwrite:
            return _already_complete(fs, root, job, codec, summary)
        if job.overwrite:
            _clear(fs, root)
    codec.check_encoder()
    source = open_source(job.src, job.storage_options, (job.rank, job.world_size), job.columns, job.shuffle)
    with _dest_io(job.dest):
        fs.makedirs(f"{root}/{PROGRESS_DIR}", exist_ok=True)
    if codec.needs_fit():
        codec = _fitted(fs, root, job, codec, source.fingerprint)
    header = {"codec": job.codec, "config": codec.identity(), "maxcount": job.maxcount, "maxsize": job.maxsize,
              "src": job.src, "source": source.fingerprint, "part": [job.rank, job.world_size]}
    with _dest_io(f"{root}/{PROGRESS_DIR}"):
        records = _load_progress(fs, root, header, codec)
    shards = [ShardInfo.from_dict(r["shard"]) for r in records]
    for r in records:
        summary.skipped.update(r["skipped"])
        summary.bytes_in += r["bytes_in"]
        summary.transcoded.update(r["transcoded_reasons"])
    summary.resumed_shards = len(shards)
    start = records[-1]["next_item"] if records else 0
    state = _Open(number=sum(1 for s in shards if s.samples), seq=len(records), member=codec.member)
    config = codec.stored_config()  # as the index records it, read once before encoding
    shards += _write_shards(fs, root, job, codec, config, itertools.islice(source.items, start, None), state, start,
                            source.total, summary)
    index = _write_index(fs, root, job, codec, config, source.labels, [s for s in shards if s.samples], summary,
                         header)
    summary.samples, summary.shards, summary.bytes_out = index.samples, len(index.shards), index.bytes
    summary.transcoded_samples = sum(len(s.transcoded) for s in index.shards)
    summary.seconds = time.perf_counter() - t0
    return summary


def _clear(fs, root: str) -> None:
    """Remove a previous dataset's shards, side files, index and progress records (``overwrite``)."""
    for p in fs.glob(f"{root}/shard-*.tar*") + _asset_paths(fs, root) + fs.glob(f"{root}/{INDEX_NAME}"):
        fs.rm(p)
    if fs.exists(f"{root}/{PROGRESS_DIR}"):
        fs.rm(f"{root}/{PROGRESS_DIR}", recursive=True)


def _write_shards(fs, root: str, job: ShardJob, codec: Codec, config: dict[str, Any], items: Iterator[Item],
                  state: _Open, position: int, total: int | None, summary: ShardSummary) -> list[ShardInfo]:
    """Encode ``items`` (in a process pool when ``job.workers > 1``) into shards rolled over at ``maxcount``
    samples or ``maxsize`` bytes, each closed with its progress record; the shards closed here."""
    shards: list[ShardInfo] = []
    bar = tqdm(total=total, initial=position, unit="sample", disable=not job.progress, desc="encoding")
    pool = mp.get_context("spawn").Pool(job.workers, _init_worker, (job.codec, config, True)) \
        if job.workers > 1 else None
    if pool is None:
        _init_worker(job.codec, config)
    try:
        while batch := list(itertools.islice(items, CHUNK * job.workers)):
            chunks = [batch[i:i + CHUNK] for i in range(0, len(batch), CHUNK)]
            results = [r for rs in (pool.map(_encode_many, chunks) if pool else map(_encode_many, chunks)) for r in rs]
            for item, payload, reason, nbytes in results:
                if payload is None:
                    if job.on_error == "raise":
                        raise EncodeError(reason or "?", source=item.name)
                    state.skipped[item.name] = reason or "?"
                else:
                    members = {codec.member: payload, "cls": str(item.label).encode()}
                    if state.writer and (
                        state.writer.samples >= job.maxcount
                        or state.writer.size_if_added(item.key, members) > job.maxsize
                    ):
                        shards.append(_close(fs, root, state, position, summary))
                    state.add(fs, root, job, item, members, reason)
                state.bytes_in += nbytes
                position += 1
                bar.update(1)
        if state.writer or state.skipped:
            shards.append(_close(fs, root, state, position, summary))
    except BaseException:
        if state.writer:
            state.writer.abort()
        raise
    finally:
        bar.close()
        if pool:
            pool.terminate()
    return shards


def _write_index(fs, root: str, job: ShardJob, codec: Codec, config: dict[str, Any], labels: list[str],
                 shards: list[ShardInfo], summary: ShardSummary, header: dict[str, Any]) -> Index:
    """The codec's side files, then (a distributed part's record and) ``index.json``, written last; the
    progress records are removed after it."""
    assets = {}
    for name, data in codec.assets().items():
        with _dest_io(f"{root}/{name}"):
            write_bytes(fs, f"{root}/{name}", data)
        assets[name] = digest_bytes(data).hexdigest()
    index = Index(codec=job.codec, config=config, labels=list(labels), shards=shards,
                  member=codec.member, skipped=dict(summary.skipped), assets=assets)
    if job.world_size > 1:  # what made this part: the merge takes only parts of one and the same run
        _write_text(fs, f"{root}/{PART_RECORD}", json.dumps({k: v for k, v in header.items() if k != "part"},
                                                            sort_keys=True))
    _write_text(fs, f"{root}/{INDEX_NAME}", index.to_json())
    with _dest_io(f"{root}/{PROGRESS_DIR}"):
        fs.rm(f"{root}/{PROGRESS_DIR}", recursive=True)
    return index


@dataclass
class _Open:
    """The shard being written and what happened since the last progress record."""

    number: int  # of the shard being written
    seq: int  # of the next progress record
    member: str
    writer: ShardWriter | None = None
    transcoded: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes_in: int = 0

    def add(self, fs, root: str, job: ShardJob, item: Item, members: dict[str, bytes], reason: str | None) -> None:
        with _dest_io(f"{root}/{shard_name(self.number)}"):
            if self.writer is None:
                self.writer = ShardWriter(fs.unstrip_protocol(f"{root}/{shard_name(self.number)}"), job.storage_options)
            self.writer.add(item.key, members)
        if reason:
            self.transcoded[item.key] = reason


def _close(fs, root: str, state: _Open, position: int, summary: ShardSummary) -> ShardInfo:
    """Finish the open shard, write its progress record, start a fresh state."""
    if state.writer:
        with _dest_io(f"{root}/{shard_name(state.number)}"):
            size, sha = state.writer.close()
        info = ShardInfo(url=shard_name(state.number), samples=state.writer.samples, bytes=size, sha256=sha,
                         transcoded=dict(state.transcoded))
    else:  # only skipped items since the last shard
        info = ShardInfo(url=shard_name(state.number), samples=0, bytes=0, sha256="", transcoded={})
    reasons = Counter(_category(part) for r in state.transcoded.values() for part in r.split("; "))
    record = {"shard": dataclasses.asdict(info), "next_item": position, "skipped": state.skipped,
              "bytes_in": state.bytes_in, "transcoded_reasons": dict(reasons)}
    _write_text(fs, f"{root}/{PROGRESS_DIR}/{state.seq:06d}.json", json.dumps(record))
    summary.skipped.update(state.skipped)
    summary.bytes_in += state.bytes_in
    summary.transcoded.update(reasons)
    state.__init__(number=state.number + (1 if state.writer else 0), seq=state.seq + 1, member=state.member)
    return info


def _already_complete(fs, root: str, job: ShardJob, codec: Codec, summary: ShardSummary) -> ShardSummary:
    """A rerun over a finished dataset made with the same codec settings is a no-op (it also clears progress
    records left by a run stopped between writing the index and removing them). Fields the codec learns
    from the data (``fit_fields``) are compared only when the job sets them."""
    index = _existing_index(fs, root, job.dest)
    want = json.loads(json.dumps(codec.identity()))
    have = _stored_identity(codec, index.config)
    for name in codec.fit_fields:
        if want.get(name) is None:
            want.pop(name, None), have.pop(name, None)
    if index.codec != job.codec or have != want:
        what = f"codec {index.codec!r}, not {job.codec!r}" if index.codec != job.codec else _changes(have, want)
        raise LossyloadError(f"{job.dest}: already holds a dataset made with other settings ({what}); "
                             "pass --overwrite to replace it")
    if fs.exists(f"{root}/{PROGRESS_DIR}"):
        fs.rm(f"{root}/{PROGRESS_DIR}", recursive=True)
    summary.already_complete = True
    summary.samples, summary.shards, summary.bytes_out = index.samples, len(index.shards), index.bytes
    summary.skipped = dict(index.skipped)
    return summary


def _stored_identity(codec: Codec, stored: dict[str, Any]) -> dict[str, Any]:
    """A codec config stored by an earlier run (index or progress record) as ``codec.identity()`` would give
    it, in JSON values: a field it lacks (added to the codec since, with a default) counts as that default."""
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(codec.Config)}
    config = {k: v for k, v in {**defaults, **stored}.items()
              if v is not dataclasses.MISSING and k not in codec.runtime_fields}
    return json.loads(json.dumps(config))


def _same_header(saved: bytes, header: dict[str, Any], codec: Codec) -> bool:
    """Whether a progress folder's job record is ``header`` (a codec field it lacks counts as the default)."""
    try:
        old = json.loads(saved)
        old["config"] = _stored_identity(codec, old["config"])
    except (ValueError, TypeError, KeyError):
        return False
    return old == json.loads(json.dumps(header))


def _changes(have: dict[str, Any], want: dict[str, Any]) -> str:
    """The fields whose stored (``have``) and wanted values differ, each with both."""
    def show(config: dict[str, Any], name: str) -> str:
        text = repr(config[name]) if name in config else "absent"
        return text if len(text) <= 60 else f"{text[:57]}..."

    return "; ".join(f"{k}: {show(have, k)} in the index, {show(want, k)} in this run"
                     for k in sorted(set(have) | set(want)) if k not in have or k not in want or have[k] != want[k])


def _intact(fs, path: str, size: int, sha256: str) -> bool:
    """Whether the file at ``path`` is there with ``size`` bytes and ``sha256``."""
    if not fs.exists(path) or fs.size(path) != size:
        return False
    with fs.open(path, "rb") as f:
        return file_digest(f, size).matches(size, sha256)


def _category(reason: str) -> str:
    return "resized" if reason.startswith("resized") else reason.split(":")[0]


def _load_progress(fs, root: str, header: dict[str, Any], codec: Codec) -> list[dict[str, Any]]:
    hpath = f"{root}/{PROGRESS_DIR}/job.json"
    text = json.dumps(header, sort_keys=True)
    if fs.exists(hpath):
        with fs.open(hpath, "rb") as f:
            if not _same_header(f.read(), header, codec):
                raise LossyloadError(f"{root}: holds an interrupted run with other settings or another source "
                                     "content; pass --overwrite")
    else:
        _write_text(fs, hpath, text)
    records = []
    for p in sorted(fs.glob(f"{root}/{PROGRESS_DIR}/0*.json")):
        with fs.open(p, "rb") as f:
            r = json.loads(f.read())
        shard = r["shard"]
        spath = f"{root}/{shard['url']}"
        if shard["samples"] and not _intact(fs, spath, shard["bytes"], shard["sha256"]):
            break  # the shard behind this record is gone or damaged: redo from here
        records.append(r)
    return records


def _fitted(fs, root: str, job: ShardJob, codec: Codec, fingerprint: str) -> Codec:
    """``codec`` fitted on a seeded sample of the source (a reservoir over one pass); the fitted config is kept
    in the progress folder so a resumed run reuses it instead of fitting again."""
    path = f"{root}/{PROGRESS_DIR}/fit.json"
    key = {"codec": job.codec, "config": codec.identity(), "source": fingerprint}
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            saved = json.loads(f.read())
        if saved["key"] == json.loads(json.dumps(key)):
            runtime = {k: v for k, v in codec.stored_config().items() if k in codec.runtime_fields}
            return create_codec(job.codec, {**saved["config"], **runtime}, dataclasses.asdict(codec.options))
    rng = np.random.default_rng(0)
    chosen: list[Item] = []
    source = open_source(job.src, job.storage_options, columns=job.columns, shuffle=job.shuffle)
    for i, item in enumerate(item for item in source.items if not item.error):
        if len(chosen) < codec.fit_sample_count:
            chosen.append(item)
        elif (j := int(rng.integers(i + 1))) < codec.fit_sample_count:
            chosen[j] = item
    samples = []
    for item in chosen:
        try:
            samples.append((item.name, item.read()))
        except OSError:
            continue  # reported when the item is encoded
    if job.progress:
        print(f"{job.codec}: fitting {', '.join(codec.fit_fields)} on {len(samples)} samples", file=sys.stderr)
    fitted = codec.fit(samples)
    _write_text(fs, path, json.dumps({"key": key, "config": fitted.stored_config()}))
    return fitted


def config_from_dataset(url: str, codec: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The codec config stored in the dataset at ``url`` (e.g. a training split's fitted ``vq`` codebook, to
    encode the validation and test splits with the same one)."""
    _, index = read_index(url, storage_options)
    if index.codec != codec:
        raise LossyloadError(f"{url}: holds a {index.codec!r} dataset, not {codec!r}")
    return dict(index.config)


def _existing_index(fs, root: str, where: str) -> Index:
    with fs.open(f"{root}/{INDEX_NAME}", "rb") as f:
        return Index.from_json(f.read(), where=f"{where}/{INDEX_NAME}")


def _asset_paths(fs, root: str) -> list[str]:
    """The side files named by an existing index (removed with it on --overwrite)."""
    if not fs.exists(f"{root}/{INDEX_NAME}"):
        return []
    try:
        index = _existing_index(fs, root, root)
    except LossyloadError:  # a damaged index is replaced all the same; its side files are rewritten
        return []
    return [f"{root}/{name}" for name in index.assets if fs.exists(f"{root}/{name}")]


def _write_text(fs, path: str, text: str) -> None:
    with _dest_io(path):
        write_bytes(fs, path, text.encode())


@contextmanager
def _dest_io(where: str) -> Iterator[None]:
    """Destination I/O: an ``OSError`` there (disk full, access denied, a file where a folder should be) is
    re-raised as a :class:`LossyloadError` naming ``where``, which the CLI reports (exit status 2). What was
    complete stays (shards, progress records) and a rerun resumes from it."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, PermissionError):
            what = "access denied (check the permissions, or the credentials in storage_options)"
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left on the device"
        else:
            what = "cannot be written"
        raise LossyloadError(f"{where}: {what} ({type(exc).__name__}: {exc})") from exc
