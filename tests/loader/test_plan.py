"""Property tests of the pure planning functions in ``lossyload.loader.plan``."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossyload.loader import plan
from lossyload.loader.plan import World

seeds = st.integers(0, 2**32 - 1)
epochs = st.integers(0, 1000)


# ------------------------------------------------------------------------------------------- shard_order


@given(n=st.integers(0, 200), seed=seeds, epoch=epochs)
def test_shard_order_is_a_permutation_and_a_pure_function(n, seed, epoch):
    order = plan.shard_order(n, seed=seed, epoch=epoch, shuffle=True)
    assert sorted(order) == list(range(n))
    assert all(type(i) is int for i in order)
    assert plan.shard_order(n, seed=seed, epoch=epoch, shuffle=True) == order


@given(n=st.integers(0, 200), seed=seeds, epoch=epochs)
def test_shard_order_without_shuffle_is_identity(n, seed, epoch):
    assert plan.shard_order(n, seed=seed, epoch=epoch, shuffle=False) == list(range(n))


@given(seed=seeds, epoch=epochs)
def test_shard_order_differs_across_epochs_and_seeds(seed, epoch):
    # 50! orders: two draws agreeing by chance is impossible in practice.
    a = plan.shard_order(50, seed=seed, epoch=epoch, shuffle=True)
    assert plan.shard_order(50, seed=seed, epoch=epoch + 1, shuffle=True) != a
    assert plan.shard_order(50, seed=seed + 1, epoch=epoch, shuffle=True) != a
    assert a != list(range(50))


def test_shard_order_pinned():
    """The order is part of the reproducibility contract: a change of it must be deliberate."""
    assert plan.shard_order(8, seed=0, epoch=0, shuffle=True) == [2, 1, 0, 7, 6, 3, 5, 4]
    assert plan.shard_order(8, seed=0, epoch=1, shuffle=True) == [0, 7, 5, 2, 1, 6, 3, 4]
    assert plan.shard_order(8, seed=7, epoch=3, shuffle=True) == [1, 3, 6, 4, 0, 5, 2, 7]
    orders = {tuple(plan.shard_order(8, seed=0, epoch=e, shuffle=True)) for e in range(20)}
    assert len(orders) > 15  # epochs really reshuffle


# ------------------------------------------------------------------------------------------- spans


def _spans(total: int, world_size: int, workers: int, bs: int, drop_last: bool):
    """{rank: [(start, stop) per worker]}"""
    return {
        r: [
            plan.worker_span(total, World(rank=r, world_size=world_size, worker=w, num_workers=workers), bs, drop_last)
            for w in range(workers)
        ]
        for r in range(world_size)
    }


world_sizes = st.integers(1, 4)
worker_counts = st.integers(1, 3)
batch_sizes = st.integers(1, 8)


@settings(max_examples=300)
@given(total=st.integers(0, 300), ws=world_sizes, nw=worker_counts, bs=batch_sizes)
def test_drop_last_spans_are_disjoint_and_in_range(total, ws, nw, bs):
    spans = _spans(total, ws, nw, bs, True)
    positions = [p for r in spans for a, b in spans[r] for p in range(a, b)]
    assert len(positions) == len(set(positions))  # disjoint
    assert all(0 <= p < total for p in positions)  # no wrap-around when dropping
    nb = plan.batches_per_rank(total, ws, bs, True)
    assert len(positions) == ws * nb * bs
    if total % (ws * bs) == 0:  # divides evenly: every sample exactly once
        assert sorted(positions) == list(range(total))
    # what is dropped: the world remainder, then each rank's incomplete last batch
    assert total - len(positions) == total % ws + ws * ((total // ws) % bs)


@settings(max_examples=300)
@given(data=st.data(), ws=world_sizes, nw=worker_counts, bs=batch_sizes)
def test_no_drop_spans_cover_everything_repeating_at_most_once(data, ws, nw, bs):
    total = data.draw(st.integers(ws, 300))  # a dataset at least as large as the world
    spans = _spans(total, ws, nw, bs, False)
    counts = Counter(p % total for r in spans for a, b in spans[r] for p in range(a, b))
    assert set(counts) == set(range(total))
    assert max(counts.values()) <= 2
    assert sum(counts.values()) == ws * math.ceil(total / ws)
    if total % ws == 0:
        assert set(counts.values()) == {1}


@settings(max_examples=300)
@given(total=st.integers(0, 300), ws=world_sizes, nw=worker_counts, bs=batch_sizes, drop_last=st.booleans())
def test_every_rank_gets_the_same_batches_and_at_most_one_partial(total, ws, nw, bs, drop_last):
    nb = plan.batches_per_rank(total, ws, bs, drop_last)
    n = plan.samples_per_rank(total, ws, drop_last)
    spans = _spans(total, ws, nw, bs, drop_last)
    for r, rank_spans in spans.items():
        lengths = [b - a for a, b in rank_spans]
        assert all(x >= 0 for x in lengths)
        # the workers' batches (each worker collates its own span) add up to exactly nb
        assert sum(math.ceil(x / bs) for x in lengths) == nb
        partial = [x for x in lengths if x % bs]
        assert len(partial) <= 1
        if drop_last:
            assert not partial
        # the workers of a rank tile one contiguous run starting at rank * n
        assert rank_spans[0][0] == r * n
        for (a0, b0), (a1, b1) in zip(rank_spans, rank_spans[1:]):
            assert b0 == a1
        # the partial batch, if any, is the rank's last one
        if partial:
            nonempty = [x for x in lengths if x]
            assert nonempty[-1] % bs
    if drop_last:
        assert nb == (total // ws) // bs
    else:
        assert nb == math.ceil(math.ceil(total / ws) / bs)


@given(total=st.integers(1, 300), ws=world_sizes, bs=batch_sizes, drop_last=st.booleans())
def test_worker_split_is_balanced(total, ws, bs, drop_last):
    """Workers' batch counts differ by at most one, so none sits idle while another has a backlog."""
    nw = 3
    for r in range(ws):
        counts = [
            math.ceil((b - a) / bs) for a, b in _spans(total, ws, nw, bs, drop_last)[r]
        ]
        assert max(counts) - min(counts) <= 1


def test_world_validation():
    with pytest.raises(ValueError):
        World(rank=2, world_size=2)
    with pytest.raises(ValueError):
        World(worker=1, num_workers=1)
    with pytest.raises(ValueError):
        World(rank=-1, world_size=2)


# ------------------------------------------------------------------------------------------- shard_ranges


def _naive(order, sizes, start, stop):
    flat = [(s, i) for s in order for i in range(sizes[s])]
    return [flat[p % len(flat)] for p in range(start, stop)] if flat else []


@st.composite
def shard_cases(draw):
    sizes = draw(st.lists(st.integers(0, 9), min_size=1, max_size=12))
    order = draw(st.permutations(range(len(sizes))))
    total = sum(sizes)
    start = draw(st.integers(0, 3 * total + 3))
    stop = draw(st.integers(start, start + 3 * total + 3))
    return list(order), sizes, start, stop


@settings(max_examples=300)
@given(shard_cases())
def test_shard_ranges_map_positions_with_wraparound(case):
    order, sizes, start, stop = case
    ranges = plan.shard_ranges(order, sizes, start, stop)
    expanded = [(s, i) for s, first, end in ranges for i in range(first, end)]
    assert expanded == _naive(order, sizes, start, stop)
    for s, first, end in ranges:
        assert 0 <= first < end <= sizes[s]  # no empty ranges, never past a shard's end


def test_shard_ranges_examples():
    sizes = [7, 7, 4]
    assert plan.shard_ranges([0, 1, 2], sizes, 0, 18) == [(0, 0, 7), (1, 0, 7), (2, 0, 4)]
    assert plan.shard_ranges([2, 0, 1], sizes, 3, 9) == [(2, 3, 4), (0, 0, 5)]
    # wraps around the end of the epoch's order back to its start
    assert plan.shard_ranges([0, 1, 2], sizes, 16, 20) == [(2, 2, 4), (0, 0, 2)]
    assert plan.shard_ranges([0, 1, 2], sizes, 5, 5) == []
    assert plan.shard_ranges([0, 1], [0, 0], 0, 5) == []
