"""What the trainer measures about a model and its input, measured rather than estimated: parameters, FLOPs
of one forward pass (``torch.utils.flop_counter``), feature memory (the bytes of tensors autograd saves for
backward, caught with saved-tensor hooks); the process's peak RSS comes from :mod:`lossyload.bench.memory`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

Batch = torch.Tensor | dict[str, torch.Tensor]


def tensors(x: Batch) -> list[torch.Tensor]:
    return list(x.values()) if isinstance(x, dict) else [x]


def input_bytes(x: Batch) -> int:
    """Bytes of one input batch as the model receives it."""
    return sum(t.numel() * t.element_size() for t in tensors(x))


def loader_rate(loader: Any, passes: int = 1) -> tuple[float, tuple[Batch, torch.Tensor]]:
    """(median steady-state samples/s over ``passes`` epochs of ``loader``, its first batch ``(x, labels)``):
    one warm-up batch, then whole passes, augmentation as configured and no model. Each pass is timed from the
    batch after those its workers had built ahead (1 + workers x prefetch_factor batches) to its last, so that
    neither the start of an epoch nor the batches waiting when it starts (both large beside the 20-30 batches
    of the demo's small epochs) count, as they hardly do in ``benchmarks.run``'s epochs of about a second; a
    pass shorter than that is timed whole."""
    first = next(iter(loader))
    # batches the workers have built ahead when a pass's first batch arrives: not the rate of building them
    ahead = 1 + (getattr(loader, "num_workers", 0) or 0) * (getattr(loader, "prefetch_factor", 0) or 0)
    rates = []
    for _ in range(passes):
        start, t0, n, total, i = time.perf_counter(), None, 0, 0, 0
        for _, y in loader:
            total, i = total + len(y), i + 1
            if i == ahead:
                t0 = time.perf_counter()
            elif i > ahead:
                n += len(y)
        end = time.perf_counter()
        rates.append(n / (end - t0) if n else total / (end - start))  # a short pass: the whole pass
    return statistics.median(rates), first


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, x: Batch) -> int:
    """FLOPs of one forward pass over batch ``x`` (a multiply-add counts 2), as torch's FLOP counter
    attributes them to matmuls and convolutions; element-wise work is not counted."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
    return int(counter.get_total_flops())


def feature_bytes(model: nn.Module, x: Batch, y: torch.Tensor,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> int:
    """Bytes of the activations autograd saves for backward in one training forward pass (and the loss) over
    batch ``x``: every tensor packed by the saved-tensor hooks, counted once per storage (views of one storage,
    or one tensor saved by two operations, count once), the model's parameters and buffers excluded."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> Any:
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    was = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model(x), y)
        del loss  # nothing is kept: the graph dies here
    finally:
        model.train(was)
    return sum(storages.values())
