"""The self-describing ``index.json`` of a shard set: written last, versioned, hashed.

Decoding a dataset needs nothing but this index and the shards it lists. Reading it checks it once, for every
reader (loader, DALI, ``verify``, ``inspect``): field types (an integer is a JSON integer, not ``true``,
``20.9`` or ``" 20 "``), ranges (a shard holds at least one sample, and no more than its bytes can frame),
unique shard URLs and sha256s, totals equal to the sums, and no ``NaN``/``Infinity`` anywhere. The codec
config's own fields are checked by the codec when it is built from it (:func:`lossyload.codecs.create_codec`).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import IO, Any

from . import jsonscan
from .errors import IndexFormatError

INDEX_VERSION = 1
INDEX_NAME = "index.json"
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch
# a URL every check of check_relative_url passes: plain segments, none empty, "." or ".." (the fast path's test)
_PLAIN_URL = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TAR_HEADER = 512  # bytes: every sample takes at least one tar member header, so a shard of B bytes frames <= B // 512
MAX_BYTES = 2**63 - 1  # a byte count past this cannot be a file (and would overflow int64 sums)


_NONE_TRANSCODED: dict[str, str] = {}  # shared by every shard with nothing transcoded: read, never written


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardInfo:
    """One shard: its URL relative to the index, sample count, byte size and sha256. Slots and one shared empty
    ``transcoded`` map (never mutated) keep an index of 100,000 shards small in memory."""

    url: str
    samples: int
    bytes: int
    sha256: str
    transcoded: dict[str, str] = field(default_factory=dict)  # key -> why it is not the source's bytes

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "shard") -> ShardInfo:
        """A shard entry, checked; errors name ``where`` (the index and the shard's position)."""
        if not isinstance(d, dict):
            raise IndexFormatError(f"{where}: must be a JSON object, not {type(d).__name__}")
        url = check_relative_url(_typed(d, "url", str, where))
        where = f"{where} ({url!r})"
        samples = _count(d, "samples", where, low=1)
        nbytes = _count(d, "bytes", where, low=0)
        if samples > nbytes // TAR_HEADER:
            raise IndexFormatError(f"{where}: index says {samples} samples, but {nbytes:,} bytes hold at most "
                                   f"{nbytes // TAR_HEADER} (every sample takes a {TAR_HEADER}-byte tar header)")
        sha = _typed(d, "sha256", str, where)
        if not _SHA256.fullmatch(sha):
            raise IndexFormatError(f"{where}: sha256 {sha[:80]!r} is not 64 lowercase hex digits")
        transcoded = d.get("transcoded", _NONE_TRANSCODED)
        return cls(url=url, samples=samples, bytes=nbytes, sha256=sha,
                   transcoded=_NONE_TRANSCODED if transcoded == {} and isinstance(transcoded, dict)
                   else _text_map(transcoded, f"{where}: transcoded"))


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
        d["totals"] = self.totals()
        d["shards"] = shards
        return d

    def totals(self) -> dict[str, int]:
        """The counts ``index.json`` states beside the shards (``totals``), from the shards."""
        return {"samples": self.samples, "bytes": self.bytes, "shards": len(self.shards),
                "transcoded": sum(len(s.transcoded) for s in self.shards), "skipped": len(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "index.json", consume: bool = False) -> Index:
        """The index in ``d``, checked. ``consume``: ``d``'s shard entries are dropped as they are read (the
        caller's parse is not used again), so that a 100,000-shard index is never held twice."""
        if not isinstance(d, dict):
            raise IndexFormatError(f"{where}: top level must be a JSON object")
        version = d.get("version")
        if type(version) is not int or version != INDEX_VERSION:  # not True, not 1.0
            raise IndexFormatError(
                f"{where}: unsupported index version {version!r} (this lossyload reads version {INDEX_VERSION})"
            )
        try:
            codec = _typed(d, "codec", dict, where)
            config = _typed(codec, "config", dict, f"{where}: codec")
            _check_finite(config, f"{where}: codec config")
            member = _typed(d, "member", str, where)
            if not member or "/" in member or _CONTROL.search(member):
                raise IndexFormatError(f"{where}: member {member!r} must be a plain file extension")
            shards = _typed(d, "shards", list, where)
            index = cls(
                version=version,
                codec=_typed(codec, "name", str, f"{where}: codec"),
                config=dict(config),
                member=member,
                labels=_texts(_typed(d, "labels", list, where), f"{where}: labels"),
                shards=_shard_infos(shards, where, consume),
                skipped=_text_map(d.get("skipped", {}), f"{where}: skipped"),
                assets={check_relative_url(k): v for k, v in _text_map(d.get("assets", {}), f"{where}: assets").items()},
            )
        except IndexFormatError as exc:  # a refused shard URL or field: say which index it is in
            raise IndexFormatError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexFormatError(f"{where}: malformed index ({type(exc).__name__}: {exc})") from exc
        index.check(where, d.get("totals"))
        return index

    def check(self, where: str = "index.json", totals: Any = None) -> None:
        """What holds across shards: unique URLs and sha256s (a shard listed twice would be delivered twice, and
        a cache keyed by sha256 would serve one shard's bytes for both), byte total in range, and the
        ``totals`` the index states (when given) equal to the sums."""
        for what in ("url", "sha256"):
            seen: set[str] = set()  # not value -> position: that is twice the memory at 100,000 shards
            for i, s in enumerate(self.shards):
                v = getattr(s, what)
                if v in seen:
                    j = next(k for k, t in enumerate(self.shards) if getattr(t, what) == v)
                    raise IndexFormatError(f"{where}: shards #{j} ({self.shards[j].url!r}) and #{i} ({s.url!r}) have "
                                           f"the same {what}: a shard listed twice would be read twice")
                seen.add(v)
        if self.bytes > MAX_BYTES:
            raise IndexFormatError(f"{where}: the shards' byte sizes add up to {self.bytes}, past {MAX_BYTES}")
        if totals is None:
            return
        if not isinstance(totals, dict):
            raise IndexFormatError(f"{where}: totals must be a JSON object")
        want = self.totals()  # not to_dict(): that copies every shard entry
        for k, v in totals.items():
            if k in want and (type(v) is not int or v != want[k]):
                raise IndexFormatError(f"{where}: totals say {k} = {v!r}, the shards add up to {want[k]}")

    def to_json(self) -> str:
        d = self.to_dict()
        d["codec"] = {"name": d["codec"], "config": d.pop("config")}
        return json.dumps(d, indent=1, sort_keys=False) + "\n"

    @classmethod
    def read(cls, f: IO[bytes], *, where: str = "index.json") -> Index:
        """The index in the binary file ``f``, read in chunks: neither the file's bytes nor its whole text are
        held while the entries are built (an index of 100,000 shards is 18 MB of text). A file that is not a
        valid index is read again whole (``f.seek(0)``) for :meth:`from_json` to say why."""
        try:
            d = _streamed(*jsonscan.chunks(f))
        except ValueError:  # bytes that are not text
            d = None
        if d is None:
            f.seek(0)
            return cls.from_json(f.read(), where=where)
        return cls.from_dict(d, where=where, consume=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "index.json") -> Index:
        # ValueError: JSONDecodeError, UnicodeDecodeError, an integer past the int/str digit limit; RecursionError:
        # arrays or objects nested deeper than the interpreter's recursion limit
        try:
            text = jsonscan.text(text)
            d = _streamed(text)
            if d is None:  # not the shape of an index, or not JSON: the plain parse says where and why
                d = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise IndexFormatError(f"{where}: not valid JSON ({exc})") from exc
        del text  # the decoded text (as large as the index) is not kept through the checks
        return cls.from_dict(d, where=where, consume=True)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number an index may hold")


def _typed(d: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """``d[key]``, which must be a ``kind`` (``bool`` is no ``int`` here)."""
    if key not in d:
        raise IndexFormatError(f"{where}: no {key!r} field")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise IndexFormatError(f"{where}: {key} must be a JSON {_JSON[kind]}, not {_shown(v)}")
    return v


def _count(d: dict[str, Any], key: str, where: str, *, low: int) -> int:
    v = _typed(d, key, int, where)
    if not low <= v <= MAX_BYTES:
        raise IndexFormatError(f"{where}: {key} = {v} is out of range (at least {low})")
    return v


def _quick(d: Any) -> ShardInfo | None:
    """The common entry (a plain URL, counts in range, a sha256, nothing transcoded) built in one test, without
    the per-field messages; None for anything else, which :meth:`ShardInfo.from_dict` checks and explains. Both
    accept exactly the same entries (tests/test_index.py)."""
    if type(d) is not dict:
        return None
    url, samples, nbytes, sha = d.get("url"), d.get("samples"), d.get("bytes"), d.get("sha256")
    if (type(url) is str and type(samples) is int and type(nbytes) is int and type(sha) is str
            and _counts_fit(samples, nbytes)
            and d.get("transcoded", _NONE_TRANSCODED) == {} and _PLAIN_URL.fullmatch(url) and _SHA256.fullmatch(sha)):
        return ShardInfo(url=url, samples=samples, bytes=nbytes, sha256=sha, transcoded=_NONE_TRANSCODED)
    return None


def _counts_fit(samples: int, nbytes: int) -> bool:
    """The count test of both fast paths (:func:`_quick`, :func:`_entry_match`): at least one sample, no more
    than the bytes can frame, bytes in range."""
    return 1 <= samples <= nbytes // TAR_HEADER and nbytes <= MAX_BYTES


def _shard_infos(entries: list[Any], where: str, consume: bool) -> list[ShardInfo]:
    out = []
    for i in range(len(entries)):
        e = entries[i]  # a ShardInfo where _streamed already built it (its fast path's checks passed)
        out.append(e if type(e) is ShardInfo else _quick(e) or ShardInfo.from_dict(e, where=f"{where}: shard #{i}"))
        if consume:
            entries[i] = None  # the parsed entry is freed now, not after the whole list
    return out


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
# an entry as Index.to_json writes it, with the white space and the separator after it: keys in this order, once
# each; a plain URL and a sha256 (nothing to unescape); JSON integers of up to 19 digits. json.loads would make
# the same value of that text, and _quick would take it when its counts are in range.
_W = r"[ \t\n\r]*"
_ENTRY_TEXT = re.compile(
    rf'{_W}\{{{_W}"url"{_W}:{_W}"({_PLAIN_URL.pattern})"{_W},{_W}"samples"{_W}:{_W}(0|[1-9][0-9]{{0,18}}){_W},'
    rf'{_W}"bytes"{_W}:{_W}(0|[1-9][0-9]{{0,18}}){_W},{_W}"sha256"{_W}:{_W}"([0-9a-f]{{64}})"{_W}'
    rf'(?:,{_W}"transcoded"{_W}:{_W}\{{{_W}\}}{_W})?\}}{_W}([,\]])')
_LONGEST_ENTRY = 4096  # characters: a longer common entry is parsed as JSON instead (same result, slower)


def _entry_match(m: re.Match[str]) -> ShardInfo | None:
    samples, nbytes = int(m[2]), int(m[3])
    if _counts_fit(samples, nbytes):  # the URL and sha256 were matched by the pattern (_PLAIN_URL, 64 hex digits)
        return ShardInfo(url=m[1], samples=samples, bytes=nbytes, sha256=m[4], transcoded=_NONE_TRANSCODED)
    return None


def _streamed(text: str, more: Callable[[int], str] | None = None) -> dict[str, Any] | None:
    """``json.loads`` of an index's text (``text``, then ``more``'s chunks: :mod:`lossyload.jsonscan`), except
    that its ``shards`` array holds a ShardInfo for each common entry (the shard tool's form read by one regular
    expression, else any entry :func:`_quick` takes), built as it is read; any other entry stays a dict, for
    :func:`_shard_infos` to check and explain. None where the text is not JSON or not an object."""
    return jsonscan.scan_object(text, more, decoder=_DECODER, array="shards", fast=_ENTRY_TEXT,
                                build=_entry_match, item=lambda e: _quick(e) or e, longest=_LONGEST_ENTRY)


def _text_map(m: Any, where: str) -> dict[str, str]:
    if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
        raise IndexFormatError(f"{where}: must be a JSON object of strings")
    return dict(m)


def _texts(xs: list[Any], where: str) -> list[str]:
    bad = next((i for i, x in enumerate(xs) if not isinstance(x, str)), None)
    if bad is not None:
        raise IndexFormatError(f"{where}[{bad}] must be a JSON string, not {_shown(xs[bad])}")
    return list(xs)


def _check_finite(value: Any, where: str) -> None:
    """No NaN or infinity anywhere in ``value`` (a config given as a dict, not read from JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise IndexFormatError(f"{where}: {value} is not a number an index may hold")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}: {k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_finite(v, where)


def _shown(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


_JSON = {int: "integer", str: "string", list: "array", dict: "object"}


def check_relative_url(url: str) -> str:
    """Refuse shard URLs that could escape the dataset: schemes (``pipe:``, ``http:``...), absolute, ``..``."""
    if not url or _SCHEME.match(url) or url.startswith(("/", "\\")) or "\\" in url or _CONTROL.search(url):
        raise IndexFormatError(f"shard URL {url!r} must be a plain path relative to the index (no control "
                               "characters)")
    norm = posixpath.normpath(url)
    if norm.startswith("..") or norm != url:
        raise IndexFormatError(f"shard URL {url!r} must be a normalised path inside the dataset")
    return url


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"
