"""Distributed sharding: N ranks each encode a contiguous share of the source into their own part folder,
then one merged ``index.json`` lists every part's shards in rank order.

Rank ``r`` of ``N`` writes ``DEST/part-r-of-N/`` (a complete, resumable dataset of its own, made exactly as a
single-process job would make it) and, when it finds every part complete, writes the merged
``DEST/index.json``; the merge is deterministic, so ranks finishing together write the same bytes. Ranks
need not run at the same time (a SLURM array works); ``lossyload-shard --merge DEST --world-size N`` merges
explicitly. Samples come out in the same order as a single-process run over the same source (for a tar
source in the default shuffled order, each rank interleaves the tars of its own share: there the order
depends on the world size).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from ..codecs import codec_class
from ..errors import LossyloadError
from ..fs import filesystem, read_index, write_bytes
from ..index import INDEX_NAME, Index
from .spec import ShardJob, ShardSummary

PART_RECORD = "part.json"  # beside a distributed part's index: the job settings and source fingerprint


def part_name(rank: int, world_size: int) -> str:
    return f"part-{rank:05d}-of-{world_size:05d}"


def part_job(job: ShardJob) -> ShardJob:
    """The job encoding this rank's share into its part folder (a stale merged index is removed first when
    overwriting)."""
    fs, root = filesystem(job.dest, job.storage_options)
    if job.overwrite and fs.exists(f"{root}/{INDEX_NAME}"):
        fs.rm(f"{root}/{INDEX_NAME}")
    return replace(job, dest=f"{job.dest.rstrip('/')}/{part_name(job.rank, job.world_size)}")


def finish_part(job: ShardJob, summary: ShardSummary) -> ShardSummary:
    """After this rank's part is complete: merge if every part is."""
    try:
        merged = merge_parts(job.dest, job.world_size, job.storage_options)
        state = (f"merged {merged.samples} samples of {job.world_size} parts into {job.dest}/{INDEX_NAME}" if merged
                 else f"rank {job.rank}: part done; the last rank to finish writes {job.dest}/{INDEX_NAME}")
    except PartsDiffer as exc:  # other ranks' parts are from another run: they are not done yet
        state = f"rank {job.rank}: part done; not merged yet: {exc}"
    if job.progress:
        print(state, file=sys.stderr)
    return summary


class PartsDiffer(LossyloadError):
    """The complete parts were not all made by the same run (settings, source content)."""


def missing_parts(dest: str, world_size: int, storage_options: dict | None = None) -> list[int]:
    fs, root = filesystem(dest, storage_options)
    fs.invalidate_cache()  # other ranks wrote since this process last listed
    return [r for r in range(world_size) if not fs.exists(f"{root}/{part_name(r, world_size)}/{INDEX_NAME}")]


def merge_parts(dest: str, world_size: int, storage_options: dict | None = None, *,
                require: bool = False) -> Index | None:
    """Write ``dest/index.json`` from the complete parts' indexes; ``None`` (or an error with ``require``)
    while a part is still missing. Parts made by different runs (job settings, codec settings or source
    content differ, e.g. a stale part beside one rerun with ``--overwrite``) raise :class:`PartsDiffer`."""
    missing = missing_parts(dest, world_size, storage_options)
    if missing:
        if require:
            raise LossyloadError(f"{dest}: parts of ranks {missing} of {world_size} are not complete yet")
        return None
    fs, root = filesystem(dest, storage_options)
    runs = []
    for r in range(world_size):
        try:
            with fs.open(f"{root}/{part_name(r, world_size)}/{PART_RECORD}", "rb") as f:
                runs.append(json.loads(f.read()))
        except FileNotFoundError:
            raise PartsDiffer(f"{dest}/{part_name(r, world_size)}: has an index but no {PART_RECORD} (not written by "
                              f"a rank of a {world_size}-rank lossyload-shard run)") from None
    for r, run in enumerate(runs):
        if run != runs[0]:
            diff = sorted(k for k in set(run) | set(runs[0]) if run.get(k) != runs[0].get(k))
            raise PartsDiffer(f"{dest}/{part_name(r, world_size)}: made by another run than "
                              f"{part_name(0, world_size)} (differs in {', '.join(diff)}); rerun the stale ranks "
                              "with the same settings (codecs that fit: fit once and pass --config-from)")
    parts = [(part_name(r, world_size), read_index(f"{dest.rstrip('/')}/{part_name(r, world_size)}",
                                                   storage_options)[1]) for r in range(world_size)]
    first_name, first = parts[0]
    runtime = set(codec_class(first.codec).runtime_fields)
    settings = _settings(first, runtime)
    labels: list[str] = []
    for name, index in parts:
        if _settings(index, runtime) != settings:
            raise PartsDiffer(
                f"{dest}/{name}: made with other codec settings than {first_name} ({index.codec} {index.config} vs "
                f"{first.codec} {first.config}); rerun it with the same settings")
        longer, shorter = (index.labels, labels) if len(index.labels) > len(labels) else (labels, index.labels)
        if longer[: len(shorter)] != shorter:
            raise LossyloadError(f"{dest}/{name}: class labels {index.labels} disagree with the other parts")
        labels = list(longer)
    for asset in first.assets:  # side files (e.g. a codebook) are the same in every part: one copy at the root
        with fs.open(f"{root}/{first_name}/{asset}", "rb") as f:
            write_bytes(fs, f"{root}/{asset}", f.read())
    shards = [replace(s, url=f"{name}/{s.url}") for name, index in parts for s in index.shards]
    skipped = {k: v for _, index in parts for k, v in index.skipped.items()}
    merged = Index(codec=first.codec, config=first.config, labels=labels, shards=shards, member=first.member,
                   skipped=skipped, assets=dict(first.assets))
    write_bytes(fs, f"{root}/{INDEX_NAME}", merged.to_json().encode())
    return merged


def _settings(index: Index, runtime: set[str]) -> str:
    config = {k: v for k, v in index.config.items() if k not in runtime}
    return json.dumps([index.codec, index.member, config, index.assets], sort_keys=True)

