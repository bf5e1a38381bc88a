"""Multi-node training, for real: two ``torchrun`` processes (gloo, CPU) stream shards from the local S3
server. Ranks see disjoint samples covering the epoch, the same number of batches each, a deterministic
order for a given (seed, epoch) and a new order each epoch; a stop and resume under torchrun continues with
exactly the remaining batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lossyload.shard.job import ShardJob, run_job
from tests.loader.conftest import make_image_folder
from tests.servers import free_port

SCRIPT = Path(__file__).with_name("torchrun_script.py")
N = 48  # 2 ranks x 6 batches x 4: every sample is read exactly once per epoch


@pytest.fixture(scope="module")
def s3_dataset(s3_server, tmp_path_factory) -> tuple[str, dict]:
    src = make_image_folder(tmp_path_factory.mktemp("torchrun-src"), N)
    url = s3_server.bucket("torchrun-data") + "/ds"
    run_job(ShardJob(src=str(src), dest=url, maxcount=7, progress=False, storage_options=s3_server.storage_options,
                     shuffle=False))  # folder order: a label is its sample's position
    return url, s3_server.storage_options


def torchrun(out: Path, url: str, options: dict, *extra: str) -> list[dict]:
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(SCRIPT), url, str(out), "--storage-options", json.dumps(options),
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]


def flat(batches: list[list[str]]) -> list[str]:
    return [k for b in batches for k in b]


@pytest.fixture(scope="module")
def two_workers(s3_dataset, tmp_path_factory) -> list[dict]:
    url, options = s3_dataset
    return torchrun(tmp_path_factory.mktemp("w2"), url, options, "--workers", "2")


def check_epochs(ranks: list[dict]) -> None:
    for epoch in range(2):
        a, b = (flat(r["epochs"][epoch]) for r in ranks)
        assert not set(a) & set(b), "ranks saw the same sample"
        assert len(set(a) | set(b)) == N == len(a) + len(b), "the epoch is not covered exactly once"
    for r in ranks:
        assert [len(e) for e in r["epochs"]] == [r["len"]] * 2 == [6, 6]
        assert r["all_counts"] == [[6, 6], [6, 6]]  # every rank the same number of batches
        assert flat(r["epochs"][0]) != flat(r["epochs"][1]), "epochs 0 and 1 in the same order"


def test_ranks_split_each_epoch_exactly(s3_dataset, tmp_path: Path) -> None:
    url, options = s3_dataset
    ranks = torchrun(tmp_path / "w0", url, options)
    check_epochs(ranks)
    again = torchrun(tmp_path / "again", url, options, "--epochs", "1")
    assert [r["epochs"][0] for r in again] == [r["epochs"][0] for r in ranks], "same (seed, epoch), other order"


def test_ranks_split_with_two_workers(two_workers: list[dict], s3_dataset, tmp_path: Path) -> None:
    check_epochs(two_workers)


def test_resume_under_torchrun(two_workers: list[dict], s3_dataset, tmp_path: Path) -> None:
    url, options = s3_dataset
    head = torchrun(tmp_path, url, options, "--workers", "2", "--stop-after", "2")
    tail = torchrun(tmp_path, url, options, "--workers", "2", "--resume", "--epochs", "2")
    for r in range(2):
        assert len(head[r]["epochs"][0]) == 2
        assert head[r]["epochs"][0] + tail[r]["epochs"][0] == two_workers[r]["epochs"][0]
        assert tail[r]["epochs"][1] == two_workers[r]["epochs"][1]  # the next epoch is unaffected
