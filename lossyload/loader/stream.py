"""Reading samples out of shards: open (fsspec) -> tar members (webdataset) -> samples, restricted to the
planned ranges, with an explicit error policy that counts every sample it skips."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

from ..cache import ShardCache, Traffic, open_shard
from ..errors import LossyloadError, ShardError
from ..fs import check_inside, join
from ..index import ShardInfo
from ..integrity import read_checked
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
    skipped: list[Skip] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")

    def handle(self, url: str, keys: list[str], reason: str, exc: Exception | None = None) -> None:
        if self.mode == "raise":
            cls = type(exc) if isinstance(exc, LossyloadError) else ShardError
            raise cls(f"{url} [{keys[0] if keys else '?'}]: {reason}") from exc
        self.skipped.extend(Skip(url, key, reason) for key in keys)


class RawSample(NamedTuple):
    """One sample as read from its shard: the codec member's bytes and the label (``source``: its place in a
    mixture)."""

    url: str
    key: str
    payload: bytes
    label: int
    source: int = 0


def read_range(
    root: str, shard: ShardInfo, first: int, end: int, member: str, policy: ErrorPolicy,
    storage_options: dict[str, Any] | None = None, verify: bool = False, classes: int | None = None,
    cache: ShardCache | None = None, traffic: Traffic | None = None, data: bytes | None = None,
    wanted: frozenset[int] | None = None,
) -> Iterator[RawSample]:
    """Samples ``first <= i < end`` of one shard. A shard that ends early (truncated, unreadable) has its
    missing samples counted as skipped, so the total never silently shrinks; a key met twice in a shard is
    skipped the second time; samples past the index's count are reported by the reader whose range ends the
    shard; a ``cls`` outside ``[0, classes)`` is skipped. With ``verify``, the shard is read whole and checked against the index's size and sha256 before any
    of its samples is delivered (a mismatch skips the range). With a ``cache``, a remote shard is read from the
    node-local cache (fetched and verified first, see :mod:`lossyload.cache`); ``traffic`` counts its bytes.
    ``data``: the shard's bytes when already fetched (:mod:`.prefetch`; counted as remote bytes). ``wanted``:
    only these samples of ``[first, end)`` (the leftovers of a resumed epoch), ``None`` for all."""
    url = join(root, shard.url)
    i = 0
    seen: dict[str, int] = {}
    if data is None:
        stream = _tar_samples(url, shard, storage_options, verify, cache, traffic, root)
    else:
        if traffic is not None:
            traffic.add({"remote_bytes": len(data)})
        stream = _held_samples(url, data)
    for sample in stream:
        if isinstance(sample, Exception):  # reading broke off: what is left of the range is lost
            if i < end:
                policy.handle(url, _missing(i, first, end, wanted), f"shard unreadable after {i} samples: {sample}",
                              sample)
            return
        if i >= end:
            if end == shard.samples:  # the tar holds more than the index lists
                extra = [str(sample["__key__"])] + [str(s["__key__"]) for s in stream if isinstance(s, dict)]
                policy.handle(url, extra, f"shard has {shard.samples + len(extra)} samples, index says "
                                          f"{shard.samples}: samples the index does not list")
            stream.close()
            return
        key = str(sample["__key__"])
        if i >= first and (wanted is None or i in wanted):
            if key in seen:
                policy.handle(url, [key], f"duplicate key (also sample #{seen[key]} of this shard)")
            else:
                raw = _check(url, sample, member, policy, classes)
                if raw is not None:
                    yield raw
        seen.setdefault(key, i)
        i += 1
    if i < end:
        policy.handle(url, _missing(i, first, end, wanted), f"shard has {i} samples, index says {shard.samples}")


def _tar_samples(url: str, shard: ShardInfo, storage_options: dict[str, Any] | None, verify: bool,
                 cache: ShardCache | None = None, traffic: Traffic | None = None,
                 root: str | None = None) -> Iterator[dict | Exception]:
    """The shard's samples; a read or framing error (or a local shard file linking outside the dataset ``root``)
    ends the stream as its last item (not raised)."""
    try:
        if root is not None:
            check_inside(root, url, storage_options)
        with open_shard(url, shard, storage_options, cache=cache, traffic=traffic) as (f, verified):
            if verify and not verified:
                f = _verified(f, url, shard)
            yield from tario.samples(f, url)
    except (ShardError, OSError) as exc:
        yield exc


def _held_samples(url: str, data: bytes) -> Iterator[dict | Exception]:
    """The samples of a shard already in memory (same error convention as :func:`_tar_samples`)."""
    try:
        yield from tario.samples(io.BytesIO(data), url)
    except ShardError as exc:
        yield exc


def _verified(f: IO[bytes], url: str, shard: ShardInfo) -> IO[bytes]:
    """The whole shard, in memory, once its size and sha256 match the index (else :class:`ShardError`)."""
    return io.BytesIO(read_checked(f, url, shard.bytes, shard.sha256, "verify"))


def _check(url: str, sample: dict, member: str, policy: ErrorPolicy, classes: int | None) -> RawSample | None:
    key = sample["__key__"]
    if member not in sample:
        have = sorted(k for k in sample if not k.startswith("__"))
        policy.handle(url, [key], f"no '{member}' member (has {have})")
        return None
    try:
        label = int(sample.get("cls", b"-1"))  # type: ignore[arg-type]  (ASCII digits and whitespace only)
    except (ValueError, TypeError):
        label = -2
    if label < 0 or (classes is not None and label >= classes):
        policy.handle(url, [key], f"missing or invalid 'cls' member (not a label index in [0, {classes}))")
        return None
    return RawSample(url, key, sample[member], label)  # type: ignore[arg-type]


def _missing(reached: int, first: int, end: int, wanted: frozenset[int] | None = None) -> list[str]:
    return [f"sample #{j}" for j in range(max(reached, first), end) if wanted is None or j in wanted]
