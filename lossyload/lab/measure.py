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


def loader_rate(loader: Any, passes: int = 1, seconds: float = 1.0) -> tuple[float, tuple[Batch, torch.Tensor]]:
    """(median samples/s over ``passes`` measurements of ``loader``, its first batch ``(x, labels)``): one
    warm-up batch, then per measurement whole epochs, back to back, until ``seconds`` have passed, augmentation
    as configured and no model. A measurement is timed from its first batch (the batches the workers built
    ahead while the clock was stopped are the only ones not built at the measured rate: a few, beside a
    second's worth), so that the demo's small epochs (20-30 batches) are measured over about a second, as
    ``benchmarks.run`` measures epochs of about a second; epoch starts on the persistent workers count."""
    first = next(iter(loader))
    rates = []
    for _ in range(passes):
        t0, n = None, 0
        while t0 is None or time.perf_counter() - t0 < seconds:
            for _, y in loader:
                if t0 is None:
                    t0 = time.perf_counter()
                else:
                    n += len(y)
            if t0 is None:  # an empty epoch
                break
        if t0 is not None and n:
            rates.append(n / (time.perf_counter() - t0))
    return (statistics.median(rates) if rates else float("nan")), first


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
