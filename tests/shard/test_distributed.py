"""Distributed sharding: ranks encode contiguous shares into DEST/part-R-of-N, the last one to finish writes the
merged index; the merged dataset holds the same samples, in the same order, as a single-process run. In-process
ranks (class folders and tar sources), reruns, refusals, the ``--merge`` CLI, and real ``torchrun`` runs to a
local folder and to a moto S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lossyload.errors import LossyloadError
from lossyload.fs import read_index
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader
from lossyload.loader.stream import ErrorPolicy, read_range
from lossyload.shard import ShardJob, run_job
from lossyload.commands.shard import main as shard_main
from lossyload.shard.distributed import merge_parts, missing_parts, part_name

from ..conftest import audio_bytes, jpeg_bytes, make_image_folder, make_wds_tar, synthetic_rgb, write

pytestmark = pytest.mark.usefixtures("one_thread")

MAXCOUNT = 4


def shard(src, dest, rank: int = 0, world: int = 1, **kw):
    return run_job(ShardJob(src=str(src), dest=str(dest), progress=False, rank=rank, world_size=world,
                            **{"maxcount": MAXCOUNT, **kw}))


def samples(url, storage_options=None) -> list[tuple[str, int, bytes]]:
    """(key, label, payload bytes) of every sample of the dataset at ``url``, in index order."""
    root, index = read_index(str(url), storage_options)
    policy = ErrorPolicy("raise")
    return [(s.key, s.label, s.payload) for info in index.shards
            for s in read_range(root, info, 0, info.samples, index.member, policy, storage_options)]


def index_json(dest: Path) -> dict:
    return json.loads((dest / "index.json").read_text())


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes x 7 JPEGs and one non-image file (skipped by the encoder) in class b."""
    src = make_image_folder(tmp_path_factory.mktemp("dist") / "src", {"a": 7, "b": 7, "c": 7}, size=(32, 40))
    (src / "b" / "notes.txt").write_text("not an image")
    return src


@pytest.fixture(scope="module")
def reference(folder: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("dist") / "ref"
    summary = shard(folder, dest)
    assert summary.samples == 21 and len(summary.skipped) == 1
    return dest


# ------------------------------------------------------------------------------------------- class folders
@pytest.mark.parametrize("world, order", [(2, [0, 1]), (3, [2, 0, 1])])
def test_ranks_merge_into_the_single_process_dataset(folder: Path, reference: Path, tmp_path: Path,
                                                     world: int, order: list[int]) -> None:
    dest = tmp_path / "out"
    for i, rank in enumerate(order):
        summary = shard(folder, dest, rank, world)
        part = dest / part_name(rank, world)
        assert summary.dest.endswith(str(part)) and (part / "index.json").exists()
        _, part_index = read_index(str(part))  # a complete dataset of its own
        assert part_index.samples == summary.samples > 0
        assert samples(part)  # readable
        if i < len(order) - 1:
            assert not (dest / "index.json").exists()
            assert missing_parts(str(dest), world) == sorted(order[i + 1:])
            assert merge_parts(str(dest), world) is None and not (dest / "index.json").exists()
    assert missing_parts(str(dest), world) == []
    _, merged = read_index(str(dest))
    _, ref = read_index(str(reference))
    parts = [read_index(str(dest / part_name(r, world)))[1] for r in range(world)]
    assert [s.url for s in merged.shards] == [f"{part_name(r, world)}/{s.url}" for r, p in enumerate(parts)
                                              for s in p.shards]
    assert [s.samples for s in merged.shards] == [s.samples for p in parts for s in p.shards]
    assert all(s.samples <= MAXCOUNT for s in merged.shards)
    assert merged.samples == 21 and merged.labels == ref.labels == ["a", "b", "c"]
    assert (merged.codec, merged.config, merged.member) == (ref.codec, ref.config, ref.member)
    # the non-image file is in exactly one part's share, and counted once
    assert merged.skipped == ref.skipped and list(ref.skipped) == [str(folder / "b" / "notes.txt")]
    assert index_json(dest)["totals"]["skipped"] == 1 and index_json(dest)["totals"]["samples"] == 21
    assert sum(len(p.skipped) for p in parts) == 1
    # same samples, same order, same payload bytes as one process
    assert samples(dest) == samples(reference)
    # and through the loader: keys and labels in order
    loader = LossyLoader(LossyDataset(str(dest), batch_size=5, shuffle=False, train=False), return_keys=True)
    got = [(key, int(label)) for _, y, keys in loader for key, label in zip(keys, y, strict=True)]
    assert got == [(k, label) for k, label, _ in samples(reference)]


def test_rerun_is_a_no_op_and_merge_is_deterministic(folder: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for rank in (0, 1):
        shard(folder, one, rank, 2)
    for rank in (1, 0):  # the other finishing order writes the same bytes
        shard(folder, two, rank, 2)
    merged = (one / "index.json").read_bytes()
    assert (two / "index.json").read_bytes() == merged
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    stamp = {f: (one / f).stat().st_mtime_ns for f in files if f != Path("index.json")}
    again = shard(folder, one, 0, 2)
    assert again.already_complete and again.samples == read_index(str(one / part_name(0, 2)))[1].samples
    assert (one / "index.json").read_bytes() == merged
    assert {f: (one / f).stat().st_mtime_ns for f in stamp} == stamp  # no shard rewritten
    assert merge_parts(str(one), 2).to_json().encode() == merged
    assert (one / "index.json").read_bytes() == merged


def test_missing_part_and_other_codec_settings_are_refused(folder: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "out"
    shard(folder, dest, 1, 3)
    with pytest.raises(LossyloadError, match=r"ranks \[0, 2\] of 3"):
        merge_parts(str(dest), 3, require=True)
    assert shard_main(["--merge", str(dest), "--world-size", "3"]) == 2
    assert "ranks [0, 2] of 3" in capsys.readouterr().err
    assert not (dest / "index.json").exists()
    shard(folder, dest, 0, 3)
    shard(folder, dest, 2, 3, config={"quality": 80})  # the last rank finds a part of another run: no merge
    assert (dest / part_name(2, 3) / "index.json").exists() and not (dest / "index.json").exists()
    with pytest.raises(LossyloadError, match=f"{part_name(2, 3)}: made by another run .*differs in config"):
        merge_parts(str(dest), 3, require=True)
    assert shard_main(["--merge", str(dest), "--world-size", "3"]) == 2
    assert "made by another run" in capsys.readouterr().err
    assert not (dest / "index.json").exists()


def test_a_rank_rerun_with_overwrite_waits_for_the_stale_parts(folder: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(folder, tmp_path / "src"))  # changed below
    dest = tmp_path / "out"
    shard(folder, dest, 0, 2)
    shard(folder, dest, 1, 2)
    first = (dest / "index.json").read_bytes()
    (folder / "a" / "extra.jpg").write_bytes((folder / "a" / sorted(p.name for p in (folder / "a").iterdir())[0]).read_bytes())
    shard(folder, dest, 0, 2, overwrite=True)  # a new source content: part 1 is stale now
    assert not (dest / "index.json").exists(), "a stale part was merged with a fresh one"
    with pytest.raises(LossyloadError, match=r"differs in source"):
        merge_parts(str(dest), 2, require=True)
    shard(folder, dest, 1, 2, overwrite=True)
    merged = read_index(str(dest))[1]
    assert (dest / "index.json").read_bytes() != first and merged.samples == read_index(str(dest / part_name(0, 2)))[1].samples + read_index(str(dest / part_name(1, 2)))[1].samples


def test_cli_merge_and_environment_defaults(folder: Path, reference: Path, tmp_path: Path, capsys,
                                            monkeypatch) -> None:
    dest = tmp_path / "out"
    assert shard_main([str(folder), str(dest), "--rank", "0", "--world-size", "2", "--maxcount", "4",
                       "--no-progress"]) == 0
    monkeypatch.setenv("RANK", "1")  # what torchrun exports
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_main([str(folder), str(dest), "--maxcount", "4", "--no-progress"]) == 0
    assert (dest / part_name(1, 2) / "index.json").exists()
    merged = (dest / "index.json").read_bytes()
    (dest / "index.json").unlink()
    capsys.readouterr()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert shard_main(["--merge", str(dest), "--world-size", "2"]) == 0
    n_shards = len(read_index(str(dest))[1].shards)
    assert f"merged 21 samples in {n_shards} shards from 2 parts" in capsys.readouterr().out
    assert (dest / "index.json").read_bytes() == merged
    assert samples(dest) == samples(reference)


def test_cli_without_src_dest_or_merge_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        shard_main(["--world-size", "2"])
    assert info.value.code == 2
    assert "SRC and DEST are required" in capsys.readouterr().err


def test_a_fitted_codec_gets_the_same_codebook_in_every_part(tmp_path: Path) -> None:
    """Each rank fits on the whole source (not its share), so the parts agree and merge into the single run."""
    t = np.arange(8000) / 16000
    for c, (cls, freq) in enumerate((("hi", 2000), ("lo", 200))):
        for i in range(4):
            wave = 0.3 * np.sin(2 * np.pi * (freq + 50 * i) * t)
            wave += 0.01 * np.random.default_rng(10 * c + i).standard_normal(t.shape)
            write(tmp_path / "src" / cls / f"c{i}.wav", audio_bytes(wave))
    job = dict(codec="vq", config={"fit_samples": 4, "codebook_size": 4}, maxcount=3)  # several shards per part
    shard(tmp_path / "src", tmp_path / "ref", **job)
    for rank in (1, 0):
        shard(tmp_path / "src", tmp_path / "out", rank, 2, **job)
    _, ref = read_index(str(tmp_path / "ref"))
    assert ref.config["codebook"] is not None
    for r in (0, 1):
        assert read_index(str(tmp_path / "out" / part_name(r, 2)))[1].config == ref.config
    assert read_index(str(tmp_path / "out"))[1].config == ref.config
    assert samples(tmp_path / "out") == samples(tmp_path / "ref") and len(samples(tmp_path / "ref")) == 8


# ------------------------------------------------------------------------------------------- tar sources
def test_tar_source_is_split_by_whole_tars(tmp_path: Path) -> None:
    img = [jpeg_bytes(synthetic_rgb(24, 32, seed=i)) for i in range(9)]
    tars = [
        [("t0/000", {"jpg": img[0], "cls": b"0"}), ("t0/001", {"jpg": img[1], "cls": b"0"}),
         ("t0/002", {"jpg": img[2], "cls": b"0"})],
        [("t1/003", {"jpg": img[3], "cls": b"2"}), ("t1/004", {"cls": b"1"}),  # no image: skipped
         ("t1/005", {"jpg": img[5], "cls": b"1"})],
        [("t2/006", {"jpg": img[6], "cls": b"1"}), ("t2/007", {"jpg": img[7], "cls": b"0"}),
         ("t2/008", {"jpg": img[8], "cls": b"2"})],
    ]
    for i, members in enumerate(tars):
        make_wds_tar(tmp_path / "in" / f"data-{i:03d}.tar", members)
    src = str(tmp_path / "in" / "data-{000..002}.tar")
    shard(src, tmp_path / "ref", shuffle=False)  # tar order: a shuffled tar source's order depends on the ranks
    for rank in (0, 1):
        shard(src, tmp_path / "out", rank, 2, shuffle=False)
    part_keys = [[k for k, _, _ in samples(tmp_path / "out" / part_name(r, 2))] for r in (0, 1)]
    assert part_keys == [["t0/000", "t0/001", "t0/002"], ["t1/003", "t1/005", "t2/006", "t2/007", "t2/008"]]
    _, merged = read_index(str(tmp_path / "out"))
    _, ref = read_index(str(tmp_path / "ref"))
    assert merged.labels == ref.labels == ["0", "1", "2"]  # part 0 alone saw only class 0
    assert merged.skipped == ref.skipped and len(merged.skipped) == 1
    assert samples(tmp_path / "out") == samples(tmp_path / "ref")
    assert [(k, label) for k, label, _ in samples(tmp_path / "out")] == [
        (key, int(m["cls"])) for t in tars for key, m in t if "jpg" in m]


# ------------------------------------------------------------------------------------------- torchrun
def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    from tests.servers import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "lossyload.commands.shard", *args, "--codec", "jpeg-dct", "--maxcount", str(MAXCOUNT), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_torchrun_to_a_local_folder(folder: Path, reference: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    torchrun(tmp_path, str(folder), str(dest))
    assert missing_parts(str(dest), 2) == []
    assert (dest / "index.json").exists()
    assert samples(dest) == samples(reference)
    assert read_index(str(dest))[1].skipped == read_index(str(reference))[1].skipped


def test_torchrun_to_s3(folder: Path, reference: Path, tmp_path: Path, s3_server, bucket_name: str) -> None:
    url = f"{s3_server.bucket(bucket_name)}/ds"
    so = s3_server.storage_options
    torchrun(tmp_path, str(folder), url, "--storage-option", f"endpoint_url={s3_server.endpoint}",
             "--storage-option", "key=testing", "--storage-option", "secret=testing",
             "--storage-option", 'client_kwargs={"region_name": "us-east-1"}')
    _, merged = read_index(url, so)
    assert [s.url.split("/")[0] for s in merged.shards][::len(merged.shards) - 1] == [part_name(0, 2), part_name(1, 2)]
    assert missing_parts(url, 2, so) == []
    assert samples(url, so) == samples(reference)
    ds = LossyDataset(url, batch_size=None, shuffle=False, train=False, storage_options=so)
    assert [int(y) for _, y in ds] == [label for _, label, _ in samples(reference)]


def test_a_part_without_its_run_record_is_not_merged(folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    shard(folder, dest, 0, 2)
    (dest / part_name(0, 2) / "part.json").unlink()  # e.g. a single-process dataset copied into place
    shard(folder, dest, 1, 2)
    assert not (dest / "index.json").exists()
    with pytest.raises(LossyloadError, match=f"{part_name(0, 2)}: has an index but no part.json"):
        merge_parts(str(dest), 2, require=True)
