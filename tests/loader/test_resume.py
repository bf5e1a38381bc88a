"""Exact mid-epoch resume of ``LossyLoader`` in every configuration: stopping after a batch, saving the state
through JSON and finishing on a fresh loader gives the uninterrupted epoch's batches (keys, order, tensors),
and the following epoch is unaffected. Uses the reusable check in ``resume.py``.

Every stop point is checked in-process (``num_workers=0``); worker processes cost a start-up per pass, so the
configurations with workers are checked at a few stop points: at the start, with one worker a batch ahead of
the other, just before the partial last batch.
"""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import pytest
import torch

from lossyload.errors import LossyloadError
from lossyload.loader import plan
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import STATE_VERSION, LossyLoader

from .conftest import N_SAMPLES, rewrite
from .resume import batches, check_resume, same, stop_and_resume

pytestmark = pytest.mark.usefixtures("one_thread")

BS = 4  # 53 samples -> 13 full batches and a partial one of 1 (or 13 batches with drop_last)
CROP = 16  # of 48x32 images: random crops have 3 x 2 MCU-aligned windows, and flips, to draw


def factory(url, *, num_workers: int = 0, **kw):
    """A loader factory for ``check_resume``: every call builds a fresh, identical loader (keys returned)."""
    kw.setdefault("batch_size", BS)
    kw.setdefault("options", {"crop": CROP})
    kw.setdefault("shuffle_buffer", 5)  # smaller than any worker's share: the buffer really reorders

    def make() -> LossyLoader:
        return LossyLoader(LossyDataset(str(url), **kw), num_workers=num_workers, return_keys=True)

    return make


def one_pass(make, epoch: int = 0) -> tuple[LossyLoader, list]:
    ld = make()
    ld.set_epoch(epoch)
    return ld, batches(ld)


# ------------------------------------------------------------------------------------------- every stop, in process


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_stop_in_process(jpeg_ds: Path, shuffle, drop_last):
    """Default training augmentations (random crop + flip of jpeg-dct): identical tensors after a resume mean
    the per-batch augmentation draws are reproduced."""
    n = check_resume(factory(jpeg_ds, shuffle=shuffle, drop_last=drop_last))
    assert n == (13 if drop_last else 14)


def test_every_stop_of_epoch_one(jpeg_ds: Path):
    make = factory(jpeg_ds, seed=7)
    check_resume(make, epoch=1)
    # epoch 1 is really another epoch: another shard order (shuffled) and other augmentation draws
    _, e0 = one_pass(make, 0)
    _, e1 = one_pass(make, 1)
    assert [k for k, _, _ in e0] != [k for k, _, _ in e1]


def test_every_stop_of_rank_one_of_two(jpeg_ds: Path):
    """Rank 1's share wraps around to the start of the epoch's order (drop_last=False)."""
    make = factory(jpeg_ds, world=plan.World(rank=1, world_size=2), drop_last=False)
    assert check_resume(make) == plan.batches_per_rank(N_SAMPLES, 2, BS, False) == 7
    _, rank1 = one_pass(make)
    _, rank0 = one_pass(factory(jpeg_ds, world=plan.World(rank=0, world_size=2), drop_last=False))
    assert not {k for b in rank1 for k in b[0]} <= {k for b in rank0 for k in b[0]}  # really another share


def test_every_stop_coefficient_storage(coef_ds: Path):
    make = factory(coef_ds, batch_size=3, shuffle_buffer=4, drop_last=False)
    assert check_resume(make) == 4  # 10 samples: 3 + 3 + 3 + 1
    assert make().dataset.codec.config.storage == "coefficients"


def test_every_stop_eval_mode(jpeg_ds: Path):
    """``train=False``: center crop fused into decoding, no shuffle, partial last batch kept."""
    assert check_resume(factory(jpeg_ds, train=False)) == 14


def test_every_stop_rgb_codec_over_jpeg_dct_shards(jpeg_ds: Path):
    """``rgb`` reads the same JPEG members; its default train transforms are RandomResizedCrop(crop) + flip."""
    make = factory(jpeg_ds, codec="rgb", options={"crop": CROP})
    ld, ref = one_pass(make)
    assert ld.dataset.codec.name == "rgb" and ref[0][1].shape == (BS, 3, CROP, CROP)
    assert ref[0][1].dtype == torch.float32
    check_resume(make)


def test_augmentations_are_random_so_the_check_means_something(jpeg_ds: Path):
    """Same samples in the same order, other per-batch generators (another epoch, no shuffle): other tensors.
    So equal tensors after a resume do show the draws were reproduced, not that there were none."""
    make = factory(jpeg_ds, shuffle=False)
    _, e0 = one_pass(make, 0)
    _, e1 = one_pass(make, 1)
    assert [k for k, _, _ in e0] == [k for k, _, _ in e1]
    assert sum(not same([a], [b]) for a, b in zip(e0, e1)) >= len(e0) // 2  # most batches drew differently
    assert not same(e0, e1)


# ------------------------------------------------------------------------------------------- worker processes


@pytest.mark.parametrize(
    "num_workers,world,drop_last,epoch,stops",
    [
        (1, plan.World(), False, 0, (0, 5)),
        (2, plan.World(), False, 0, (3, 8, 13)),  # odd stops: worker 0 a batch ahead; 13: before the partial batch
        (2, plan.World(), True, 1, (1, 6)),
        (2, plan.World(rank=1, world_size=2), False, 0, (1, 4, 6)),
    ],
    ids=["w1", "w2", "w2-droplast-epoch1", "w2-rank1of2"],
)
def test_some_stops_with_workers(jpeg_ds: Path, num_workers, world, drop_last, epoch, stops):
    check_resume(factory(jpeg_ds, num_workers=num_workers, world=world, drop_last=drop_last), stops=stops,
                 epoch=epoch)


def test_in_process_state_resumes_with_one_worker(jpeg_ds: Path):
    """``num_workers`` 0 and 1 are the same plan (one reader): their states are interchangeable."""
    _, reference = one_pass(factory(jpeg_ds))
    first = factory(jpeg_ds)()
    head = batches(first, 5)
    second = factory(jpeg_ds, num_workers=1)()
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert same(head + batches(second), reference)


# ------------------------------------------------------------------------------------------- unbatched


def samples(loader, limit=None) -> list[tuple]:
    """``(key, x, label)`` of an unbatched loader's samples (``batches`` expects batched labels and keys)."""
    out = []
    for x, y, key in itertools.islice(loader, limit):
        assert isinstance(y, int) and isinstance(key, str)
        out.append((key, {k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x.clone(), y))
    return out


def same_samples(a, b) -> bool:
    def eq(p, q):
        return p.keys() == q.keys() and all(torch.equal(p[k], q[k]) for k in p) if isinstance(p, dict) \
            else torch.equal(p, q)

    return [s[0] for s in a] == [s[0] for s in b] and all(x[2] == y[2] and eq(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("num_workers,stops", [(0, range(N_SAMPLES + 1)), (2, (1, 27))])
def test_unbatched(jpeg_ds: Path, num_workers, stops):
    make = factory(jpeg_ds, batch_size=None, num_workers=num_workers)
    ref = make()
    reference, following = samples(ref), samples(ref)
    assert len(reference) == len(ref) == N_SAMPLES
    assert sorted(s[2] for s in reference) == list(range(N_SAMPLES))
    for stop in stops:
        first = make()
        head = samples(first, stop)
        second = make()
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        tail = samples(second)
        if stop == N_SAMPLES:  # saved after the last sample: the state is the next epoch's start
            assert same_samples(tail, following) and second.epoch == 2, stop
            continue
        assert len(head) == stop and same_samples(head + tail, reference), stop
        assert second.epoch == 1 and same_samples(samples(second), following), stop


# ------------------------------------------------------------------------------------------- skipped samples


def truncate_shard(ds: Path, name: str = "shard-000002.tar") -> None:
    """Cut ``name`` (labels 14..20) half-way through sample c017's JPEG: 17..20 (at least) are lost."""
    path = ds / name
    with tarfile.open(path) as tar:
        m = {m.name: m for m in tar.getmembers()}["c017/img.jpg"]
    path.write_bytes(path.read_bytes()[: m.offset_data + m.size // 2])


def first_padded_batch(reference: list) -> int:
    """Index of the first batch holding a repeated sample (one rank, no wrap-around: only padding repeats)."""
    seen: set[str] = set()
    for i, (keys, _, _) in enumerate(reference):
        if seen & set(keys) or len(set(keys)) < len(keys):
            return i
        seen |= set(keys)
    return len(reference)


def check_skip_resume(make, stops) -> list[str]:
    """Resume at each stop and compare batches, and the skipped list, padding and shortfall, with an
    uninterrupted epoch: what the head reported plus what the tail reported is the whole list, in order,
    nothing twice."""
    ref, reference = one_pass(make)
    assert ref.skipped and (ref.padded or ref.shortfall), "the damage is not reached"
    heads = set()
    for stop in stops:
        first = make()
        head = batches(first, stop)
        state = json.loads(json.dumps(first.state_dict()))
        assert state["skipped"] == first.skipped == ref.skipped[: len(first.skipped)], f"stop {stop}"
        heads.add(len(state["skipped"]))
        second = make()
        second.load_state_dict(state)
        tail = batches(second)
        assert same(head + tail, reference), f"stop {stop}"
        assert second.skipped == ref.skipped, f"stop {stop}"  # head's (from the state) + tail's, once each
        assert (second.padded, second.shortfall) == (ref.padded, ref.shortfall), f"stop {stop}"
    assert len(heads) > 1, "no stop falls on either side of the skips"
    return ref.skipped


@pytest.mark.parametrize("shuffle", [False, True])
def test_skip_every_stop(jpeg_copy: Path, shuffle):
    """A truncated shard under ``on_error="skip"``, one process: nothing repeated, the epoch two batches
    short; every stop, before and after the skips, resumes it exactly."""
    truncate_shard(jpeg_copy)
    make = factory(jpeg_copy, on_error="skip", shuffle=shuffle)
    ref, reference = one_pass(make)
    assert first_padded_batch(reference) == len(reference) == len(ref) - ref.shortfall == len(ref) - 2
    skipped = check_skip_resume(make, range(len(reference)))
    assert 4 <= len(skipped) <= 5 and all("shard-000002.tar [" in s for s in skipped)


def test_skip_some_stops_with_workers(jpeg_copy: Path):
    """No shuffle, 2 workers, one process: worker 0 reads samples 0..27, the damaged shard (14..20) among
    them, and runs out a batch early (its last batch, 10th of the epoch, partial); stops before and past its
    skips, and after it ran out (11)."""
    truncate_shard(jpeg_copy)
    make = factory(jpeg_copy, on_error="skip", num_workers=2, shuffle=False, drop_last=False)
    ref, reference = one_pass(make)
    assert (len(reference), ref.shortfall, len(reference[10][0])) == (13, 1, 3)
    check_skip_resume(make, stops=(4, 10, 11))


RANK0 = plan.World(rank=0, world_size=2)  # across ranks skips are padded (to keep batch counts equal)


def test_skip_resume_into_a_batch_that_is_all_padding(jpeg_copy: Path):
    """Truncated shard, rank 0 of 2, 6 batches (drop_last: 24 planned samples, 19 readable): batch 4 has 3
    samples and 1 repeat, batch 5 is all repeats (of the first batch). Resuming at 5 must give that batch,
    not an error."""
    truncate_shard(jpeg_copy)
    make = factory(jpeg_copy, on_error="skip", shuffle=False, drop_last=True, world=RANK0)
    ref, reference = one_pass(make)
    assert len(reference) == 6 and first_padded_batch(reference) == 4 and ref.padded == 5
    assert set(reference[5][0]) <= set(reference[0][0])  # all repeats of the worker's first batch
    head, tail, _ = stop_and_resume(make, 5)
    assert same(head + tail, reference)


def test_skip_resume_into_a_batch_mostly_padding(jpeg_copy: Path):
    """Rank 0 of 2, 2 samples without payload: 25 of 27 planned readable, batch 6 holds 1 of them and 2
    repeats from the worker's first batch (which the resumed loader rebuilds): the same keys and tensors as
    the uninterrupted epoch."""
    drop = {"c015/img.jpg", "c016/img.jpg"}
    rewrite(jpeg_copy / "shard-000002.tar", lambda ms: [(n, d) for n, d in ms if n not in drop])
    make = factory(jpeg_copy, on_error="skip", shuffle=False, drop_last=False, world=RANK0)
    _, reference = one_pass(make)
    assert len(reference) == 7 and first_padded_batch(reference) == 6
    assert set(reference[6][0]) & set(reference[0][0])  # padding drawn from the first batch
    head, tail, _ = stop_and_resume(make, 6)
    assert same(head + tail, reference), f"batch 6: resumed {tail[0][0]}, uninterrupted {reference[6][0]}"


# ------------------------------------------------------------------------------------------- state handling


@pytest.mark.parametrize(
    "setting,other",
    [("seed", {"seed": 1}), ("shuffle", {"shuffle": False}), ("drop_last", {"drop_last": False}),
     ("shuffle_buffer", {"shuffle_buffer": 6}), ("options", {"options": {"crop": 32}})],
)
def test_state_from_other_settings_is_refused(jpeg_ds: Path, setting, other):
    """What decides which samples an epoch holds, or their tensors, must match; world size, workers and batch
    size may change (an elastic resume: tests/loader/test_elastic.py)."""
    first = factory(jpeg_ds)()
    batches(first, 2)
    state = json.loads(json.dumps(first.state_dict()))
    loader = factory(jpeg_ds, **other)()
    with pytest.raises(LossyloadError, match=rf"other settings.*\b{setting} \(saved "):
        loader.load_state_dict(state)
    unchanged = loader.state_dict()
    assert unchanged["epoch"] == 0 and unchanged["workers"] == [[0, 0]] * max(1, loader.num_workers)


def test_state_of_another_dataset_is_refused(jpeg_ds: Path, coef_ds: Path):
    first = factory(coef_ds)()
    batches(first, 1)
    with pytest.raises(LossyloadError, match=r"samples \(saved 10, now 53\).*shards \(saved"):
        factory(jpeg_ds)().load_state_dict(first.state_dict())


@pytest.mark.parametrize("version", [STATE_VERSION + 1, 0, None, "1"])
def test_unknown_state_version_is_refused(jpeg_ds: Path, version):
    first = factory(jpeg_ds)()
    batches(first, 1)
    state = first.state_dict()
    if version is None:
        del state["version"]
    else:
        state["version"] = version
    with pytest.raises(LossyloadError, match=rf"loader state version {version!r} is not {STATE_VERSION}"):
        factory(jpeg_ds)().load_state_dict(state)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_saved_at_the_end_of_an_epoch_resumes_into_the_next(jpeg_ds: Path, num_workers):
    make = factory(jpeg_ds, num_workers=num_workers)
    ref = make()
    e0, e1 = batches(ref), batches(ref)
    first = make()
    assert same(batches(first), e0)  # the full loop: the epoch ends
    state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] == 1 and state["workers"] == [[0, 0]] * max(1, num_workers)
    second = make()
    second.load_state_dict(state)
    assert same(batches(second), e1)
    assert second.epoch == 2


def test_state_saved_after_the_last_batch_inside_the_loop(jpeg_ds: Path):
    """Saved after the last batch but before the loop ends (as ``check_resume``'s last stop does): the state is
    the next epoch's start, so a resumed run does not see an empty epoch."""
    make = factory(jpeg_ds)
    ref = make()
    e0, e1 = batches(ref), batches(ref)
    head, tail, second = stop_and_resume(make, len(e0))
    assert same(head, e0) and same(tail, e1) and second.epoch == 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_leaving_a_loop_early_then_iterating_restarts_the_epoch(jpeg_ds: Path, num_workers):
    make = factory(jpeg_ds, num_workers=num_workers)
    ref = make()
    reference = batches(ref)
    ld = make()
    for i, _ in enumerate(ld):
        if i == 2:
            break
    assert ld.epoch == 0 and ld.state_dict()["workers"] != [[0, 0]] * max(1, num_workers)
    again = batches(ld)
    assert same(again, reference)  # from the first batch, not from where the loop was left
    assert ld.epoch == 1


def test_state_dict_is_json_serialisable(jpeg_copy: Path):
    truncate_shard(jpeg_copy)
    ld = factory(jpeg_copy, on_error="skip", num_workers=2, shuffle=False)()
    assert json.loads(json.dumps(ld.state_dict())) == ld.state_dict()  # before any batch
    batches(ld, 9)
    state = ld.state_dict()
    assert ld.skipped and state["skipped"] == ld.skipped  # past the damage: reasons are strings
    assert json.loads(json.dumps(state)) == state
    # round robin over 2 workers, until worker 0 ran out after 4 (19 readable samples, drop_last)
    assert state["epoch"] == 0 and [b for b, _ in state["workers"]] == [4, 5]
    assert all(isinstance(c, int) and c > 0 for _, c in state["workers"])


# ------------------------------------------------------------------------------------------- the check can fail


def test_tampered_state_breaks_the_resume(jpeg_ds: Path):
    """A state whose worker count is shifted by one batch resumes somewhere else: ``same`` says so."""
    make = factory(jpeg_ds)
    _, reference = one_pass(make)
    first = make()
    head = batches(first, 4)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["workers"] == [[4, state["workers"][0][1]]]
    state["workers"][0][0] += 1  # one batch more done than really delivered
    second = make()
    second.load_state_dict(state)
    tail = batches(second)
    assert not same(head + tail, reference)
    assert len(head + tail) == len(reference) - 1


def test_same_compares_tensors_not_only_keys(jpeg_ds: Path):
    """Same keys in the same order but other augmentation draws (another seed, no shuffle): not ``same``."""
    _, a = one_pass(factory(jpeg_ds, shuffle=False, seed=0))
    _, b = one_pass(factory(jpeg_ds, shuffle=False, seed=1))
    assert [k for k, _, _ in a] == [k for k, _, _ in b] and not same(a, b)


def test_check_resume_catches_a_loader_that_ignores_the_state(jpeg_ds: Path):
    class Forgetful(LossyLoader):
        def load_state_dict(self, state):  # keeps the epoch, forgets the positions: restarts the epoch
            super().load_state_dict(state)
            self._done = [[0, 0] for _ in self._done]

    make = factory(jpeg_ds)

    def make_forgetful() -> LossyLoader:
        ld = make()
        return Forgetful(ld.dataset, return_keys=True)

    with pytest.raises(AssertionError, match="resume after 3 batches differs"):
        check_resume(make_forgetful, stops=[3])
    check_resume(make_forgetful, stops=[0])  # (at the very start there is nothing to forget)
