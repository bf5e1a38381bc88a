"""Elastic resume, in process: a state saved by one rank of a run under one topology (world size, loader
workers, batch size) and loaded by every rank of another finishes the epoch with every sample the old run had
not delivered delivered exactly once (plus the padding equal batches need). Ranks are simulated with
``world=``; tests/loader/test_torchrun.py runs the same under real ``torchrun`` processes."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from lossyload.errors import LossyloadError
from lossyload.loader import order, plan
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader

from .conftest import N_SAMPLES

pytestmark = pytest.mark.usefixtures("one_thread")

CROP = {"crop": 16}


def make(url, rank: int, world_size: int, *, batch_size: int = 4, num_workers: int = 0, **kw) -> LossyLoader:
    kw.setdefault("options", CROP)
    kw.setdefault("shuffle_buffer", 5)
    ds = LossyDataset(str(url), batch_size=batch_size, world=plan.World(rank=rank, world_size=world_size), **kw)
    return LossyLoader(ds, num_workers=num_workers, return_keys=True)


def run(url, world_size: int, *, stop: int | None = None, state: dict | None = None, epoch: int = 0,
        **kw) -> tuple[list[list[str]], list[dict], list[LossyLoader]]:
    """Every rank of a world: its keys (up to ``stop`` batches), its state after them, its loader."""
    keys, states, loaders = [], [], []
    for rank in range(world_size):
        ld = make(url, rank, world_size, **kw)
        if state is not None:
            ld.load_state_dict(json.loads(json.dumps(state)))
        else:
            ld.set_epoch(epoch)
        keys.append([k for _, _, ks in itertools.islice(ld, stop) for k in ks])
        states.append(json.loads(json.dumps(ld.state_dict())))
        loaders.append(ld)
    return keys, states, loaders


def flat(keys: list[list[str]]) -> list[str]:
    return [k for r in keys for k in r]


def check_exactly_once(planned: list[str], head: list[str], tail: list[str], pad_limit: int) -> None:
    """Every sample the uninterrupted epoch plans is delivered, and the samples delivered twice are padding:
    the uninterrupted plan's own (its wrap-around) plus at most ``pad_limit`` in the resumed tail. A sample
    the head delivered never comes again in the tail unless as padding."""
    got = Counter(head + tail)
    assert not set(planned) - set(got), f"planned samples never delivered: {sorted(set(planned) - set(got))}"
    assert set(got) <= set(planned), f"samples outside the plan: {sorted(set(got) - set(planned))}"
    repeats = sum(got.values()) - len(got)
    allowed = len(planned) - len(set(planned)) + pad_limit
    assert repeats <= allowed, f"{repeats} samples delivered twice, padding allows {allowed}: {got.most_common(5)}"


CASES = {  # name: (old kw, new kw, stop)
    "world 2 -> 3": ({"world_size": 2}, {"world_size": 3}, 3),
    "world 2 -> 1": ({"world_size": 2}, {"world_size": 1}, 2),
    "world 1 -> 2": ({"world_size": 1}, {"world_size": 2}, 5),
    "batch 4 -> 6": ({"world_size": 2}, {"world_size": 2, "batch_size": 6}, 2),
    "world 3 x batch 3 -> 2 x batch 5, no drop_last": ({"world_size": 3, "batch_size": 3, "drop_last": False},
                                                        {"world_size": 2, "batch_size": 5, "drop_last": False}, 2),
    "workers 2 -> 0": ({"world_size": 2, "num_workers": 2}, {"world_size": 2}, 3),
    # persistent worker processes: restarted for the resumed segment, and again for the next, ordinary epoch
    "world 2 -> 3 x 2 workers": ({"world_size": 2}, {"world_size": 3, "num_workers": 2}, 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_elastic_resume_delivers_every_sample_once(jpeg_ds: Path, case):
    old, new, stop = CASES[case]
    old, new = dict(old), dict(new)
    ws, ws2 = old.pop("world_size"), new.pop("world_size")
    planned, _, _ = run(jpeg_ds, ws, **old)
    head, states, _ = run(jpeg_ds, ws, stop=stop, **old)
    assert all(len(h) == stop * old.get("batch_size", 4) for h in head)
    tail, _, loaders = run(jpeg_ds, ws2, state=states[0], **new)
    bs2 = new.get("batch_size", 4)
    assert len({len(t) for t in tail}) == 1 or not new.get("drop_last", True), "ranks got unequal shares"
    check_exactly_once(flat(planned), flat(head), flat(tail), pad_limit=ws2 * bs2)
    assert len(flat(tail)) >= len(flat(planned)) - len(flat(head))
    # any rank's state implies the others': rank 1's gives the same tail
    again, _, _ = run(jpeg_ds, ws2, state=states[-1], **new)
    assert again == tail
    # the next epoch is a fresh epoch of the new topology
    following, _, _ = run(jpeg_ds, ws2, epoch=1, **new)
    assert [[k for _, _, ks in ld for k in ks] for ld in loaders] == following


def test_drop_last_resumed_tail_has_full_batches(jpeg_ds: Path):
    """drop_last (the training default): a resumed tail drops no pending sample and pads its last batch."""
    head, states, _ = run(jpeg_ds, 2, stop=2)
    tail_loaders = [make(jpeg_ds, r, 3, batch_size=5) for r in range(3)]
    sizes = []
    for ld in tail_loaders:
        ld.load_state_dict(states[0])
        sizes += [len(ks) for _, _, ks in ld]
    assert set(sizes) == {5}
    pending = 2 * plan.samples_per_rank(N_SAMPLES, 2, True) // 4 * 4 - len(flat(head))
    assert len(sizes) == 3 * -(-(-(-pending // 3)) // 5)


def test_twice_elastic_then_exact(jpeg_ds: Path):
    """2 ranks -> 3 ranks (stopped again) -> 1 rank: still every sample once; and the 3-rank segment resumed
    under the same topology continues exactly (same keys as without the stop)."""
    planned, _, _ = run(jpeg_ds, 2)
    head, states, _ = run(jpeg_ds, 2, stop=2)
    mid_all, _, _ = run(jpeg_ds, 3, state=states[0], batch_size=3)
    mid, states2, _ = run(jpeg_ds, 3, state=states[0], batch_size=3, stop=1)
    assert states2[0]["segments"] and len(states2[0]["segments"]) == 1
    rest_exact, _, _ = run(jpeg_ds, 3, state=states2[0], batch_size=3)
    for r in range(3):  # exact within the segment (rank 0's state serves every rank when nothing is skipped)
        assert mid[r] + rest_exact[r] == mid_all[r]
    tail, _, _ = run(jpeg_ds, 1, state=states2[1])
    check_exactly_once(flat(planned), flat(head) + flat(mid), flat(tail), pad_limit=3 * 3 + 4)


def test_elastic_resume_with_workers_matches_in_process(jpeg_ds: Path):
    """Worker processes read the same resumed shares as the in-process loader."""
    _, states, _ = run(jpeg_ds, 2, stop=3)
    a, _, _ = run(jpeg_ds, 3, state=states[0])
    b, _, _ = run(jpeg_ds, 3, state=states[0], num_workers=2)
    assert sorted(flat(a)) == sorted(flat(b)) and [len(x) for x in a] == [len(x) for x in b]


def test_state_of_changed_shards_is_refused(jpeg_ds: Path, coef_ds: Path):
    _, states, _ = run(coef_ds, 2, stop=1)
    with pytest.raises(LossyloadError, match=r"needs the same .*samples \(saved 10, now 53\).*shards \(saved"):
        make(jpeg_ds, 0, 3).load_state_dict(states[0])


def test_pending_replays_the_shuffle(jpeg_ds: Path):
    """``order.pending`` after 2 batches of 2 ranks is exactly the epoch's samples those batches lack."""
    planned, _, loaders = run(jpeg_ds, 2)
    head, _, _ = run(jpeg_ds, 2, stop=2)
    seg = order.Segment(2, 1, 4, True, (2,))
    todo = order.pending(N_SAMPLES, [seg], seed=0, epoch=0, shuffle_buffer=5)
    ds = loaders[0].dataset
    src, shard, index = order.locate(ds.layout, todo, seed=0, epoch=0, shuffle=True)
    keys = sorted(f"c{int(s) * 7 + int(j):03d}/img" for s, j in zip(shard, index))
    assert keys == sorted(set(flat(planned)) - set(flat(head)))


def test_unbatched_elastic_resume(jpeg_ds: Path):
    """Without a batch size (samples one by one): 2 ranks stopped after 10 samples, finished by 3."""
    planned, head, tail = [], [], []
    state = None
    for rank in range(2):
        planned += [k for _, _, k in make(jpeg_ds, rank, 2, batch_size=None)]
        ld = make(jpeg_ds, rank, 2, batch_size=None)
        head += [k for _, _, k in itertools.islice(ld, 10)]
        state = state or json.loads(json.dumps(ld.state_dict()))
    for rank in range(3):
        ld = make(jpeg_ds, rank, 3, batch_size=None)
        ld.load_state_dict(state)
        tail += [k for _, _, k in ld]
    check_exactly_once(planned, head, tail, pad_limit=3)
