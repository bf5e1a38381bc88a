"""A large JSON object read one value at a time, one of its arrays item by item, the text in chunks.

``json.loads`` of an ``index.json`` of 100,000 shards holds the file's 18 MB of text and builds 100,000 dicts
before a caller sees the first. :func:`scan_object` reads the same text with the stdlib scanner
(``json.JSONDecoder.raw_decode``) one value at a time, hands each item of one named array to the caller as it
is read (an item the caller's regular expression matches is never parsed into a dict at all), and takes the
text from a reader in chunks, dropping what it has read. What it accepts, ``json.loads`` accepts and makes the
same value of; anything else (not JSON, not an object) is None, for ``json.loads`` to explain
(tests/test_index.py compares the two on valid, hostile and damaged texts, in chunks of every size).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from typing import IO, Any

_SPACE = re.compile(r"[ \t\n\r]*")
CHUNK = 1 << 20  # characters read at a time from a file


class _Scan:
    """A position in a JSON text that arrives in chunks (``more(n)``: about ``n`` further characters, "" at the
    end); ``text[pos:]`` is what is not read yet."""

    def __init__(self, text: str, more: Callable[[int], str] | None, decoder: json.JSONDecoder) -> None:
        self.text, self.pos, self.more, self.decoder = text, 0, more, decoder

    def refill(self, ahead: int = 0) -> bool:
        """Append the next chunk (at least as long as what is buffered, so that a long value is re-scanned
        a bounded number of times) and drop what was read; False at the end of the text."""
        if self.more is None:
            return False
        chunk = self.more(max(CHUNK, ahead, len(self.text) - self.pos))
        if not chunk:
            self.more = None
            return False
        self.text, self.pos = self.text[self.pos:] + chunk, 0
        return True

    def peek(self) -> str:
        """The next character past white space ("" at the end); the position moves past the space."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self.refill():
                return self.text[self.pos:self.pos + 1]

    def take(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                v, end = self.decoder.raw_decode(self.text, self.pos)
                # a value that reaches the end of the buffer may go on in the next chunk (a number cut short)
                if end < len(self.text) or self.more is None:
                    self.pos = end
                    return v
            except ValueError:
                if self.more is None:
                    raise
            self.refill()

    def items(self, close: str) -> Any:
        """Yields once per item of the object or array just opened, and reads its closing ``close``."""
        if self.peek() == close:
            self.pos += 1
            return
        while True:
            yield
            if self.peek() == close:
                self.pos += 1
                return
            self.take(",")

    def array(self, fast: re.Pattern[str], build: Callable[[re.Match[str]], Any], item: Callable[[Any], Any],
              longest: int) -> list[Any]:
        """The items of the array just opened, and its ``]``. ``fast`` matches the common item's text with the
        white space and separator (``,`` or ``]``, its last group) after it; ``build(match)`` makes it, or None
        to parse it as JSON after all; every other item is ``item(value)``. ``longest``: the most characters a
        ``fast`` item takes."""
        out: list[Any] = []
        while True:
            if len(self.text) - self.pos < longest:
                self.refill(longest)
            m = fast.match(self.text, self.pos)
            made = build(m) if m else None
            if made is not None:
                out.append(made)
                self.pos = m.end()
                if m[fast.groups] == "]":
                    return out
                continue
            if not out and self.peek() == "]":
                self.pos += 1
                return out
            out.append(item(self.value()))
            if self.peek() == "]":
                self.pos += 1
                return out
            self.take(",")


def scan_object(text: str, more: Callable[[int], str] | None, *, decoder: json.JSONDecoder, array: str,
                fast: re.Pattern[str], build: Callable[[re.Match[str]], Any], item: Callable[[Any], Any],
                longest: int) -> dict[str, Any] | None:
    """``json.loads`` of a top-level object whose text is ``text`` followed by ``more``'s chunks, except that
    the value of key ``array``, where it is an array, is read by :meth:`_Scan.array` (see there). None where
    the text is not valid JSON or not an object. A repeated key keeps its last value, as in ``json.loads``."""
    s = _Scan(text, more, decoder)
    out: dict[str, Any] = {}
    try:
        s.take("{")
        for _ in s.items("}"):
            key = s.value()
            if type(key) is not str:
                return None
            s.take(":")
            if key == array and s.peek() == "[":
                s.pos += 1
                out[key] = s.array(fast, build, item, longest)
            else:
                out[key] = s.value()
        if s.peek():
            return None
    except (ValueError, RecursionError):
        return None
    return out


def text(data: str | bytes) -> str:
    """``data`` as JSON text, bytes decoded as ``json.loads`` decodes them (UTF-8, -16 or -32 by the first bytes;
    a UTF-8 BOM dropped): :func:`chunks` for a whole text at once. ValueError on bytes that are not text."""
    if isinstance(data, (bytes, bytearray)):
        return data.decode(json.detect_encoding(data), "surrogatepass")
    return data


def chunks(f: IO[bytes]) -> tuple[str, Callable[[int], str]]:
    """A binary file as JSON text in chunks: ``(first chunk, more)``, decoded as ``json.loads`` decodes bytes
    (UTF-8, -16 or -32 by the first bytes; a UTF-8 BOM dropped). ``more`` raises ValueError on bytes that are
    not text in that encoding."""
    head = f.read(4)
    decoder = codecs.getincrementaldecoder(json.detect_encoding(head))("surrogatepass")

    def more(n: int) -> str:
        while True:
            data = f.read(n)
            text = decoder.decode(data, final=not data)
            if text or not data:  # a chunk may end inside a character: read on
                return text

    return decoder.decode(head, final=len(head) < 4), more
