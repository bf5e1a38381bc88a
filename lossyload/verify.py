"""``lossyload verify URL``: check every shard of a dataset against its index.

Per shard: present, size and sha256 as recorded, tar framing sound, the recorded number of samples, unique
keys, each sample with its payload member and a valid ``cls``, and (unless ``--no-decode``) each payload
decoding with the dataset's codec, which checks stored dtypes and shapes against the codec config. Side
files are checked against their sha256. Every problem is listed; the exit status is 1 if there is any.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from .errors import LossyloadError
from .fs import check_inside, join, open_url, read_index
from .index import Index, ShardInfo
from .integrity import HashingReader
from .loader import tario


@dataclass(frozen=True)
class Problem:
    url: str
    key: str | None
    what: str

    def __str__(self) -> str:
        return f"{self.url}{f' [{self.key}]' if self.key else ''}: {self.what}"


@dataclass
class Report:
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)


def verify(url: str, *, decode: bool = True, storage_options: dict[str, Any] | None = None,
           progress: bool = False) -> Report:
    """Check the dataset at ``url``; raises only for an unreadable or malformed index."""
    from .loader.resolve import read_assets, resolve_codec

    root, index = read_index(url, storage_options)
    report = Report()
    codec = None
    try:
        read_assets(root, index, storage_options)
        codec = resolve_codec(index, None, None, root, storage_options) if decode else None
    except LossyloadError as exc:
        report.problems.append(Problem(root, None, f"{exc} (payloads not decoded)"))
    bar = tqdm(index.shards, unit="shard", disable=not progress, desc="verifying")
    for shard in bar:
        report.shards += 1
        try:
            check_inside(root, join(root, shard.url), storage_options)
        except LossyloadError as exc:
            report.problems.append(Problem(join(root, shard.url), None, str(exc).split(": ", 1)[-1]))
            continue
        report.problems += list(_check_shard(join(root, shard.url), shard, index, codec, report, storage_options))
    return report


def _check_shard(url: str, shard: ShardInfo, index: Index, codec, report: Report,
                 storage_options: dict[str, Any] | None) -> Iterator[Problem]:
    n = 0
    keys: dict[str, int] = {}
    try:
        with open_url(url, "rb", storage_options) as f:
            h = HashingReader(f)
            try:
                for sample in tario.samples(h, url):  # type: ignore[arg-type]
                    key = str(sample["__key__"])
                    if key in keys:
                        yield Problem(url, key, f"duplicate key (samples #{keys[key]} and #{n})")
                    keys.setdefault(key, n)
                    yield from _check_sample(url, key, sample, index, codec)
                    n += 1
                h.drain()
            except LossyloadError as exc:
                yield Problem(url, None, f"unreadable after {n} samples: {exc}")
                h.drain()
    except FileNotFoundError:
        yield Problem(url, None, "missing")
        return
    except OSError as exc:
        yield Problem(url, None, f"cannot be read ({exc})")
        return
    report.samples += n
    report.bytes += h.digest.size
    for what in h.digest.problems(shard.bytes, shard.sha256):
        yield Problem(url, None, what)
    if n != shard.samples:
        yield Problem(url, None, f"{n} samples, index says {shard.samples}")


def _check_sample(url: str, key: str, sample: dict, index: Index, codec) -> Iterator[Problem]:
    if index.member not in sample:
        have = sorted(k for k in sample if not k.startswith("__"))
        yield Problem(url, key, f"no '{index.member}' member (has {have})")
        return
    try:
        label = int(bytes(sample.get("cls", b"-1")).decode().strip())
    except (ValueError, UnicodeDecodeError):
        label = -1
    if not 0 <= label < len(index.labels):
        yield Problem(url, key, f"'cls' is not a label index in [0, {len(index.labels)})")
    if codec is not None:
        try:
            codec.decode(sample[index.member])
        except (LossyloadError, ValueError) as exc:
            yield Problem(url, key, f"payload does not decode: {type(exc).__name__}: {exc}")
