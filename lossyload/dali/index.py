"""DALI index files for a shard set, and the check that decides which samples DALI may read.

``fn.readers.webdataset`` reads samples at the offsets an index file gives (WebDataset index format v1.2:
a ``v1.2 <samples>`` line, then per sample ``<ext> <offset> <size> <name>`` for each member), so it never
scans the tars at start-up. ``lossyload dali-index URL`` writes them once, beside the shards in ``dali/``,
with ``dali/manifest.json``: per shard its sha256 and size (so a stale index is noticed), the keys of the
samples indexed, and the samples left out and why.

DALI cannot skip a bad sample in the middle of a batch, so the check happens here, before any pipeline is
built: every sample must have its payload and a valid ``cls`` member, a unique key, and a payload the codec
decodes (``decode``, as ``lossyload verify`` does). A sample that fails is not indexed; the loader raises on
it (``on_error="raise"``) or counts it in ``skipped`` (``on_error="skip"``).
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field

from ..codecs import Codec
from ..errors import IndexFormatError, LossyloadError, ShardError
from ..fs import filesystem, is_local, join
from ..index import Index, ShardInfo

MANIFEST_VERSION = 1
INDEX_DIR = "dali"
MANIFEST = "manifest.json"


@dataclass(frozen=True, kw_only=True)
class ShardEntry:
    """One shard as indexed: the DALI index file, the keys of its indexed samples in order (with the data
    offset of their payload member, as DALI's ``source_info`` reports it) and the samples left out."""

    url: str
    index: str
    sha256: str
    bytes: int
    keys: list[tuple[str, int]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    codec: str
    decoded: bool
    shards: list[ShardEntry]

    def to_json(self) -> str:
        return json.dumps({"version": MANIFEST_VERSION, "codec": self.codec, "decoded": self.decoded,
                           "shards": [vars(s) for s in self.shards]}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            d = json.loads(text)
            if d.get("version") != MANIFEST_VERSION:
                raise IndexFormatError(f"{where}: manifest version {d.get('version')!r} is not {MANIFEST_VERSION}")
            shards = [ShardEntry(url=str(s["url"]), index=str(s["index"]), sha256=str(s["sha256"]),
                                 bytes=int(s["bytes"]), keys=[(str(k), int(o)) for k, o in s["keys"]],
                                 problems=[(str(k), str(r)) for k, r in s["problems"]]) for s in d["shards"]]
            return cls(codec=str(d["codec"]), decoded=bool(d["decoded"]), shards=shards)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IndexFormatError(f"{where}: malformed DALI manifest ({type(exc).__name__}: {exc})") from exc


def local_root(root: str) -> str:
    """The local directory of a dataset root; DALI reads local files only."""
    fs, path = filesystem(root)
    if not is_local(fs):
        raise LossyloadError(f"{root}: DALI reads local shards only; pass cache_dir= (the shards are fetched into "
                             f"a node-local cache), copy the shard set to a local disk, or use the torch loader, "
                             f"which streams from {root.split('://', 1)[0]}://")
    return path


def index_shard(path: str, shard: ShardInfo, member: str, codec: Codec | None, classes: int) -> tuple[str, ShardEntry]:
    """The DALI index text of one shard (good samples only) and its manifest entry."""
    samples: list[dict] = []  # {"key", ext: (offset, size, name, data)}
    problems: list[tuple[str, str]] = []
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isreg():
                    continue
                slash = m.name.rfind("/") + 1
                dot = m.name.find(".", slash)
                if dot < 0:
                    continue
                key, ext = m.name[:dot], m.name[dot + 1:].lower()
                if not samples or samples[-1]["key"] != key:
                    samples.append({"key": key})
                if ext in (member, "cls"):
                    data = tf.extractfile(m).read()  # type: ignore[union-attr]
                    samples[-1][ext] = (m.offset_data, m.size, m.name, data)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append((f"sample #{len(samples)}", f"shard unreadable after {len(samples)} samples: {exc}"))
    lines, keys, seen = [], [], set()
    for s in samples:
        reason = _problem(s, member, codec, classes, seen)
        seen.add(s["key"])
        if reason:
            problems.append((s["key"], reason))
            continue
        lines.append(" ".join(f"{ext} {s[ext][0]} {s[ext][1]} {_safe(s[ext][2])}" for ext in (member, "cls")))
        keys.append((s["key"], s[member][0]))
    if len(samples) != shard.samples:
        problems.append(("?", f"shard has {len(samples)} samples, index says {shard.samples}"))
    text = f"v1.2 {len(lines)}\n" + "".join(line + "\n" for line in lines)
    idx_name = shard.url[: -len(".tar")] + ".idx" if shard.url.endswith(".tar") else shard.url + ".idx"
    return text, ShardEntry(url=shard.url, index=idx_name, sha256=shard.sha256, bytes=shard.bytes, keys=keys,
                            problems=problems)


def _problem(s: dict, member: str, codec: Codec | None, classes: int, seen: set[str]) -> str | None:
    if s["key"] in seen:
        return "duplicate key"
    if member not in s:
        return f"no '{member}' member"
    try:
        label = int(s["cls"][3].decode().strip()) if "cls" in s else -1
    except (ValueError, UnicodeDecodeError):
        label = -1
    if not 0 <= label < classes:
        return f"missing or invalid 'cls' member (not a label index in [0, {classes}))"
    if codec is not None:
        try:
            codec.decode(s[member][3])
        except (LossyloadError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def _safe(name: str) -> str:
    """A member name as one whitespace-free token (informational in the index file)."""
    return "".join(c if c.isprintable() and not c.isspace() else "_" for c in name) or "_"


def build(root: str, index: Index, codec: Codec | None, out_dir: str) -> Manifest:
    """Index every shard of the dataset at local ``root`` into ``out_dir``; check payloads with ``codec``."""
    base = local_root(root)
    entries = []
    for shard in index.shards:
        text, entry = index_shard(os.path.join(base, shard.url), shard, index.member, codec, len(index.labels))
        dest = os.path.join(out_dir, entry.index)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as f:
            f.write(text)
        entries.append(entry)
    manifest = Manifest(codec=codec.name if codec else index.codec, decoded=codec is not None, shards=entries)
    tmp = os.path.join(out_dir, MANIFEST + ".partial")
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
    os.replace(tmp, os.path.join(out_dir, MANIFEST))  # written last: its presence means a complete index
    return manifest


def load(root: str, index: Index, codec: str, index_dir: str) -> Manifest | None:
    """The manifest in ``index_dir`` if it matches these shards (sha256, size on disk) and codec; else None."""
    path = os.path.join(index_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        manifest = Manifest.from_json(f.read(), path)
    base = local_root(root)
    recorded = [(s.url, s.sha256, s.bytes) for s in manifest.shards]
    if recorded != [(s.url, s.sha256, s.bytes) for s in index.shards] or manifest.codec != codec or not manifest.decoded:
        return None
    for s in manifest.shards:
        size = os.path.getsize(os.path.join(base, s.url)) if os.path.exists(os.path.join(base, s.url)) else None
        if size != s.bytes:
            raise ShardError(f"{join(root, s.url)}: {size} bytes on disk, the index says {s.bytes}; rebuild the "
                             f"shard or rerun 'lossyload dali-index'")
    return manifest
