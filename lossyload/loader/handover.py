"""Process workers that persist across epochs, and batches handed over through a ring of shared memory.

The loader starts its worker processes once (torch ``DataLoader`` with ``persistent_workers``) and keeps them
for every later pass. What changes from one pass to the next - the epoch, and per worker the batches and
stream samples a resumed epoch has already delivered - is written by the main process into a small
shared-memory table before each pass (:meth:`Handover.publish`); a worker reads it when its pass starts
(:meth:`Handover.read`).

A batch crosses the process boundary without new shared memory per batch: each worker owns ``slots``
preallocated shared-memory buffers (made on its first batch, sized to it, sent to the main process once) and
writes each finished batch's arrays into the next slot; the item put on torch's queue carries only the slot
number, the arrays' layout and the batch's report. The main process copies the arrays out of the slot at once
(:meth:`Handover.unpack`, into pinned memory when asked) and marks the slot taken in another shared table,
so the worker reuses a slot only after its previous batch was copied. A slot not yet taken (which torch's
bounded prefetching makes rare) is never waited for: that batch is sent inline as plain arrays instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .batch import Built

ALIGN = 64  # bytes: each array of a batch starts at a multiple of this in its slot


MODES = ("slots", "inline", "tensors")


class Handover:
    """The shared tables of ``workers`` persistent worker processes: pass state, slot registrations and
    taken marks. Made in the main process before the workers start (they inherit it).

    ``mode``: how batches cross. ``"slots"`` (the default): the ring above. ``"inline"``: every batch's arrays
    pickled through torch's queue. ``"tensors"``: every batch as new shared-memory tensors, torch's own way
    (what a plain ``DataLoader`` does). The last two are kept for ``benchmarks.handover``, which measured them
    (``docs/batch-path.md``)."""

    def __init__(self, workers: int, slots: int, mode: str = "slots") -> None:
        if mode not in MODES:
            raise ValueError(f"hand-over mode must be one of {MODES}, got {mode!r}")
        self.workers, self.slots, self.mode = workers, slots, mode
        # [epoch, then per worker: batches delivered, stream samples consumed]
        self.state = torch.zeros(1 + 2 * workers, dtype=torch.int64).share_memory_()
        # per (worker, slot): the number of the last batch the main process copied out, and the version of the
        # slot buffer it holds
        self.taken = torch.full((workers, slots), -1, dtype=torch.int64).share_memory_()
        self.registered = torch.zeros((workers, slots), dtype=torch.int64).share_memory_()
        self._tables: tuple[np.ndarray, np.ndarray] | None = None  # numpy views of the two (cheaper to index)
        # worker side (its own copy after the fork)
        self._ring: list[torch.Tensor | None] = [None] * slots
        self._version = [0] * slots
        self._written: list[int | None] = [None] * slots
        self._count = 0
        # main side
        self._held: dict[tuple[int, int], tuple[int, np.ndarray]] = {}

    # -- the pass: main process writes, workers read ------------------------------------------------------
    def publish(self, epoch: int, resume: dict[int, tuple[int, int]]) -> None:
        values = [epoch] + [v for w in range(self.workers) for v in resume.get(w, (0, 0))]
        self.state.copy_(torch.tensor(values, dtype=torch.int64))

    def read(self) -> tuple[int, dict[int, tuple[int, int]]]:
        """``(epoch, resume)`` of the pass starting now. Every item of an earlier pass has left the queue by
        the time a pass's first batch is asked for (torch drains it), so all slots are free again."""
        s = self.state.tolist()
        self._written = [None] * self.slots
        resume = {w: (s[1 + 2 * w], s[2 + 2 * w]) for w in range(self.workers) if s[1 + 2 * w]}
        return s[0], resume

    # -- a batch: packed by the worker, unpacked by the main process --------------------------------------
    def pack(self, worker: int, built: Built, report: dict[str, Any]) -> tuple:
        arrays = [(k, np.ascontiguousarray(v)) for k, v in built.xs.items()] + [("", built.labels)]
        offsets, size = [], 0
        for _, a in arrays:
            offsets.append(size)
            size += -(-a.nbytes // ALIGN) * ALIGN
        taken, registered = self._views()
        n, self._count = self._count, self._count + 1
        s = n % self.slots
        if self.mode == "tensors":
            return ("tensors", {k: torch.from_numpy(a) for k, a in arrays[:-1]}, torch.from_numpy(built.labels),
                    report)
        prev = self._written[s]
        if self.mode == "inline" or prev is not None and taken[worker, s] != prev:  # last batch not copied yet
            return ("inline", dict(arrays[:-1]), arrays[-1][1], report)
        ring = self._ring[s]
        if ring is None or ring.numel() < size:
            ring = self._ring[s] = torch.empty(size, dtype=torch.uint8).share_memory_()
            self._version[s] += 1
        buf = ring.numpy()
        layout = []
        for (name, a), off in zip(arrays, offsets):
            buf[off : off + a.nbytes] = a.reshape(-1).view(np.uint8)
            layout.append((name, a.dtype.str, a.shape, off))
        self._written[s] = n
        send = ring if registered[worker, s] != self._version[s] else None
        return ("slot", worker, s, n, self._version[s], send, layout, report)

    def unpack(self, item: tuple, pin: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
        """``(outputs, labels, report)`` of a packed batch, copied out of its slot (into pinned memory with
        ``pin``); the slot is then marked taken."""
        if item[0] is None:  # no batch: the worker's share ran out (its report says so)
            return item
        if item[0] == "inline":
            _, xs, labels, report = item
            out = {k: _tensor(v, pin) for k, v in xs.items()}
            return out, _tensor(labels, pin), report
        if item[0] == "tensors":
            _, xs, labels, report = item
            return ({k: v.pin_memory() for k, v in xs.items()}, labels.pin_memory(), report) if pin else item[1:]
        _, w, s, n, version, sent, layout, report = item
        taken, registered = self._views()
        if sent is not None:
            self._held[(w, s)] = (version, sent.numpy())
            registered[w, s] = version
        held_version, buf = self._held[(w, s)]
        if held_version != version:
            raise RuntimeError(f"loader worker {w}: slot {s} version {version} was never received")
        out = {}
        for name, dtype, shape, off in layout:
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = _tensor(buf[off : off + count * dt.itemsize].view(dt).reshape(shape), pin)
        taken[w, s] = n
        labels = out.pop("")
        return out, labels, report

    def _views(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tables is None:
            self._tables = (self.taken.numpy(), self.registered.numpy())
        return self._tables


def _tensor(a: np.ndarray, pin: bool) -> torch.Tensor:
    """A tensor holding a copy of ``a`` (pinned with ``pin``)."""
    if not pin:
        return torch.from_numpy(a.copy())  # numpy's copy: one memcpy on this thread (torch's may fan out)
    out = torch.empty(a.shape, dtype=torch.from_numpy(a[:0]).dtype, pin_memory=True)
    out.numpy()[...] = a
    return out
