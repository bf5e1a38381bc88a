"""A reusable check of exact mid-epoch resume: for a loader factory, stopping after any batch, saving the
state (through JSON, as a training script would), loading it into a fresh loader and finishing the epoch
must give exactly the batches of an uninterrupted epoch - same keys, same order, same tensors - and the
next epoch must be unaffected."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable

import torch

from lossyload.loader.loader import LossyLoader


def batches(loader: Iterable, limit: int | None = None) -> list[tuple]:
    """``(keys, x, y)`` of the loader's batches (at most ``limit``), tensors cloned."""
    out = []
    for x, y, keys in itertools.islice(loader, limit):  # never fetches a batch past the limit
        xs = {k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x.clone()
        out.append((list(keys), xs, y.clone()))
    return out


def same(a: list[tuple], b: list[tuple]) -> bool:
    if [k for k, _, _ in a] != [k for k, _, _ in b]:
        return False
    for (_, xa, ya), (_, xb, yb) in zip(a, b):
        if not torch.equal(ya, yb):
            return False
        pairs = [(xa[k], xb[k]) for k in xa] if isinstance(xa, dict) else [(xa, xb)]
        if not all(torch.equal(p, q) for p, q in pairs):
            return False
    return True


def stop_and_resume(make: Callable[[], LossyLoader], stop: int, epoch: int = 0) -> tuple[list, list, LossyLoader]:
    """Run ``stop`` batches of ``epoch`` on one loader, save its state, and finish the epoch on a new one."""
    first = make()
    first.set_epoch(epoch)
    head = batches(first, stop)
    state = json.loads(json.dumps(first.state_dict()))
    second = make()
    second.load_state_dict(state)
    return head, batches(second), second


def check_resume(make: Callable[[], LossyLoader], stops: Iterable[int] | None = None, epoch: int = 0) -> int:
    """Assert exact resume of ``epoch`` at every stop (default: every batch boundary); returns batch count."""
    ref_loader = make()
    ref_loader.set_epoch(epoch)
    reference = batches(ref_loader)
    shortfall = ref_loader.shortfall  # batches that skips in one process cut from the epoch
    following = batches(ref_loader)  # epoch + 1
    assert reference and len(reference) == len(ref_loader) - shortfall
    for stop in range(len(reference) + 1) if stops is None else sorted({min(s, len(reference)) for s in stops}):
        head, tail, resumed = stop_and_resume(make, stop, epoch)
        assert len(head) == stop
        if stop == len(reference):  # saved after the epoch's last batch: the state is the next epoch's start
            assert same(tail, following), "a state saved after the last batch does not start the next epoch"
            continue
        assert same(head + tail, reference), f"resume after {stop} batches differs from the uninterrupted epoch"
        assert resumed.epoch == epoch + 1
        assert same(batches(resumed), following), f"the epoch after a resume at {stop} differs"
    return len(reference)
