"""The shard job: deterministic output, maxcount/maxsize rolling, plain-webdataset readability, resume after a
SIGKILL at any point (real CLI in a subprocess, and exact kill points in a forked child), refusals, and
WebDataset tars as the source."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import webdataset

from lossyload.errors import LossyloadError
from lossyload.index import Index
from lossyload.shard import ShardJob, job as job_module, run_job
from lossyload.commands.shard import _size, main as shard_main
from lossyload.shard.writer import ShardWriter

from ..conftest import (dataset_files, jpeg_bytes, make_image_folder, make_wds_tar, png_bytes, read_tar,
                        synthetic_rgb)


def shard(src: Path, dest: Path, **kw) -> job_module.ShardSummary:
    return run_job(ShardJob(src=str(src), dest=str(dest), progress=False, **kw))


def index_of(dest: Path) -> Index:
    return Index.from_json((dest / "index.json").read_text())


def source_files(src: Path) -> list[tuple[str, int, bytes]]:
    """(key, label, bytes) of an ImageFolder in the job's order."""
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    return [(f"{c}/{p.stem}", i, p.read_bytes()) for i, c in enumerate(classes) for p in sorted((src / c).iterdir())]


# ------------------------------------------------------------------------------------------- determinism
def test_two_runs_are_byte_identical(small_folder: Path, tmp_path: Path) -> None:
    for dest in ("a", "b"):
        shard(small_folder, tmp_path / dest, maxcount=5)
    a, b = dataset_files(tmp_path / "a"), dataset_files(tmp_path / "b")
    assert a == b
    assert sorted(a) == ["index.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]


def test_coefficient_storage_is_deterministic(small_folder: Path, tmp_path: Path) -> None:
    for dest in ("a", "b"):
        shard(small_folder, tmp_path / dest, config={"storage": "coefficients", "keep": [16, 8]}, shuffle=False)
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() == (tmp_path / "b" / "shard-000000.tar").read_bytes()
    names = [n for n, _ in read_tar(tmp_path / "a" / "shard-000000.tar")]
    assert names[:2] == ["cat/img_000.dct.zst", "cat/img_000.cls"]
    assert index_of(tmp_path / "a").member == "dct.zst"


def test_headers_have_fixed_mtime_and_owner(small_folder: Path, tmp_path: Path) -> None:
    shard(small_folder, tmp_path / "out")
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tf:
        members = tf.getmembers()
    assert len(members) == 24
    assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0o444, 0, 0, "", "")}


# ------------------------------------------------------------------------------------------- rolling
def test_maxcount_rolls_shards_in_source_order(small_folder: Path, tmp_path: Path) -> None:
    summary = shard(small_folder, tmp_path / "out", maxcount=5, shuffle=False)  # folder order
    index = index_of(tmp_path / "out")
    assert [s.samples for s in index.shards] == [5, 5, 2]
    assert [s.url for s in index.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert summary.samples == 12 and summary.shards == 3
    src = source_files(small_folder)
    members = [m for s in index.shards for m in read_tar(tmp_path / "out" / s.url)]
    expected = [((f"{key}.jpg", data), (f"{key}.cls", str(label).encode())) for key, label, data in src]
    assert members == [m for pair in expected for m in pair]
    for s in index.shards:
        data = (tmp_path / "out" / s.url).read_bytes()
        assert s.bytes == len(data)
        assert s.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("maxsize", ["16k", "24k", "30000"])
def test_maxsize_rolls_before_a_shard_would_exceed_it(small_folder: Path, tmp_path: Path, maxsize: str) -> None:
    limit = _size(maxsize)
    assert shard_main([str(small_folder), str(tmp_path / "out"), "--maxsize", maxsize, "--no-progress"]) == 0
    index = index_of(tmp_path / "out")
    assert sum(s.samples for s in index.shards) == 12 and len(index.shards) > 1
    sizes = [(tmp_path / "out" / s.url).stat().st_size for s in index.shards]
    assert all(size <= limit for size in sizes), sizes
    # and greedy: the first sample of the next shard would not have fitted
    shards = [read_tar(tmp_path / "out" / s.url) for s in index.shards]
    for this, nxt in zip(shards, shards[1:]):
        w = ShardWriter(str(tmp_path / "probe.tar"))
        for i in range(0, len(this), 2):
            w.add(this[i][0].rsplit(".", 1)[0], {"jpg": this[i][1], "cls": this[i + 1][1]})
        assert w.size_if_added(nxt[0][0].rsplit(".", 1)[0], {"jpg": nxt[0][1], "cls": nxt[1][1]}) > limit
        w.abort()


def test_a_sample_larger_than_maxsize_gets_its_own_shard(tmp_path: Path) -> None:
    src = make_image_folder(tmp_path / "src", {"a": 3}, size=(32, 32))
    big = jpeg_bytes(synthetic_rgb(400, 400, seed=9), quality=100)
    (src / "a" / "img_001.jpg").write_bytes(big)
    shard(src, tmp_path / "out", maxsize=len(big) // 2)
    index = index_of(tmp_path / "out")
    assert [s.samples for s in index.shards] == [1, 1, 1]
    assert read_tar(tmp_path / "out" / "shard-000001.tar")[0] == ("a/img_001.jpg", big)


def test_size_parser() -> None:
    assert _size("1000") == 1000 and _size("40k") == 40 << 10 and _size("512M") == 512 << 20
    assert _size("1.5g") == int(1.5 * (1 << 30)) and _size("64MB") == 64 << 20


# ------------------------------------------------------------------------------------------- webdataset
def test_plain_webdataset_reads_the_shards(small_folder: Path, tmp_path: Path) -> None:
    shard(small_folder, tmp_path / "out", maxcount=4, shuffle=False)
    urls = [str(tmp_path / "out" / s.url) for s in index_of(tmp_path / "out").shards]
    got = [(s["__key__"], s["jpg"], int(s["cls"])) for s in webdataset.WebDataset(urls, shardshuffle=False)]
    assert got == [(key, data, label) for key, label, data in source_files(small_folder)]


# ------------------------------------------------------------------------------------------- resume
def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run_until_killed(job: ShardJob, monkeypatch_in_child) -> None:
    """Run ``job`` in a forked child that SIGKILLs itself where ``monkeypatch_in_child`` arranges."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            monkeypatch_in_child()
            run_job(job)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child was not killed: {status}"


def _kill_on_nth_add(n: int):
    def arrange():
        calls = [0]
        original = ShardWriter.add

        def add(self, key, members):
            calls[0] += 1
            if calls[0] == n:
                _kill_self()
            original(self, key, members)

        ShardWriter.add = add

    return arrange


def _kill_around_write(name: str, before: bool):
    """Kill just before or just after ``_write_text`` writes the file whose name ends with ``name``."""

    def arrange():
        original = job_module._write_text

        def write_text(fs, path, text):
            if path.endswith(name) and before:
                _kill_self()
            original(fs, path, text)
            if path.endswith(name):
                _kill_self()

        job_module._write_text = write_text

    return arrange


KILL_POINTS = {
    "mid-shard": (_kill_on_nth_add(13), lambda d: (d / "shard-000002.tar.partial").exists()),
    "shard-renamed-record-missing": (
        _kill_around_write("_progress/000002.json", before=True),
        lambda d: (d / "shard-000002.tar").exists() and not (d / "_progress" / "000002.json").exists(),
    ),
    "after-record": (_kill_around_write("_progress/000003.json", before=False),
                     lambda d: (d / "_progress" / "000003.json").exists()),
    "before-index": (_kill_around_write("/index.json", before=True),
                     lambda d: not (d / "index.json").exists() and (d / "shard-000004.tar").exists()),
}


@pytest.fixture(scope="module")
def resume_src(tmp_path_factory) -> Path:
    """A folder with a few bad files among the good ones, so records also carry skips and transcodes."""
    src = make_image_folder(tmp_path_factory.mktemp("resume") / "src", {"a": 14, "b": 12})
    (src / "a" / "img_004.jpg").write_bytes(b"not a jpeg")
    (src / "b" / "img_002.png").write_bytes(png_bytes(synthetic_rgb(40, 40)))
    (src / "b" / "notes.txt").write_text("x")
    return src


@pytest.fixture(scope="module")
def resume_reference(resume_src: Path, tmp_path_factory) -> dict[str, bytes]:
    dest = tmp_path_factory.mktemp("reference") / "out"
    shard(resume_src, dest, maxcount=5)
    return dataset_files(dest)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_resume_after_sigkill_at_exact_points(resume_src: Path, resume_reference: dict, tmp_path: Path,
                                              point: str) -> None:
    arrange, check_state = KILL_POINTS[point]
    job = ShardJob(src=str(resume_src), dest=str(tmp_path / "out"), maxcount=5, progress=False)
    run_until_killed(job, arrange)
    assert check_state(tmp_path / "out"), sorted(dataset_files(tmp_path / "out"))
    assert not (tmp_path / "out" / "index.json").exists()
    summary = run_job(job)
    assert summary.resumed_shards >= 1
    assert dataset_files(tmp_path / "out") == resume_reference
    assert summary.samples == 26 and set(summary.skipped) == {str(resume_src / "a" / "img_004.jpg"),
                                                             str(resume_src / "b" / "notes.txt")}
    assert sum(summary.transcoded.values()) == 1
    assert summary.bytes_in == sum(p.stat().st_size for p in resume_src.rglob("*") if p.is_file())


def test_resume_redoes_a_damaged_shard(resume_src: Path, resume_reference: dict, tmp_path: Path) -> None:
    job = ShardJob(src=str(resume_src), dest=str(tmp_path / "out"), maxcount=5, progress=False)
    run_until_killed(job, _kill_around_write("_progress/000003.json", before=False))
    damaged = tmp_path / "out" / "shard-000001.tar"
    damaged.write_bytes(damaged.read_bytes()[:-10240])  # e.g. a copy that stopped short
    summary = run_job(job)
    assert summary.resumed_shards == 1  # only shard 0 is trusted
    assert dataset_files(tmp_path / "out") == resume_reference


def _poll(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, f"{path.name} did not appear"
        time.sleep(0.001)


def test_resume_real_cli_after_sigkill(tmp_path: Path) -> None:
    """The real command, killed (with its worker processes) twice at different points, then rerun."""
    # 200 items: with --workers 2 the job encodes in batches of 64, so there is time to kill between batches
    src = make_image_folder(tmp_path / "src", {"a": 110, "b": 90}, size=(48, 64))
    (src / "a" / "img_010.jpg").write_bytes(b"corrupt")
    dest, ref = tmp_path / "out", tmp_path / "ref"
    cmd = [sys.executable, "-m", "lossyload.commands.shard", str(src), str(dest), "--maxcount", "5", "--workers", "2",
           "--no-progress"]
    repo = str(Path(__file__).resolve().parents[2])  # the checkout under test, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    done_before = [0]
    for kill_round in range(2):
        # first kill: as soon as a shard is complete; second: a dozen shards further into the resumed run
        kill_at = dest / f"shard-{1 if kill_round == 0 else done_before[-1] + 12:06d}.tar"
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _poll(kill_at, proc)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its pool workers, like a lost machine
            except ProcessLookupError:
                pass
            proc.communicate()
        assert not (dest / "index.json").exists(), "killed too late: the run had finished"
        assert proc.returncode == -signal.SIGKILL
        assert (dest / "_progress" / "job.json").exists()
        done_before.append(len(list(dest.glob("shard-*.tar"))))
    assert done_before[0] < done_before[1] < done_before[2] < 40, done_before  # two different kill points
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "reused from an interrupted run" in done.stdout
    run_job(ShardJob(src=str(src), dest=str(ref), maxcount=5, progress=False))  # uninterrupted, one process
    got, want = dataset_files(dest), dataset_files(ref)
    assert sorted(got) == sorted(want) and len(want) == 41  # 199 samples in 40 shards + index.json
    for name in want:
        assert got[name] == want[name], name


# ------------------------------------------------------------------------------------------- refusals
def test_existing_dataset_needs_overwrite(small_folder: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "out"
    shard(small_folder, dest, maxcount=5)
    before = dataset_files(dest)
    again = shard(small_folder, dest, maxcount=5)  # same codec settings: a no-op that says so
    assert again.already_complete and again.samples == index_of(dest).samples
    assert "already complete" in again.format()
    (dest / "_progress").mkdir()  # left by a run stopped between writing the index and cleaning up
    assert shard_main([str(small_folder), str(dest), "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out and not (dest / "_progress").exists()
    with pytest.raises(LossyloadError, match="already holds a dataset made with other settings.*--overwrite"):
        shard(small_folder, dest, maxcount=5, config={"quality": 80})
    assert shard_main([str(small_folder), str(dest), "--no-progress", "--quality", "80"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert dataset_files(dest) == before
    # --overwrite replaces it, leaving no shard of the old layout behind
    assert shard_main([str(small_folder), str(dest), "--no-progress", "--overwrite", "--maxcount", "100"]) == 0
    assert sorted(dataset_files(dest)) == ["index.json", "shard-000000.tar"]


def test_rerun_with_other_settings_over_an_interrupted_run_is_refused(small_folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    job = ShardJob(src=str(small_folder), dest=str(dest), maxcount=5, progress=False)
    run_until_killed(job, _kill_on_nth_add(8))
    for other in (dict(maxcount=4), dict(maxsize=1 << 20), dict(config={"quality": 80}),
                  dict(codec="rgb"), dict(src=str(tmp_path))):
        args = dict(src=str(small_folder), dest=str(dest), maxcount=5, progress=False) | other
        with pytest.raises(LossyloadError, match="interrupted run with other settings or another source content; pass --overwrite"):
            run_job(ShardJob(**args))
    # the same settings resume; other worker counts are the same settings
    run_job(ShardJob(src=str(small_folder), dest=str(dest), maxcount=5, progress=False, workers=1))
    shard(small_folder, tmp_path / "ref", maxcount=5)
    assert dataset_files(dest) == dataset_files(tmp_path / "ref")


def _drop_config_fields(record: Path, *names: str) -> None:
    """Make ``record`` (an index or a progress folder's job record) look written before the codec had ``names``."""
    d = json.loads(record.read_text())
    config = d["codec"]["config"] if record.name == "index.json" else d["config"]
    for name in names:
        del config[name]
    record.write_text(json.dumps(d, sort_keys=True))


def test_rerun_over_an_index_written_before_a_codec_field_existed(small_folder: Path, tmp_path: Path) -> None:
    """A field the codec gained since (with a default) is absent from an older index: it counts as the default,
    so the same settings are the same dataset; a setting that differs is still refused, by name."""
    dest = tmp_path / "out"
    shard(small_folder, dest, maxcount=5, config={"quality": 80})
    _drop_config_fields(dest / "index.json", "compression", "zstd_level")
    before = dataset_files(dest)
    assert shard(small_folder, dest, maxcount=5, config={"quality": 80}).already_complete
    assert shard_main([str(small_folder), str(dest), "--no-progress", "--maxcount", "5", "--quality", "80"]) == 0
    refused = rf"{re.escape(str(dest))}: already holds a dataset made with other settings \({{}}\); pass --overwrite"
    with pytest.raises(LossyloadError, match=refused.format("quality: 80 in the index, 90 in this run")):
        shard(small_folder, dest, maxcount=5)
    with pytest.raises(LossyloadError, match=refused.format("compression: 'zstd' in the index, 'lz4' in this run")):
        shard(small_folder, dest, maxcount=5, config={"quality": 80, "compression": "lz4"})
    with pytest.raises(LossyloadError, match=refused.format("codec 'jpeg-dct', not 'rgb'")):
        shard(small_folder, dest, maxcount=5, codec="rgb")
    assert dataset_files(dest) == before


def test_resume_of_a_run_recorded_before_a_codec_field_existed(small_folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    job = ShardJob(src=str(small_folder), dest=str(dest), maxcount=5, progress=False)
    run_until_killed(job, _kill_on_nth_add(8))
    _drop_config_fields(dest / "_progress" / "job.json", "zstd_level")
    with pytest.raises(LossyloadError, match="interrupted run with other settings"):
        run_job(ShardJob(src=str(small_folder), dest=str(dest), maxcount=5, progress=False, config={"zstd_level": 9}))
    summary = run_job(job)
    assert summary.resumed_shards == 1
    shard(small_folder, tmp_path / "ref", maxcount=5)
    assert dataset_files(dest) == dataset_files(tmp_path / "ref")


def test_job_arguments_are_checked() -> None:
    for bad in (dict(maxcount=0), dict(maxsize=0), dict(workers=0), dict(on_error="ignore")):
        with pytest.raises(LossyloadError):
            ShardJob(src="x", dest="y", **bad)


# ------------------------------------------------------------------------------------------- tar sources
def test_webdataset_tars_as_source(tmp_path: Path) -> None:
    imgs = {i: jpeg_bytes(synthetic_rgb(32, 48, seed=i)) for i in range(6)}
    make_wds_tar(tmp_path / "in" / "part-000.tar", [
        ("s/000", {"jpg": imgs[0], "cls": b"2"}),
        ("s/001", {"cls": b"1", "jpeg": imgs[1]}),
        ("s/002", {"cls": b"0"}),  # no image member
        ("d.v2/003", {"png": png_bytes(synthetic_rgb(24, 24)), "cls": b"1"}),  # a dot in the folder name
    ])
    make_wds_tar(tmp_path / "in" / "part-001.tar", [
        ("t/004", {"jpg": imgs[4], "cls": b" 0\n"}),
        ("t/005", {"jpg": imgs[5], "cls": b"cat"}),  # non-integer label
        ("t/006", {"jpg": b"garbage", "cls": b"1"}),
        ("t/007", {"jpg": imgs[3], "cls": b"-1"}),  # negative label
        ("t/008", {"jpg": imgs[2]}),  # no label
    ])
    brace = str(tmp_path / "in" / "part-{000..001}.tar")
    folder = str(tmp_path / "in")
    for src, dest, prefix in [(brace, "a", ""), (folder, "b", "file://")]:  # a folder of tars is listed as URLs
        summary = run_job(ShardJob(src=src, dest=str(tmp_path / dest), progress=False, shuffle=False))
        assert summary.samples == 4
        members = read_tar(tmp_path / dest / "shard-000000.tar")
        assert [n for n, _ in members] == ["s/000.jpg", "s/000.cls", "s/001.jpg", "s/001.cls", "d_v2/003.jpg",
                                           "d_v2/003.cls", "t/004.jpg", "t/004.cls"]
        assert members[0][1] == imgs[0] and members[2][1] == imgs[1] and members[6][1] == imgs[4]
        assert [m[1] for m in members[1::2]] == [b"2", b"1", b"1", b"0"]
        index = index_of(tmp_path / dest)
        assert index.labels == ["0", "1", "2"]
        assert index.shards[0].transcoded == {"d_v2/003": "png source"}
        part0, part1 = (prefix + str(tmp_path / "in" / f"part-00{i}.tar") for i in (0, 1))
        assert set(index.skipped) == {f"{part0}:s/002", f"{part1}:t/005", f"{part1}:t/006", f"{part1}:t/007",
                                      f"{part1}:t/008"}, index.skipped
        assert "cls" in index.skipped[f"{part1}:t/007"] and "cls" in index.skipped[f"{part1}:t/008"]
        assert "no image or audio member" in index.skipped[f"{part0}:s/002"]
        assert "cls" in index.skipped[f"{part1}:t/005"]
        assert "not an image" in index.skipped[f"{part1}:t/006"]
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() == (tmp_path / "b" / "shard-000000.tar").read_bytes()


def test_resume_refuses_a_changed_source(small_folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    job = ShardJob(src=str(small_folder), dest=str(dest), maxcount=5, progress=False)
    run_until_killed(job, _kill_on_nth_add(8))
    first_class = sorted(p for p in small_folder.iterdir() if p.is_dir())[0]
    victim = sorted(first_class.iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # same names, other content size
    with pytest.raises(LossyloadError, match="another source content"):
        run_job(job)


def test_resume_redoes_a_shard_whose_hash_changed(small_folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    job = ShardJob(src=str(small_folder), dest=str(dest), maxcount=5, progress=False)
    run_until_killed(job, _kill_on_nth_add(8))
    first = dest / "shard-000000.tar"
    data = bytearray(first.read_bytes())
    data[600] ^= 0xFF  # same size, other bytes
    first.write_bytes(bytes(data))
    run_job(job)
    shard(small_folder, tmp_path / "ref", maxcount=5)
    assert dataset_files(dest) == dataset_files(tmp_path / "ref")


def test_default_order_is_shuffled_and_an_interrupted_run_keeps_its_order(small_folder: Path, tmp_path: Path) -> None:
    """ShardJob writes a seeded shuffled order unless ``shuffle=False``; an interrupted run resumes only in its
    own order (the source fingerprint records it), and the default order is the same on every run."""
    def keys(dest: Path) -> list[str]:
        return [n.rsplit(".", 1)[0] for p in sorted(dest.glob("shard-*.tar")) for n, _ in read_tar(p)][::2]

    run_job(ShardJob(src=str(small_folder), dest=str(tmp_path / "kept"), maxcount=5, progress=False, shuffle=False))
    job = ShardJob(src=str(small_folder), dest=str(tmp_path / "out"), maxcount=5, progress=False)
    assert job.shuffle
    run_until_killed(job, _kill_on_nth_add(8))
    with pytest.raises(LossyloadError, match="interrupted run with other settings or another source content"):
        run_job(replace(job, shuffle=False))
    assert run_job(job).resumed_shards == 1
    run_job(ShardJob(src=str(small_folder), dest=str(tmp_path / "again"), maxcount=5, progress=False))
    kept, shuffled = keys(tmp_path / "kept"), keys(tmp_path / "out")
    assert kept[:7] == [f"cat/img_{i:03d}" for i in range(7)]  # folder order
    assert sorted(shuffled) == sorted(kept) and shuffled != kept and shuffled == keys(tmp_path / "again")
    assert {k.split("/")[0] for k in shuffled[:5]} == {"cat", "dog"}  # the first shard mixes the classes
