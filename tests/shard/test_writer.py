"""The deterministic tar writer: fixed headers, hash and size while writing, exact size prediction for
``maxsize``, atomic rename, abort."""

from __future__ import annotations

import gc
import hashlib
import sys
import tarfile
from pathlib import Path

import pytest
from webdataset.tariterators import group_by_keys, tar_file_iterator

from lossyload.shard.writer import MTIME, ShardWriter

from ..conftest import read_tar

SAMPLES = [
    ("cat/img_000", {"jpg": b"\xff\xd8" + bytes(range(256)) * 3, "cls": b"0"}),
    ("cat/img_001", {"jpg": b"x" * 511, "cls": b"0"}),
    ("dog/" + "long_name_" * 12, {"jpg": b"y" * 512, "cls": b"1"}),  # > 100 chars: GNU long-name header
    ("dog/empty", {"jpg": b"", "cls": b"1"}),
    ("dog/big", {"dct.zst": bytes(20000), "cls": b"12"}),
]


def write(path: Path, samples=SAMPLES) -> tuple[int, str]:
    w = ShardWriter(str(path))
    for key, members in samples:
        w.add(key, members)
    assert w.samples == len(samples)
    return w.close()


def test_members_headers_hash_and_size(tmp_path: Path) -> None:
    path = tmp_path / "shard-000000.tar"
    size, sha = write(path)
    data = path.read_bytes()
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "shard-000000.tar.partial").exists()
    assert read_tar(path) == [(f"{k}.{e}", v) for k, m in SAMPLES for e, v in m.items()]
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            assert m.isfile() and m.mtime == MTIME == 0 and m.mode == 0o444
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")


def test_byte_identical_across_writes(tmp_path: Path) -> None:
    write(tmp_path / "a.tar")
    write(tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_webdataset_reads_it(tmp_path: Path) -> None:
    write(tmp_path / "s.tar")
    with open(tmp_path / "s.tar", "rb") as f:
        samples = list(group_by_keys({**m, "__url__": "s.tar"} for m in tar_file_iterator(f)))
    assert [s["__key__"] for s in samples] == [k for k, _ in SAMPLES]
    for s, (_, members) in zip(samples, SAMPLES):
        assert {k: v for k, v in s.items() if not k.startswith("__")} == members


def test_size_if_added_is_exact(tmp_path: Path) -> None:
    w = ShardWriter(str(tmp_path / "s.tar"))
    predicted = None
    for key, members in SAMPLES:
        predicted = w.size_if_added(key, members)
        assert predicted % tarfile.RECORDSIZE == 0
        w.add(key, members)
    size, _ = w.close()
    assert size == predicted == (tmp_path / "s.tar").stat().st_size
    # every prefix of the sample list too
    for n in range(1, len(SAMPLES)):
        w = ShardWriter(str(tmp_path / f"p{n}.tar"))
        for key, members in SAMPLES[: n - 1]:
            w.add(key, members)
        guess = w.size_if_added(*SAMPLES[n - 1])
        w.add(*SAMPLES[n - 1])
        assert w.close()[0] == guess


def test_abort_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    w = ShardWriter(str(tmp_path / "s.tar"))
    w.add(*SAMPLES[0])
    assert (tmp_path / "s.tar.partial").exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    del w
    gc.collect()
    assert not unraisable, [str(u.exc_value) for u in unraisable]  # nothing flushed into the closed file later


def test_refuses_pipe(tmp_path: Path) -> None:
    from lossyload.errors import LossyloadError

    with pytest.raises(LossyloadError, match="pipe"):
        ShardWriter(f"pipe:cat > {tmp_path}/x.tar")
