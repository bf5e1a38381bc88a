"""``lossyload verify``: ``verify()`` and the CLI on a clean set and on each kind of damage. Every problem is
listed (one line each, naming the shard and, for a sample's problem, its key), exact and in order; exit 0 when
clean, 1 with problems, 2 when the index itself is unusable."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lossyload.cli import main as cli_main
from lossyload.errors import IndexFormatError
from lossyload.index import Index
from lossyload.shard.job import ShardJob, run_job
from lossyload.verify import Problem, verify

from .conftest import audio_bytes, make_image_folder, write

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]  # inside the encodec package

COUNTS = {"cat": 5, "dog": 5, "emu": 4}  # maxcount 5: shards of 5, 5, 4
S0, S1, S2 = (f"shard-{i:06d}.tar" for i in range(3))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """14 JPEG samples (``cat/img_000`` ..) in 3 shards. Read-only: tests damage copies (``ds``)."""
    root = tmp_path_factory.mktemp("verify")
    src = make_image_folder(root / "src", COUNTS)
    # folder order: the tests damage samples they name by shard
    run_job(ShardJob(src=str(src), dest=str(root / "ds"), maxcount=5, progress=False, config={}, shuffle=False))
    return root / "ds"


@pytest.fixture
def ds(clean: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ds"
    shutil.copytree(clean, dest)
    return dest


# ------------------------------------------------------------------------------------------- helpers


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def rewrite(ds: Path, name: str, edit) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in edit(tar_members(ds / name)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (ds / name).write_bytes(buf.getvalue())


def member_info(ds: Path, name: str, member: str) -> tarfile.TarInfo:
    with tarfile.open(ds / name) as tar:
        return tar.getmember(member)


def patch(ds: Path, name: str, at: int, data: bytes) -> None:
    raw = bytearray((ds / name).read_bytes())
    raw[at : at + len(data)] = data
    (ds / name).write_bytes(bytes(raw))


def reindex(ds: Path, name: str) -> None:
    """Record shard ``name``'s current size and sha256 in the index (sample count kept)."""
    index = Index.from_json((ds / "index.json").read_text())
    data = (ds / name).read_bytes()
    shards = [dataclasses.replace(s, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()) if s.url == name
              else s for s in index.shards]
    (ds / "index.json").write_text(dataclasses.replace(index, shards=shards).to_json())


def where(ds: Path, shard: str | None) -> str:
    return f"{ds}/{shard}" if shard else str(ds)


def check(problems: list[Problem], ds: Path, want: list[tuple]) -> None:
    """``want``: ``(shard or None for the dataset, key or None, regex)`` per problem, in order."""
    got = [(p.url, p.key) for p in problems]
    assert got == [(where(ds, s), k) for s, k, *_ in want], [str(p) for p in problems]
    for p, (_, _, pattern, *_) in zip(problems, want):
        assert re.search(pattern, p.what), (p.what, pattern)


SHA = "sha256 does not match the index"
DECODE = "decode"  # marks problems only found by decoding payloads


# ------------------------------------------------------------------------------------------- damages
# Each damages a copy and returns the problems, in order: (shard, key, regex[, DECODE])


def corrupt_payload(ds: Path) -> list[tuple]:
    """dog/img_002's JPEG overwritten from its start (length kept)."""
    patch(ds, S1, member_info(ds, S1, "dog/img_002.jpg").offset_data, b"\xaa" * 64)
    return [(S1, "dog/img_002", r"^payload does not decode: DecodeError: .*JPEG", DECODE), (S1, None, SHA)]


def corrupt_payload_reindexed(ds: Path) -> list[tuple]:
    """The same, with the index recording the damaged bytes: only decoding finds it."""
    corrupt_payload(ds)
    reindex(ds, S1)
    return [(S1, "dog/img_002", r"^payload does not decode: DecodeError: ", DECODE)]


def flipped_scan_byte(ds: Path) -> list[tuple]:
    """One bit flipped inside the entropy-coded data: still decodes, only the sha256 tells."""
    m = member_info(ds, S1, "dog/img_003.jpg")
    raw = (ds / S1).read_bytes()
    patch(ds, S1, m.offset_data + m.size // 2, bytes([raw[m.offset_data + m.size // 2] ^ 1]))
    return [(S1, None, SHA)]


def truncated(ds: Path) -> list[tuple]:
    """Cut halfway through dog/img_003's JPEG: 2 whole samples read (dog/img_002 was still open)."""
    m = member_info(ds, S1, "dog/img_003.jpg")
    (ds / S1).write_bytes((ds / S1).read_bytes()[: m.offset_data + m.size // 2])
    cut = m.offset_data + m.size // 2
    return [(S1, None, rf"^unreadable after 2 samples: .*{S1}: truncated tar member "
                       rf"\({m.size // 2} of {m.size} bytes\)"),
            (S1, None, rf"^{cut} bytes, index says 20480$"), (S1, None, SHA), (S1, None, "^2 samples, index says 5$")]


def missing_shard(ds: Path) -> list[tuple]:
    (ds / S2).unlink()
    return [(S2, None, "^missing$")]


def extra_sample(ds: Path) -> list[tuple]:
    """A sixth sample appended to a shard the index says holds 5 (the tar's 10 KiB records keep its size)."""
    rewrite(ds, S0, lambda ms: ms + [("cat/img_999.jpg", ms[0][1]), ("cat/img_999.cls", b"0")])
    assert (ds / S0).stat().st_size == 20480
    return [(S0, None, SHA), (S0, None, "^6 samples, index says 5$")]


def grown_shard(ds: Path) -> list[tuple]:
    """Bytes after the end-of-archive marker: the samples are intact, the file is not the indexed one."""
    with open(ds / S2, "ab") as f:
        f.write(b"tail")
    return [(S2, None, "^20484 bytes, index says 20480$"), (S2, None, SHA)]


def duplicate_key(ds: Path) -> list[tuple]:
    """cat/img_000 again after cat/img_002, and cat/img_004 dropped: 5 samples, one key twice."""
    rewrite(ds, S0, lambda ms: ms[:6] + ms[:2] + ms[6:8])
    reindex(ds, S0)
    return [(S0, "cat/img_000", r"^duplicate key \(samples #0 and #3\)$")]


def duplicate_key_unindexed(ds: Path) -> list[tuple]:
    """cat/img_000 again at the end, index unchanged."""
    rewrite(ds, S0, lambda ms: ms + ms[:2])
    return [(S0, "cat/img_000", r"^duplicate key \(samples #0 and #5\)$"), (S0, None, SHA),
            (S0, None, "^6 samples, index says 5$")]


def wrong_cls(ds: Path) -> list[tuple]:
    """cls out of range (3 labels), not a number, negative, missing."""
    bad = {"emu/img_000.cls": b"3", "emu/img_001.cls": b"x", "emu/img_002.cls": b"-1", "emu/img_003.cls": None}
    rewrite(ds, S2, lambda ms: [(n, bad.get(n, d)) for n, d in ms if bad.get(n, d) is not None])
    reindex(ds, S2)
    return [(S2, f"emu/img_00{i}", r"^'cls' is not a label index in \[0, 3\)$") for i in range(4)]


def missing_payload(ds: Path) -> list[tuple]:
    rewrite(ds, S2, lambda ms: [(n, d) for n, d in ms if n != "emu/img_001.jpg"])
    reindex(ds, S2)
    return [(S2, "emu/img_001", r"^no 'jpg' member \(has \['cls'\]\)$")]


def unsafe_member(ds: Path) -> list[tuple]:
    """A member named ../dog/img_001.jpg: the shard is not read past it (index updated to the new bytes)."""
    rewrite(ds, S1, lambda ms: [("../" + n if n == "dog/img_001.jpg" else n, d) for n, d in ms])
    reindex(ds, S1)
    return [(S1, None, r"^unreadable after 0 samples: .*unsafe member name '\.\./dog/img_001\.jpg'"),
            (S1, None, "^0 samples, index says 5$")]


def huge_member(ds: Path) -> list[tuple]:
    """dog/img_001's header declares 10 GB (GNU base-256 size): refused, not read."""
    m = member_info(ds, S1, "dog/img_001.jpg")
    h = bytearray((ds / S1).read_bytes()[m.offset : m.offset + 512])
    h[124:136] = b"\x80" + (10 * 10**9).to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    patch(ds, S1, m.offset, bytes(h))
    return [(S1, None, r"^unreadable after 0 samples: .*member declares 10000000000 bytes, more than the 1073741824"),
            (S1, None, SHA), (S1, None, "^0 samples, index says 5$")]


DAMAGES = {f.__name__: f for f in [
    corrupt_payload, corrupt_payload_reindexed, flipped_scan_byte, truncated, missing_shard, extra_sample,
    grown_shard, duplicate_key, duplicate_key_unindexed, wrong_cls, missing_payload, unsafe_member, huge_member,
]}


# ------------------------------------------------------------------------------------------- tests


def test_clean_set(clean: Path, capsys):
    index = Index.from_json((clean / "index.json").read_text())
    for decode in (True, False):
        report = verify(str(clean), decode=decode)
        assert (report.shards, report.samples, report.bytes, report.problems) == (3, 14, index.bytes, [])
    assert index.bytes == 3 * 20480
    for extra in ([], ["--no-decode"]):
        assert cli_main(["verify", str(clean), "--no-progress", *extra]) == 0
        out, err = capsys.readouterr()
        assert out == f"{clean}: 3 shards, 14 samples, 61,440 bytes checked: OK\n" and err == ""


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_every_problem_is_listed(ds: Path, damage: str, capsys):
    want = DAMAGES[damage](ds)
    report = verify(str(ds))
    check(report.problems, ds, want)
    assert report.shards == 3
    undecoded = [w for w in want if DECODE not in w[3:]]
    check(verify(str(ds), decode=False).problems, ds, undecoded)  # sizes, hashes, framing, counts: still checked

    status = cli_main(["verify", str(ds), "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.splitlines() == [str(p) for p in report.problems]  # one line each, all of them
    for line, (shard, key, *_) in zip(out.splitlines(), want):
        assert line.startswith(f"{where(ds, shard)} [{key}]: " if key else f"{where(ds, shard)}: ")
    assert err == f"{ds}: 3 shards, {report.samples} samples, {report.bytes:,} bytes checked: {len(want)} problems\n"

    status = cli_main(["verify", str(ds), "--no-progress", "--no-decode"])
    out, err = capsys.readouterr()
    if undecoded:
        assert status == 1 and out.splitlines() == [str(p) for p in verify(str(ds), decode=False).problems]
    else:
        assert status == 0 and out.endswith(" bytes checked: OK\n") and err == ""


def test_counts_of_a_damaged_set(ds: Path):
    """Samples and bytes count what was read: a missing shard adds nothing, a truncated one what it held."""
    missing_shard(ds)
    truncated(ds)
    report = verify(str(ds))
    cut = (ds / S1).stat().st_size
    assert (report.shards, report.samples, report.bytes) == (3, 5 + 2, 20480 + cut)
    assert len(report.problems) == 5


def test_show_truncates_the_list(ds: Path, capsys):
    wrong_cls(ds)  # 4 problems in shard 2 ...
    (ds / S1).unlink()  # ... and shard 1 missing: 5 in all
    problems = verify(str(ds)).problems
    assert len(problems) == 5
    assert cli_main(["verify", str(ds), "--no-progress", "--show", "2"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(problems[0]), str(problems[1]), "... and 3 more"]
    assert err.endswith(": 5 problems\n")
    assert cli_main(["verify", str(ds), "--no-progress", "--show", "5"]) == 1
    assert "more" not in capsys.readouterr().out
    assert cli_main(["verify", str(ds), "--no-progress", "--show", "0"]) == 1
    out, err = capsys.readouterr()
    assert out == "... and 5 more\n" and "5 problems" in err


def test_damage_in_every_shard_is_reported_in_shard_order(ds: Path):
    """Verify does not stop at the first damaged shard."""
    wrong = wrong_cls(ds)
    grown_shard(ds)
    flipped_scan_byte(ds)
    rewrite(ds, S0, lambda ms: [(n, b"9" if n == "cat/img_004.cls" else d) for n, d in ms])
    check(verify(str(ds)).problems, ds, [(S0, "cat/img_004", "'cls' is not a label index"), (S0, None, SHA),
                                         (S1, None, SHA), *wrong, (S2, None, "^20484 bytes"), (S2, None, SHA)])


@pytest.mark.parametrize("case", ["missing", "not-json", "version", "pipe-url"])
def test_unusable_index_is_exit_2(ds: Path, tmp_path: Path, case: str, capsys):
    marker = tmp_path / "owned"
    if case == "missing":
        (ds / "index.json").unlink()
        message = f"{ds}/index.json: no index.json"
    elif case == "not-json":
        (ds / "index.json").write_text("{\"version\": 1,")
        message = "not valid JSON"
    else:
        d = json.loads((ds / "index.json").read_text())
        d.update(version=3) if case == "version" else d["shards"][0].update(url=f"pipe:touch {marker}")
        (ds / "index.json").write_text(json.dumps(d))
        message = "unsupported index version 3" if case == "version" else "shard URL 'pipe:touch"
    with pytest.raises(IndexFormatError, match=message):
        verify(str(ds))
    assert cli_main(["verify", str(ds), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("lossyload verify: error: ") and message in err
    assert not marker.exists()


def test_exit_statuses_of_the_real_process(ds: Path):
    """``sys.exit(main())``: 1 with the problems on stdout, 2 without an index (0 is checked in-process above).
    The two processes run side by side (each imports torch)."""
    missing_shard(ds)
    procs = [subprocess.Popen([sys.executable, "-m", "lossyload.cli", "verify", url, "--no-progress", "--no-decode"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for url in (str(ds), str(ds / "nothing"))]
    (bad_out, bad_err), (none_out, none_err) = (p.communicate(timeout=120) for p in procs)
    assert procs[0].returncode == 1 and bad_out == f"{ds}/{S2}: missing\n" and "1 problems" in bad_err
    assert procs[1].returncode == 2 and none_out == "" and f"{ds}/nothing/index.json: no index.json" in none_err


# ------------------------------------------------------------------------------------------- raw arrays


@pytest.fixture(scope="module")
def coef(tmp_path_factory) -> Path:
    """8 samples with pre-extracted coefficients (``dct.zst``: zstd of an LLD1 header and int16 arrays)."""
    root = tmp_path_factory.mktemp("verify-coef")
    src = make_image_folder(root / "src", {"a": 4, "b": 4})
    run_job(ShardJob(src=str(src), dest=str(root / "ds"), maxcount=8, progress=False,
                     config={"storage": "coefficients"}, shuffle=False))
    return root / "ds"


def test_raw_arrays_of_the_wrong_shape_or_length(coef: Path, tmp_path: Path):
    """Decoding checks the stored shapes against the bytes; --no-decode does not (the index is updated, so
    nothing else is wrong)."""
    import zstandard

    from lossyload.media.jpeg import _HEADER

    ds = tmp_path / "ds"
    shutil.copytree(coef, ds)

    def recompress(payload, edit):
        return zstandard.ZstdCompressor().compress(edit(zstandard.ZstdDecompressor().decompress(payload)))

    def grid(raw):
        magic, ky, kc, hb, wb = _HEADER.unpack_from(raw)
        return _HEADER.pack(magic, ky, kc, hb, wb + 2) + raw[_HEADER.size :]

    edits = {"a/img_001.dct.zst": lambda p: recompress(p, grid),
             "b/img_002.dct.zst": lambda p: recompress(p, lambda r: r[:-1])}
    rewrite(ds, S0, lambda ms: [(n, edits[n](d) if n in edits else d) for n, d in ms])
    reindex(ds, S0)
    problems = verify(str(ds)).problems
    check(problems, ds, [(S0, "a/img_001", "^payload does not decode: DecodeError: bad pre-extracted coefficient "
                                           "member: header .* does not fit"),
                         (S0, "b/img_002", "^payload does not decode: DecodeError: .*does not fit")])
    assert verify(str(ds), decode=False).problems == []


# ------------------------------------------------------------------------------------------- side files


@pytest.fixture(scope="module")
def encodec(tmp_path_factory) -> Path:
    """2 one-second clips as EnCodec codes (random weights), with the codebook side file the index names."""
    from lossyload.commands.shard import main as shard_main

    root = tmp_path_factory.mktemp("verify-encodec")
    t = np.arange(16000) / 16000
    for cls, f in (("low", 200), ("high", 2000)):
        write(root / "src" / cls / "clip.wav", audio_bytes(0.3 * np.sin(2 * np.pi * f * t)))
    assert shard_main([str(root / "src"), str(root / "ds"), "--codec", "encodec", "--set", 'weights="random"',
                       "--no-progress"]) == 0
    return root / "ds"


def test_side_files(encodec: Path, tmp_path: Path, capsys):
    from lossyload.codecs.encodec import ASSET

    assert verify(str(encodec)).problems == [] and Index.from_json((encodec / "index.json").read_text()).assets
    ds = tmp_path / "ds"
    shutil.copytree(encodec, ds)

    (ds / ASSET).unlink()
    for decode in (True, False):
        check(verify(str(ds), decode=decode).problems, ds,
              [(None, None, rf"^{ds}/{ASSET}: side file named in the index is missing \(payloads not decoded\)$")])
    assert cli_main(["verify", str(ds), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert out == f"{ds}: {ds}/{ASSET}: side file named in the index is missing (payloads not decoded)\n"

    books = bytearray((encodec / ASSET).read_bytes())
    books[-1] ^= 1
    (ds / ASSET).write_bytes(bytes(books))
    check(verify(str(ds)).problems, ds, [(None, None, rf"^{ds}/{ASSET}: sha256 does not match the index")])

    # the right sha256, the wrong array: found when the codec takes it
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), np.float32), allow_pickle=False)
    (ds / ASSET).write_bytes(buf.getvalue())
    d = json.loads((ds / "index.json").read_text())
    d["assets"][ASSET] = hashlib.sha256(buf.getvalue()).hexdigest()
    (ds / "index.json").write_text(json.dumps(d))
    check(verify(str(ds)).problems, ds, [(None, None, r"encodec-codebooks\.npy holds float32\[2, 3\], expected")])
    assert verify(str(ds), decode=False).problems == []
