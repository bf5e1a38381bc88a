"""``make_loader`` / ``LossyLoader`` end to end on real shards through a real torch ``DataLoader``.

Labels identify samples (see conftest): label == the sample's position in the unshuffled global order.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from lossyload import LossyLoader, World, make_loader
from lossyload.errors import ShardError
from lossyload.loader import plan
from lossyload.loader.loader import dominated
from lossyload.shard.job import ShardJob, run_job

from ..conftest import make_image_folder
from .conftest import N_SAMPLES, planned_labels

BS = 4


def loader(url, *, rank=0, world_size=1, num_workers=0, **kw) -> LossyLoader:
    kw.setdefault("batch_size", BS)
    kw.setdefault("options", {"crop": 32})
    return make_loader(str(url), num_workers=num_workers, world=World(rank=rank, world_size=world_size), **kw)


def epoch(ld: LossyLoader, with_x: bool = False):
    """One pass: the label list of every batch (and the batches' tensors)."""
    out, xs = [], []
    for x, y in ld:
        assert y.dtype == torch.int64
        out.append(y.tolist())
        if with_x:
            xs.append(x)
    return (out, xs) if with_x else out


@functools.lru_cache(maxsize=None)
def _run(url: str, world_size: int, num_workers: int, drop_last: bool, seed: int = 0, epochs: int = 2):
    """{rank: (len(loader), [labels per batch] per epoch, loader.epoch after, skipped)}"""
    out = {}
    for r in range(world_size):
        ld = loader(url, rank=r, world_size=world_size, num_workers=num_workers, drop_last=drop_last, seed=seed)
        eps = [epoch(ld) for _ in range(epochs)]
        out[r] = (len(ld), eps, ld.epoch, list(ld.skipped))
    return out


MATRIX = [(w, k, d) for w in (1, 2, 3) for k in (0, 1, 2) for d in (False, True)]


@pytest.mark.parametrize("world_size,num_workers,drop_last", MATRIX)
def test_ranks_partition_each_epoch(jpeg_ds: Path, world_size, num_workers, drop_last):
    runs = _run(str(jpeg_ds), world_size, num_workers, drop_last)
    nb = plan.batches_per_rank(N_SAMPLES, world_size, BS, drop_last)
    for ep in range(2):
        everything = []
        for r in range(world_size):
            length, eps, epoch_after, skipped = runs[r]
            batches = eps[ep]
            assert length == nb and len(batches) == nb  # every rank: exactly len(loader) batches
            assert epoch_after == 2 and skipped == []
            sizes = [len(b) for b in batches]
            assert all(s == BS for s in sizes[:-1])
            if drop_last:
                assert sizes[-1] == BS
            else:
                assert 1 <= sizes[-1] <= BS
            labels = [y for b in batches for y in b]
            # exactly the samples the plan gives this rank (order aside)
            assert Counter(labels) == Counter(planned_labels(r, world_size, drop_last, BS, seed=0, ep=ep, shuffle=True))
            everything += labels
        counts = Counter(everything)
        assert set(counts) <= set(range(N_SAMPLES))
        if drop_last:
            assert max(counts.values()) == 1  # disjoint across ranks
            assert len(everything) == world_size * nb * BS
        else:
            assert set(counts) == set(range(N_SAMPLES))  # complete
            assert len(everything) == world_size * math.ceil(N_SAMPLES / world_size)
            assert max(counts.values()) <= 2
            assert sum(c - 1 for c in counts.values()) == len(everything) - N_SAMPLES
    # the epochs differ (the loader advanced the epoch by itself)
    for r in range(world_size):
        eps = runs[r][1]
        assert eps[0] != eps[1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_seed_same_batches_across_runs(jpeg_ds: Path, num_workers):
    a = loader(jpeg_ds, rank=1, world_size=2, num_workers=num_workers, seed=5)
    b = loader(jpeg_ds, rank=1, world_size=2, num_workers=num_workers, seed=5)
    seen = []
    for _ in range(2):
        (la, xa), (lb, xb) = epoch(a, True), epoch(b, True)
        assert la == lb
        assert len(xa) == len(xb) == len(a)
        for u, v in zip(xa, xb):  # the augmentations' randomness is reproduced too
            assert u.keys() == v.keys() and all(torch.equal(u[k], v[k]) for k in u)
        seen.append(la)
    assert seen[0] != seen[1]
    c = loader(jpeg_ds, rank=1, world_size=2, num_workers=num_workers, seed=6)
    assert epoch(c) != seen[0]


def test_other_seed_other_order(jpeg_ds: Path):
    a = epoch(loader(jpeg_ds, seed=0))
    b = epoch(loader(jpeg_ds, seed=1))
    assert a != b
    assert Counter(map(tuple, a)) != Counter(map(tuple, b))  # not only the batch order: the batches


def test_zero_and_one_worker_give_the_same_order(jpeg_ds: Path):
    """In-process iteration and one worker process share a plan and random stream: same batches."""
    for ws in (1, 3):
        for drop_last in (False, True):
            a = _run(str(jpeg_ds), ws, 0, drop_last)
            b = _run(str(jpeg_ds), ws, 1, drop_last)
            assert {r: v[1] for r, v in a.items()} == {r: v[1] for r, v in b.items()}


def test_two_workers_same_samples_per_rank(jpeg_ds: Path):
    """With more workers each rank still reads the same samples; only their order changes (each worker
    shuffles its own contiguous part of the rank's run, and the DataLoader alternates between workers)."""
    for ws in (1, 2, 3):
        a, b = _run(str(jpeg_ds), ws, 0, False), _run(str(jpeg_ds), ws, 2, False)
        for r in range(ws):
            for ep in range(2):
                assert Counter(y for bt in a[r][1][ep] for y in bt) == Counter(y for bt in b[r][1][ep] for y in bt)


def test_set_epoch(jpeg_ds: Path):
    auto = _run(str(jpeg_ds), 2, 0, True)[1][1]  # rank 1, epochs 0 and 1
    ld = loader(jpeg_ds, rank=1, world_size=2, drop_last=True)
    ld.set_epoch(1)
    assert epoch(ld) == auto[1]
    assert ld.epoch == 2
    ld.set_epoch(0)
    assert epoch(ld) == auto[0]
    ld.set_epoch(7)
    e7 = epoch(ld)
    assert e7 not in auto
    assert Counter(y for b in e7 for y in b) == Counter(
        planned_labels(1, 2, True, BS, seed=0, ep=7, shuffle=True)
    )


def test_partial_pass_does_not_advance_the_epoch(jpeg_ds: Path):
    ld = loader(jpeg_ds)
    first = next(iter(ld))[1].tolist()
    assert ld.epoch == 0
    assert epoch(ld)[0] == first


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_no_shuffle_is_index_order(jpeg_ds: Path, world_size, num_workers):
    for r in range(world_size):
        ld = loader(jpeg_ds, rank=r, world_size=world_size, num_workers=num_workers, shuffle=False, drop_last=False)
        want = planned_labels(r, world_size, False, BS, seed=0, ep=0, shuffle=False)
        n = math.ceil(N_SAMPLES / world_size)
        assert want == [(r * n + j) % N_SAMPLES for j in range(n)]
        for _ in range(2):  # epochs do not reorder without shuffle
            assert epoch(ld) == [want[i : i + BS] for i in range(0, len(want), BS)]


def test_no_shuffle_two_workers_interleave_their_ranges(jpeg_ds: Path):
    """Workers read contiguous halves of the rank's batches; the DataLoader alternates between them, so
    with several workers ``shuffle=False`` is not index order but a fixed interleaving of it."""
    want = planned_labels(0, 1, False, BS, seed=0, ep=0, shuffle=False)
    batches = [want[i : i + BS] for i in range(0, len(want), BS)]
    half = len(batches) // 2
    w0, w1 = batches[:half], batches[half:]
    inter = [b for pair in zip(w0, w1) for b in pair] + w1[len(w0):]
    ld = loader(jpeg_ds, num_workers=2, shuffle=False, drop_last=False)
    assert epoch(ld) == inter


def test_eval_mode_defaults(jpeg_ds: Path):
    """train=False: no shuffle, no drop_last, centre crop: fully deterministic, index order."""
    ld = loader(jpeg_ds, train=False, batch_size=8)
    assert len(ld) == math.ceil(N_SAMPLES / 8)
    (a, xa), (b, xb) = epoch(ld, True), epoch(ld, True)
    assert a == b == [list(range(i, min(i + 8, N_SAMPLES))) for i in range(0, N_SAMPLES, 8)]
    assert all(torch.equal(u[k], v[k]) for u, v in zip(xa, xb) for k in u)


def test_loader_len_matches_plan(jpeg_ds: Path):
    for ws in (1, 2, 3, 4):
        for bs in (1, 4, 8, 60):
            for drop_last in (False, True):
                want = plan.batches_per_rank(N_SAMPLES, ws, bs, drop_last)
                if not want:  # no full batch: said when the loader is made, not an epoch of nothing
                    with pytest.raises(ShardError, match="leave no full batch"):
                        loader(jpeg_ds, rank=ws - 1, world_size=ws, batch_size=bs, drop_last=drop_last)
                    continue
                ld = loader(jpeg_ds, rank=ws - 1, world_size=ws, batch_size=bs, drop_last=drop_last)
                assert len(ld) == want
    with pytest.raises(ShardError, match=f"{N_SAMPLES} samples over 1 rank"):
        loader(jpeg_ds, batch_size=60, drop_last=True)
    (one,) = epoch(loader(jpeg_ds, batch_size=60, drop_last=False))
    assert sorted(one) == list(range(N_SAMPLES))


def test_small_shuffle_buffer_still_reads_the_plan(jpeg_ds: Path):
    ld = loader(jpeg_ds, shuffle_buffer=3, drop_last=False, seed=2)
    labels = [y for b in epoch(ld) for y in b]
    assert sorted(labels) == list(range(N_SAMPLES))
    assert labels != sorted(labels)


def test_more_workers_than_batches(jpeg_ds: Path):
    """A worker with no batch of its own yields nothing; the rank still yields len(loader) batches."""
    got = []
    for r in range(2):
        ld = loader(jpeg_ds, rank=r, world_size=2, num_workers=2, batch_size=30, drop_last=False)
        batches = epoch(ld)
        assert len(ld) == len(batches) == 1 and len(batches[0]) == 27
        got += batches[0]
    assert set(got) == set(range(N_SAMPLES)) and len(got) == 54


# ------------------------------------------------------------------------------------------- class order
def test_class_sorted_shards_are_warned_about_once(tmp_path: Path, caplog) -> None:
    """4 classes x 40 images: shards written with keep-order hold one class each, and a shuffle buffer smaller
    than a class cannot mix them: the loader says so once (not every epoch); the default shuffled shards and
    an unshuffled (eval) pass draw no warning."""
    src = make_image_folder(tmp_path / "src", {c: 40 for c in "abcd"}, size=(16, 16))
    for name, shuffle in (("kept", False), ("mixed", True)):
        run_job(ShardJob(src=str(src), dest=str(tmp_path / name), maxcount=40, progress=False, shuffle=shuffle))

    def warned(name: str, **kw) -> list[str]:
        caplog.clear()
        ld = make_loader(str(tmp_path / name), batch_size=16, shuffle_buffer=16, options={"crop": 16}, **kw)
        with caplog.at_level("WARNING", logger="lossyload"):
            for _ in range(2):
                list(ld)
        return [r.getMessage() for r in caplog.records if "class order" in r.getMessage()]

    (message,) = warned("kept")
    assert message.startswith(f"{tmp_path / 'kept'}: in each 64 of the first 128 samples one label holds")
    assert "of 4 labels in the index" in message
    assert warned("mixed") == []
    assert warned("kept", train=False) == []


def test_dominated_compares_with_the_labels_in_the_index() -> None:
    four, two = list("abcd"), ["a", "b"]
    assert dominated([0] * 64, ["a"]) is None  # one label: nothing to mix
    assert dominated([0] * 63, four) is None  # fewer samples than a group: no judgement
    assert dominated([i % 4 for i in range(256)], four) is None
    assert dominated([0, 1] * 64, two) is None
    assert dominated([0] * 60 + [1] * 4, two) is None  # 94%: two classes are allowed a lot
    assert "(most often 'a')" in dominated([0] * 62 + [1] * 2, two)
    found = dominated(([2] * 40 + [0, 1, 3] * 8) * 2, four)  # 40 of each 64 (62%) for label 2
    assert found == "in each 64 of the first 128 samples one label holds 62% on average (most often 'c'), of 4 " \
                    "labels in the index"
