"""The epoch order's shortcuts equal its definition: a fresh epoch's worker share as a range of positions
(:func:`order.worker_span`) and the shard reads of a range planned per shard (:func:`order.span_runs`), against
the per-sample arrays of :func:`order.worker_share` and :func:`order.locate` + :func:`order.runs`."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lossyload.loader import order

from ..test_fuzz import fuzz


@fuzz(400)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8), extra=st.one_of(st.none(), st.integers(1, 150)),
       start=st.integers(0, 120), length=st.integers(0, 200), seed=st.integers(0, 3), epoch=st.integers(0, 4),
       shuffle=st.booleans())
def test_span_runs_equal_the_runs_of_every_position(sizes, extra, start, length, seed, epoch, shuffle) -> None:
    layout = order.Layout((tuple(sizes),), (extra or sum(sizes),))  # a share other than the size: repeats, subsets
    slow = order.runs(*order.locate(layout, np.arange(start, start + length), seed=seed, epoch=epoch,
                                    shuffle=shuffle)[1:])
    assert order.span_runs(layout, start, start + length, seed=seed, epoch=epoch, shuffle=shuffle) == slow


@fuzz(300)
@given(size=st.integers(0, 400), world=st.integers(1, 5), workers=st.integers(1, 4), batch=st.integers(1, 9),
       drop_last=st.booleans())
def test_worker_span_is_the_fresh_worker_share(size, world, workers, batch, drop_last) -> None:
    seg = order.Segment(world, workers, batch, drop_last)
    for rank in range(world):
        for worker in range(workers):
            entries, _ = order.worker_share(size, seg, rank, worker, True)
            assert list(entries) == list(range(*order.worker_span(size, seg, rank, worker)))
        assert order.worker_batches(size, seg, rank, True) == [-(-len(order.worker_share(size, seg, rank, w, True)[0])
                                                                 // batch) for w in range(workers)]


def test_span_runs_plan_ten_million_samples_without_per_sample_arrays() -> None:
    sizes = (100,) * 100_000
    layout = order.Layout((sizes,), (sum(sizes),))
    runs = order.span_runs(layout, 1_250_000, 2_500_000, seed=0, epoch=0, shuffle=True)
    assert len(runs) in (12_500, 12_501) and sum(end - first for _, first, end, _ in runs) == 1_250_000
