"""Multi-node training, for real: two ``torchrun`` processes (gloo, CPU) stream shards from the local S3
server. Ranks see disjoint samples covering the epoch, the same number of batches each, a deterministic
order for a given (seed, epoch) and a new order each epoch; a stop and resume under torchrun continues with
exactly the remaining batches."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
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


def torchrun(out: Path, url: str, options: dict, *extra: str, nproc: int = 2) -> list[dict]:
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), str(SCRIPT), url, str(out), "--storage-options",
           json.dumps(options), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(nproc)]


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


# ------------------------------------------------------------------------------------------- elastic, mixtures
N_LOCAL, N_S3 = 160, 96
MIX_BATCH = 32


@pytest.fixture(scope="module")
def mix_spec(s3_server, tmp_path_factory) -> dict:
    """A local shard set (160 samples) and one in the S3 server (96), drawn 3 : 1 in epochs of 256 samples:
    the local one repeats 32 samples, the S3 one is subsampled (64 of 96)."""
    local = str(tmp_path_factory.mktemp("mix-local") / "ds")
    run_job(ShardJob(src=str(make_image_folder(tmp_path_factory.mktemp("mix-local-src"), N_LOCAL)), dest=local,
                     maxcount=16, progress=False))
    remote = s3_server.bucket("torchrun-mix") + "/ds"
    run_job(ShardJob(src=str(make_image_folder(tmp_path_factory.mktemp("mix-s3-src"), N_S3)), dest=remote,
                     maxcount=16, progress=False, storage_options=s3_server.storage_options))
    return {"sources": [{"url": local, "name": "local"},
                        {"url": remote, "name": "s3", "storage_options": s3_server.storage_options}],
            "weights": [3, 1], "epoch_samples": 256}


def mix_keys(spec: dict, world_size: int, batch: int = MIX_BATCH, epoch: int = 0,
             workers: int = 0) -> list[list[str]]:
    """Each rank's keys in an uninterrupted ``epoch``, in this process (the plan the torchrun ranks follow;
    ``workers`` thread workers read what process workers would)."""
    from lossyload.loader import plan
    from lossyload.loader.dataset import LossyDataset
    from lossyload.loader.loader import LossyLoader
    from lossyload.loader.mix import Source

    out = []
    for rank in range(world_size):
        ds = LossyDataset([Source(s["url"], name=s["name"], storage_options=s.get("storage_options"))
                           for s in spec["sources"]], weights=spec["weights"], epoch_samples=spec["epoch_samples"],
                          batch_size=batch, seed=7, shuffle_buffer=8, options={"crop": 16},
                          world=plan.World(rank=rank, world_size=world_size))
        ld = LossyLoader(ds, return_keys=True, num_workers=workers, worker_type="thread")
        ld.set_epoch(epoch)
        out.append([k for _, _, ks in ld for k in ks])
    return out


def check_against_plan(planned: list[str], head: list[str], tail: list[str], padding: int) -> None:
    """The delivered key multiset is the plan's plus exactly ``padding`` repeats: nothing planned is lost,
    nothing delivered twice beyond the padding equal batches need."""
    got, want = Counter(head + tail), Counter(planned)
    assert not want - got, f"planned deliveries missing: {sorted((want - got).elements())[:10]}"
    assert sum((got - want).values()) == padding, f"repeats beyond the plan: {sorted((got - want).elements())}"


@pytest.fixture(scope="module")
def mix_head(mix_spec, tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 ranks x 2 workers x batch 32, stopped after 2 batches of epoch 0 (half the epoch)."""
    out = tmp_path_factory.mktemp("mix-head")
    ranks = torchrun(out, "-", {}, "--mix", json.dumps(mix_spec), "--workers", "2", "--batch-size",
                     str(MIX_BATCH), "--stop-after", "2")
    return out, ranks


@pytest.mark.parametrize("nproc,batch,padding", [(3, 48, 3 * 48 - 128), (1, 32, 0)], ids=["3x48", "1x32"])
def test_elastic_resume_of_a_mixture_under_torchrun(mix_spec, mix_head, tmp_path: Path, nproc, batch, padding):
    """The state of rank 0 (world 2 x 2 workers x batch 32, S3 + local mixture) finishes the epoch in world 3 x
    1 worker x batch 48 (and world 1 x batch 32): every undelivered sample once, plus the padding of equal
    batches (3 ranks x 48 for 128 pending samples: 16); the next epoch is the new world's fresh epoch."""
    out, head = mix_head
    plan2 = mix_keys(mix_spec, 2, workers=2)
    for r in range(2):  # the torchrun head followed the plan
        assert flat(head[r]["epochs"][0]) == plan2[r][: 2 * MIX_BATCH]
    tail = torchrun(tmp_path, "-", {}, "--mix", json.dumps(mix_spec), "--batch-size", str(batch), "--workers",
                    "1", "--resume-from", str(out / "state-0.json"), "--epochs", "2", nproc=nproc)
    heads = [k for r in head for k in flat(r["epochs"][0])]
    tails = [k for r in tail for k in flat(r["epochs"][0])]
    check_against_plan([k for r in plan2 for k in r], heads, tails, padding)
    assert {r["all_counts"][0][0] for r in tail} == {len(tail[0]["epochs"][0])}  # equal batches on every rank
    assert {len(b) for r in tail for b in r["epochs"][0]} == {batch}
    share = Counter(k.split(":")[0] for k in heads + tails)
    assert abs(share["s3"] / sum(share.values()) - 0.25) <= 0.03
    assert [flat(r["epochs"][1]) for r in tail] == mix_keys(mix_spec, nproc, batch, epoch=1)


def test_elastic_resume_of_one_shard_set_under_torchrun(s3_dataset, tmp_path: Path) -> None:
    """One S3 shard set: 2 ranks stopped after 2 of 6 batches, finished by 3 ranks from rank 1's state."""
    url, options = s3_dataset
    full = torchrun(tmp_path / "full", url, options, "--epochs", "1")
    head = torchrun(tmp_path / "head", url, options, "--stop-after", "2")
    tail = torchrun(tmp_path / "tail", url, options, "--resume-from", str(tmp_path / "head" / "state-1.json"),
                    "--epochs", "1", nproc=3)
    heads = [k for r in head for k in flat(r["epochs"][0])]
    tails = [k for r in tail for k in flat(r["epochs"][0])]
    # 32 pending over 3 ranks: 11 each, 3 batches of 4 (drop_last pads the last): 36 delivered, 4 padding
    check_against_plan([k for r in full for k in flat(r["epochs"][0])], heads, tails, 36 - 32)
