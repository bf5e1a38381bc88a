"""The one size + sha256 check: wording, bounded reads, the hashing streams."""

from __future__ import annotations

import hashlib
import io

import pytest

from lossyload.errors import ShardError
from lossyload.integrity import Digest, HashingReader, HashingWriter, digest_bytes, file_digest, read_checked

DATA = bytes(range(256)) * 40
SHA = hashlib.sha256(DATA).hexdigest()


def test_digest_matches_hashlib_and_lists_each_difference() -> None:
    d = digest_bytes(DATA)
    assert (d.size, d.hexdigest()) == (len(DATA), SHA)
    assert d.matches(len(DATA), SHA) and d.problems(len(DATA), SHA) == []
    assert d.problems(len(DATA), "0" * 64) == ["sha256 does not match the index"]
    assert d.problems(len(DATA) + 4, "0" * 64) == [f"{len(DATA)} bytes, index says {len(DATA) + 4}",
                                                   "sha256 does not match the index"]
    assert not d.matches(len(DATA) - 1, SHA)


def test_file_digest_reads_at_most_one_byte_past_the_limit() -> None:
    f = io.BytesIO(DATA + b"x" * 10_000)
    d = file_digest(f, len(DATA))
    assert d.size == len(DATA) + 1 and f.tell() == len(DATA) + 1
    assert d.problems(len(DATA), SHA, bounded=True)[0] == f"more than {len(DATA)} bytes, index says {len(DATA)}"
    assert file_digest(io.BytesIO(DATA)).matches(len(DATA), SHA)


@pytest.mark.parametrize(("data", "message"), [
    (DATA[:-1], rf"^u: {len(DATA) - 1} bytes, index says {len(DATA)} \(verify\)$"),
    (DATA + b"!", rf"^u: more than {len(DATA)} bytes, index says {len(DATA)} \(verify\)$"),
    (DATA[:-1] + b"!", r"^u: sha256 does not match the index \(verify\)$"),
])
def test_read_checked_names_the_url_and_the_first_difference(data: bytes, message: str) -> None:
    with pytest.raises(ShardError, match=message):
        read_checked(io.BytesIO(data), "u", len(DATA), SHA, "verify")
    assert read_checked(io.BytesIO(DATA), "u", len(DATA), SHA, "verify") == DATA


def test_hashing_streams_count_what_passes() -> None:
    r = HashingReader(io.BytesIO(DATA))
    assert r.read(100) == DATA[:100]
    r.drain()
    assert r.digest.matches(len(DATA), SHA)
    out = io.BytesIO()
    w = HashingWriter(out)
    for i in range(0, len(DATA), 999):
        w.write(DATA[i:i + 999])
    assert out.getvalue() == DATA and w.digest.matches(len(DATA), SHA)
    assert isinstance(Digest().hexdigest(), str)
