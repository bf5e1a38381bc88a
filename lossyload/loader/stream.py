"""Reading samples out of shards: open (fsspec) -> tar members (webdataset) -> samples, restricted to the
planned ranges, with an explicit error policy that counts every sample it skips."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import LossyloadError, ShardError
from ..fs import join, open_url
from ..index import ShardInfo
from . import tario


@dataclass(frozen=True)
class Skip:
    """One sample that was not delivered, and why."""

    url: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.url} [{self.key}]: {self.reason}"


@dataclass
class ErrorPolicy:
    """``raise``: the first bad sample stops the epoch with an error naming URL and key.
    ``skip``: bad samples are recorded in ``skips`` (and reported by the loader at epoch end)."""

    mode: str = "raise"
    skips: list[Skip] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")

    def handle(self, url: str, keys: list[str], reason: str, exc: Exception | None = None) -> None:
        if self.mode == "raise":
            cls = type(exc) if isinstance(exc, LossyloadError) else ShardError
            raise cls(f"{url} [{keys[0] if keys else '?'}]: {reason}") from exc
        self.skips.extend(Skip(url, key, reason) for key in keys)


@dataclass(frozen=True)
class RawSample:
    url: str
    key: str
    payload: bytes
    label: int


def read_range(
    root: str, shard: ShardInfo, first: int, end: int, member: str, policy: ErrorPolicy,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[RawSample]:
    """Samples ``first <= i < end`` of one shard. A shard that ends early (truncated, unreadable) has its
    missing samples counted as skipped, so the total never silently shrinks."""
    url = join(root, shard.url)
    i = 0
    try:
        with open_url(url, "rb", storage_options, size=shard.bytes) as f:
            for sample in tario.samples(f, url):
                if i >= end:
                    break
                if i >= first:
                    raw = _check(url, sample, member, policy)
                    if raw is not None:
                        yield raw
                i += 1
    except (ShardError, OSError) as exc:
        if i >= end:
            return
        policy.handle(url, _missing(i, first, end), f"shard unreadable after {i} samples: {exc}", exc)
        return
    if i < end:
        policy.handle(url, _missing(i, first, end), f"shard has {i} samples, index says {shard.samples}")


def _check(url: str, sample: dict, member: str, policy: ErrorPolicy) -> RawSample | None:
    key = sample["__key__"]
    if member not in sample:
        have = sorted(k for k in sample if not k.startswith("__"))
        policy.handle(url, [key], f"no '{member}' member (has {have})")
        return None
    try:
        label = int(sample.get("cls", b"-1").decode().strip())
    except (ValueError, UnicodeDecodeError):
        label = -2
    if label < 0:
        policy.handle(url, [key], "missing or invalid 'cls' member")
        return None
    return RawSample(url=url, key=key, payload=sample[member], label=label)


def _missing(reached: int, first: int, end: int) -> list[str]:
    return [f"sample #{j}" for j in range(max(reached, first), end)]
