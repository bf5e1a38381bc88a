"""Faults around the shard job: the real ``lossyload-shard`` killed (SIGKILL to the command only, its pool
workers left to notice) at seeded random points several times and rerun; a real full disk (``/dev/full``)
under a shard and under the index; access denied (a local S3 server checking credentials) and a destination
under a regular file; hostile WebDataset tars (pickles, path-traversal member names)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from lossyload.errors import LossyloadError
from lossyload.index import Index
from lossyload.shard import ShardJob, run_job
from lossyload.commands.shard import main as shard_main

from ..conftest import dataset_files, jpeg_bytes, make_image_folder, make_wds_tar, synthetic_rgb

MAXCOUNT = 5
REPO = str(Path(__file__).resolve().parents[2])  # the checkout under test, installed or not


def shard(src: Path, dest: Path, **kw):
    return run_job(ShardJob(src=str(src), dest=str(dest), maxcount=MAXCOUNT, progress=False, **kw))


def sample_keys(dest: Path) -> list[str]:
    """The sample keys of every shard the index lists, in order (one ``.cls`` member per sample)."""
    index = Index.from_json((dest / "index.json").read_text())
    keys = []
    for s in index.shards:
        with tarfile.open(dest / s.url) as tf:
            keys += [n[: -len(".cls")] for n in tf.getnames() if n.endswith(".cls")]
    return keys


def leftovers(dest: Path) -> list[str]:
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.name.endswith(".partial")
                  or "_progress" in p.parts)


# ------------------------------------------------------------------------------------------- SIGKILL
N_SHARDS = 200  # 1000 files (one corrupt): 999 samples, 200 shards of MAXCOUNT


@pytest.fixture(scope="module")
def kill_src(tmp_path_factory) -> tuple[Path, dict[str, bytes], list[str]]:
    """(source folder, the files of an uninterrupted run, its sample keys)."""
    root = tmp_path_factory.mktemp("kill")
    src = make_image_folder(root / "src", {"a": 500, "b": 500}, size=(16, 16))
    (src / "a" / "img_010.jpg").write_bytes(b"corrupt")  # a skip to carry across the kills
    shard(src, root / "ref")
    return src, dataset_files(root / "ref"), sample_keys(root / "ref")


def _records(dest: Path) -> int:
    try:
        return sum(n.startswith("0") and n.endswith(".json") for n in os.listdir(dest / "_progress"))
    except FileNotFoundError:
        return 0


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                if d.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _check_records(dest: Path) -> None:
    """Every shard a progress record lists is there, complete (size and sha256 as recorded)."""
    for p in sorted((dest / "_progress").glob("0*.json")):
        s = json.loads(p.read_text())["shard"]
        if s["samples"]:
            data = (dest / s["url"]).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (s["bytes"], s["sha256"]), p.name


def kill_repeatedly(src: Path, dest: Path, workers: int, kills: int, seed: int, logs: Path,
                    orphans: list[int]) -> list[dict]:
    """Run the CLI ``kills`` times, each SIGKILLed (the command's own process only): the first at a random
    moment of its start-up (with a pool: once the pool's processes exist) or at its first shard if that comes
    sooner, the others at seeded random points spread over the first 3/5 of the job (when the progress records
    reach a random count, then 0-3 ms later: mid-shard or between shards). Returns what each kill left; the processes the killed command had started
    are added to ``orphans``."""
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, N_SHARDS * 3 // 5), kills - 1))
    cmd = [sys.executable, "-m", "lossyload.commands.shard", str(src), str(dest), "--maxcount", str(MAXCOUNT),
           "--workers", str(workers), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    landed = []
    for i in range(kills):
        before = _records(dest)
        with open(logs / f"kill{i}.out", "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        kids: list[int] = []
        try:
            if i == 0:  # start-up: importing, listing the source; with a pool, while its workers initialise
                delay = rng.uniform(0.05, 0.8) if workers == 1 else rng.uniform(0, 0.3)
                while workers > 1 and len(_children(proc.pid)) <= workers and _records(dest) == before:
                    assert proc.poll() is None and time.monotonic() - t0 < 120, "no pool started"
                    time.sleep(0.01)
                t1 = time.monotonic()
                while time.monotonic() - t1 < delay and _records(dest) == before:
                    time.sleep(0.001)
            else:
                target = max(targets[i - 1], before + 1)
                while _records(dest) < target:
                    assert proc.poll() is None, (logs / f"kill{i}.out").read_text()
                    assert time.monotonic() - t0 < 120, "no progress"
                    time.sleep(0.001)
                time.sleep(rng.uniform(0, 0.003))
            kids = _children(proc.pid)
        finally:
            proc.kill()
            proc.wait()
            orphans += kids
        at = time.monotonic() - t0
        assert proc.returncode == -signal.SIGKILL, (logs / f"kill{i}.out").read_text()
        assert not (dest / "index.json").exists(), "killed too late: the run had finished"
        shards = len(list(dest.glob("shard-*.tar")))
        records = _records(dest)
        landed.append({"at_s": round(at, 2), "records_before": before, "records": records, "shards": shards,
                       "partial": any(dest.glob("*.partial")), "unrecorded_shard": shards > records,
                       "children": len(kids)})
        _check_records(dest)
    return landed


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc to find the pool's processes")
@pytest.mark.parametrize("workers,kills,seed", [(1, 6, 2024), (2, 2, 7)])
def test_sigkill_at_random_points_then_rerun(kill_src, tmp_path: Path, workers: int, kills: int,
                                             seed: int) -> None:
    src, reference, ref_keys = kill_src
    dest = tmp_path / "out"
    orphans: list[int] = []
    try:
        landed = kill_repeatedly(src, dest, workers, kills, seed, tmp_path, orphans)
        print(f"\nworkers={workers}: {landed}")
        in_job = [k for k in landed[1:] if k["records"] > k["records_before"]]
        assert len(in_job) == kills - 1, landed  # every kill but the start-up one came after shards were written
        assert [k["records"] for k in landed[1:]] == sorted({k["records"] for k in landed[1:]}), landed
        if workers > 1:  # each kill left the pool's workers (and its resource tracker) without their parent
            assert all(k["children"] >= workers for k in landed), landed
        rerun_and_compare(src, dest, workers, reference, ref_keys, reused=landed[-1]["records"])
        t0 = time.monotonic()  # the orphans must not linger: they see their parent gone and exit
        while (alive := [k for k in orphans if _alive(k)]) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        print(f"{len(orphans)} orphaned processes, still running after the rerun: {len(alive)}")
        assert not alive, f"processes {alive} of the killed commands are still running"
    finally:
        for k in orphans:
            if _alive(k):
                os.kill(k, signal.SIGKILL)


def rerun_and_compare(src: Path, dest: Path, workers: int, reference: dict, ref_keys: list[str],
                      reused: int) -> None:
    """Rerun to completion: the same files as an uninterrupted run, every sample once, nothing left over."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "lossyload.commands.shard", str(src), str(dest), "--maxcount",
                           str(MAXCOUNT), "--workers", str(workers), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({reused} reused from an interrupted run)" in done.stdout, done.stdout
    got = dataset_files(dest)
    assert sorted(got) == sorted(reference) and len(reference) == N_SHARDS + 1  # shards + index.json
    for name in reference:
        assert got[name] == reference[name], name
    keys = sample_keys(dest)
    assert keys == ref_keys and len(set(keys)) == len(keys) == 999  # nothing lost, nothing twice
    assert leftovers(dest) == []
    index = Index.from_json(got["index.json"])
    assert sorted(s.url for s in index.shards) == sorted(n for n in got if n.startswith("shard-"))
    assert list(index.skipped) == [str(src / "a" / "img_010.jpg")]


# ------------------------------------------------------------------------------------------- disk full
@pytest.fixture(scope="module")
def small_src(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """14 images: three shards of MAXCOUNT; and the files of a clean run."""
    root = tmp_path_factory.mktemp("small")
    src = make_image_folder(root / "src", {"cat": 8, "dog": 6})
    shard(src, root / "ref")
    return src, dataset_files(root / "ref")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("full", ["shard-000001.tar.partial", "index.json.partial"])
def test_disk_full_is_a_clear_error_and_a_rerun_completes(small_src, tmp_path: Path, capsys, full: str) -> None:
    """The temporary file the job writes is a link to /dev/full: every write to it fails with ENOSPC."""
    src, reference = small_src
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / full).symlink_to("/dev/full")
    argv = [str(src), str(dest), "--maxcount", str(MAXCOUNT), "--no-progress"]
    assert shard_main(argv) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and full.removesuffix(".partial") in err and "Traceback" not in err
    assert err.startswith("lossyload-shard: error: ") and err.count("\n") == 1, err
    assert not (dest / "index.json").exists()
    _check_records(dest)
    records = sorted(p.name for p in (dest / "_progress").glob("0*.json"))
    if full.startswith("shard"):  # shard 0 and its record are kept; shard 1 is neither listed nor left half-written
        assert records == ["000000.json"]
        assert sorted(p.name for p in dest.iterdir()) == ["_progress", "shard-000000.tar"]
    else:  # every shard is complete and recorded; the index is all that is missing (no partial one left)
        assert records == ["000000.json", "000001.json", "000002.json"]
        assert sorted(p.name for p in dest.iterdir()) == ["_progress"] + [f"shard-00000{i}.tar" for i in range(3)]
    assert shard_main(argv) == 0
    assert "reused from an interrupted run" in capsys.readouterr().out
    assert dataset_files(dest) == reference


# ------------------------------------------------------------------------------------------- access denied
def test_access_denied_at_the_destination(s3_server, bucket_name: str, small_src, monkeypatch, capsys) -> None:
    import moto.settings

    src, _ = small_src
    bucket = s3_server.bucket(bucket_name)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from now on, credentials are checked
    options = {**s3_server.storage_options, "key": "wrong"}
    with pytest.raises(LossyloadError, match=f"^{bucket}/ds: access denied"):
        run_job(ShardJob(src=str(src), dest=f"{bucket}/ds", storage_options=options, progress=False))
    argv = [str(src), f"{bucket}/ds", "--no-progress"]
    argv += [f"--storage-option={k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in options.items()]
    assert shard_main(argv) == 2
    err = capsys.readouterr().err
    assert f"lossyload-shard: error: {bucket}/ds: access denied" in err and "Traceback" not in err, err
    monkeypatch.undo()
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.invalidate_cache()
    assert fs.find(bucket_name) == []  # nothing written, nothing listed


def test_destination_under_a_regular_file(small_src, tmp_path: Path, capsys) -> None:
    src, _ = small_src
    (tmp_path / "file").write_text("not a folder")
    assert shard_main([str(src), str(tmp_path / "file" / "ds"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'file' / 'ds'}: cannot be written" in err and "Not a directory" in err, err
    assert (tmp_path / "file").read_text() == "not a folder"


# ------------------------------------------------------------------------------------------- hostile tars
class _Payload:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_hostile_tar_source(tmp_path: Path) -> None:
    marker, proof = tmp_path / "unpickled", tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()  # the payload is live: unpickling it would leave the marker
    payload = pickle.dumps(_Payload(marker))
    jpg = [jpeg_bytes(synthetic_rgb(24, 32, seed=i)) for i in range(7)]
    tar = make_wds_tar(tmp_path / "in" / "data.tar", [
        ("s0", {"jpg": jpg[0], "cls": b"0"}),
        ("x", {"pickle": payload}),
        ("s1", {"jpg": jpg[1], "cls": b"1", "pth": payload}),  # a pickle beside the image: ignored
        ("y", {"pth": payload, "cls": b"1"}),
        ("z", {"pyd": payload}),
        ("../evil", {"jpg": jpg[2], "cls": b"0"}),
        ("/abs/evil", {"jpg": jpg[3], "cls": b"0"}),
        ("__/evil", {"jpg": jpg[4], "cls": b"0"}),  # what ../evil would have become as a key
        ("a b", {"jpg": jpg[5], "cls": b"1"}),
        ("a_b", {"jpg": jpg[6], "cls": b"1"}),  # the same key once made safe: kept apart
    ])
    with tarfile.open(tar) as tf:
        assert "../evil.jpg" in tf.getnames() and "/abs/evil.jpg" in tf.getnames()
    dest = tmp_path / "out"
    summary = run_job(ShardJob(src=str(tar), dest=str(dest), progress=False))
    assert not marker.exists()  # nothing was unpickled
    reasons = {name.split(":", 1)[1]: reason for name, reason in summary.skipped.items()}
    assert set(reasons) == {"x", "y", "z", "../evil", "/abs/evil"}, summary.skipped
    assert reasons["x"] == "no image or audio member (members: ['pickle'])"
    assert reasons["y"] == "no image or audio member (members: ['cls', 'pth'])"
    assert reasons["z"].startswith("no image or audio member (members: ['pyd'])")
    unsafe = "unsafe member name (an absolute path or one with '..'): refused"
    assert reasons["../evil"] == reasons["/abs/evil"] == unsafe
    assert summary.samples == 5
    with tarfile.open(dest / "shard-000000.tar") as tf:
        names = tf.getnames()
    assert names == [f"{k}.{e}" for k in ("s0", "s1", "__/evil", "a_b", "a_b_") for e in ("jpg", "cls")]
    index = Index.from_json((dest / "index.json").read_text())
    assert set(index.skipped) == set(summary.skipped)
    # nothing outside DEST: the tree holds the source, the dataset and the proof marker only
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "in/data.tar", "out/index.json", "out/shard-000000.tar", "proof"]
    assert not Path("/abs/evil.jpg").exists()


def test_a_corrupt_source_tar_is_a_clear_error_naming_it(tmp_path: Path, capsys) -> None:
    jpg = jpeg_bytes(synthetic_rgb(24, 32))
    tar = make_wds_tar(tmp_path / "in" / "data.tar", [(f"s{i}", {"jpg": jpg, "cls": b"0"}) for i in range(3)])
    raw = bytearray(tar.read_bytes())
    raw[148:156] = b"0000000\0"  # the first header's checksum field
    tar.write_bytes(bytes(raw))
    assert shard_main([str(tar), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{tar}: corrupt tar header (bad checksum)" in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "index.json").exists()


def test_an_unreadable_source_tar_is_a_clear_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "src-{000..001}.tar"
    assert shard_main([str(missing), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(tmp_path))}/src-00[01]\.tar: source tar cannot be read", err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "index.json").exists()
