"""The self-describing ``index.json`` of a shard set: written last, versioned, hashed.

Decoding a dataset needs nothing but this index and the shards it lists.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IndexFormatError

INDEX_VERSION = 1
INDEX_NAME = "index.json"
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One shard: its URL relative to the index, sample count, byte size and sha256."""

    url: str
    samples: int
    bytes: int
    sha256: str
    transcoded: dict[str, str] = field(default_factory=dict)  # key -> why it is not the source's bytes

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardInfo:
        return cls(
            url=check_relative_url(str(d["url"])),
            samples=int(d["samples"]),
            bytes=int(d["bytes"]),
            sha256=str(d["sha256"]),
            transcoded={str(k): str(v) for k, v in d.get("transcoded", {}).items()},
        )


@dataclass(frozen=True, kw_only=True)
class Index:
    """The content of ``index.json``."""

    codec: str
    config: dict[str, Any]
    labels: list[str]
    shards: list[ShardInfo]
    member: str  # the tar member extension holding each sample's payload, e.g. "jpg"
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason, from the shard tool
    assets: dict[str, str] = field(default_factory=dict)  # codec side files beside the index: name -> sha256
    version: int = INDEX_VERSION

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        shards = d.pop("shards")
        d["totals"] = {
            "samples": self.samples,
            "bytes": self.bytes,
            "shards": len(self.shards),
            "transcoded": sum(len(s.transcoded) for s in self.shards),
            "skipped": len(self.skipped),
        }
        d["shards"] = shards
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "index.json") -> Index:
        if not isinstance(d, dict):
            raise IndexFormatError(f"{where}: top level must be a JSON object")
        version = d.get("version")
        if type(version) is not int or version != INDEX_VERSION:  # not True, not 1.0
            raise IndexFormatError(
                f"{where}: unsupported index version {version!r} (this lossyload reads version {INDEX_VERSION})"
            )
        try:
            return cls(
                version=version,
                codec=str(d["codec"]["name"]),
                config=dict(d["codec"]["config"]),
                member=str(d["member"]),
                labels=[str(x) for x in d["labels"]],
                shards=[ShardInfo.from_dict(s) for s in d["shards"]],
                skipped={str(k): str(v) for k, v in d.get("skipped", {}).items()},
                assets={check_relative_url(str(k)): str(v) for k, v in d.get("assets", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # OverflowError: int(inf)
            raise IndexFormatError(f"{where}: malformed index ({type(exc).__name__}: {exc})") from exc
        except IndexFormatError as exc:  # a refused shard URL: say which index it is in
            raise IndexFormatError(f"{where}: {exc}") from exc

    def to_json(self) -> str:
        d = self.to_dict()
        d["codec"] = {"name": d["codec"], "config": d.pop("config")}
        return json.dumps(d, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "index.json") -> Index:
        # ValueError: JSONDecodeError, UnicodeDecodeError, an integer past the int/str digit limit; RecursionError:
        # arrays or objects nested deeper than the interpreter's recursion limit
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise IndexFormatError(f"{where}: not valid JSON ({exc})") from exc
        return cls.from_dict(d, where=where)


def check_relative_url(url: str) -> str:
    """Refuse shard URLs that could escape the dataset: schemes (``pipe:``, ``http:``...), absolute, ``..``."""
    if not url or _SCHEME.match(url) or url.startswith(("/", "\\")) or "\\" in url:
        raise IndexFormatError(f"shard URL {url!r} must be a plain path relative to the index")
    norm = posixpath.normpath(url)
    if norm.startswith("..") or norm != url:
        raise IndexFormatError(f"shard URL {url!r} must be a normalised path inside the dataset")
    return url


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"
