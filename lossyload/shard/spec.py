"""What a shard job is asked (:class:`ShardJob`) and what it reports (:class:`ShardSummary`): the one
vocabulary of the job (:mod:`.job`) and of its distributed parts (:mod:`.distributed`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import LossyloadError
from .tables import TableColumns


@dataclass(frozen=True, kw_only=True)
class ShardJob:
    src: str | list[str]
    dest: str
    codec: str = "jpeg-dct"
    config: dict[str, Any] = field(default_factory=dict)
    maxcount: int = 1000
    maxsize: int = 256 << 20
    workers: int = 1
    on_error: str = "skip"  # "skip": count and report bad items; "raise": stop at the first
    overwrite: bool = False
    progress: bool = True
    storage_options: dict[str, Any] | None = None
    rank: int = 0  # distributed sharding: this process encodes share `rank` of `world_size` into its own part
    world_size: int = 1
    columns: TableColumns | None = None  # table sources (Parquet, datasets, manifests): which columns to read
    shuffle: bool = True  # items in a seeded shuffled order, so classes mix in every shard (False: source order)

    def __post_init__(self) -> None:
        if self.maxcount < 1 or self.maxsize < 1 or self.workers < 1:
            raise LossyloadError("maxcount, maxsize and workers must be positive")
        if not 0 <= self.rank < self.world_size:
            raise LossyloadError(f"rank {self.rank} is not in [0, world size {self.world_size})")
        if self.on_error not in ("skip", "raise"):
            raise LossyloadError("on_error must be 'skip' or 'raise'")


@dataclass
class ShardSummary:
    dest: str
    samples: int = 0
    shards: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    resumed_shards: int = 0
    already_complete: bool = False
    transcoded: Counter = field(default_factory=Counter)  # reason category -> count (a sample can have several)
    transcoded_samples: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason
    seconds: float = 0.0

    def format(self) -> str:
        if self.already_complete:
            return f"{self.dest}: already complete ({self.samples} samples in {self.shards} shards); nothing to do"
        lines = [
            f"{self.dest}: {self.samples} samples in {self.shards} shards"
            + (f" ({self.resumed_shards} reused from an interrupted run)" if self.resumed_shards else ""),
            f"  bytes in {self.bytes_in:,}  bytes out {self.bytes_out:,}  in {self.seconds:.1f} s",
            f"  transcoded {self.transcoded_samples}" + "".join(f"\n    {n:6d}  {r}" for r, n in self.transcoded.most_common()),
            f"  skipped {len(self.skipped)}" + "".join(f"\n    {s}: {r}" for s, r in sorted(self.skipped.items())),
        ]
        return "\n".join(lines)
