"""Process workers that persist across epochs, and batches handed over through a ring of shared memory.

The loader starts its worker processes once (torch ``DataLoader`` with ``persistent_workers``) and keeps them
for every later pass. What changes from one pass to the next - the epoch, and per worker the batches and
stream samples a resumed epoch has already delivered - is written by the main process into a small
shared-memory table before each pass (:meth:`Handover.publish`); a worker reads it when its pass starts
(:meth:`Handover.read`).

Batches cross in groups (:meth:`Handover.grouped`): every item put on torch's queue costs the worker about
0.4 ms of CPU (the queue's feeder thread, pickling, the index it waits for), as much as building a few
hundred small samples, so a worker sends what it built in about ``GROUP_SECONDS`` as one item (at most
``GROUP_BATCHES`` batches and about ``GROUP_BYTES``; a pass's first batch alone and its first groups shorter,
so the pass starts without a wait).

A group crosses without new shared memory: each worker owns ``slots`` preallocated shared-memory buffers
(all made on its first group and sent to the main process with it, so the shared memory and the descriptors a
loader holds do not grow later; a buffer too small for a group is replaced) and writes a group's arrays into
its lowest free slot; the item put on torch's queue carries only the slot number, the arrays' layout and the
batches' reports. The main
process copies the arrays out (:meth:`Handover.unpack`, into pinned memory when asked) and marks the slot
taken in another shared table, so the worker reuses a slot only after its previous group was copied. A slot
not yet taken is never waited for: with none free, the group is sent inline as plain arrays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from .batch import Built

ALIGN = 64  # bytes: each array of a group starts at a multiple of this in its slot
MODES = ("slots", "inline", "tensors")
GROUP_SECONDS = 0.01  # a worker sends the batches it built in about this long as one item
GROUP_BATCHES = 16  # and at most this many
GROUP_BYTES = 2 << 20  # or about this many bytes of arrays (a group is closed by the batch that reaches it)

Batch = tuple[Any, Any, dict]  # (outputs or None, labels or None, report): None when the worker's share ran out


class Handover:
    """The shared tables of ``workers`` persistent worker processes: pass state, slot registrations and
    taken marks, ``slots`` per worker. Made in the main process before the workers start (they inherit it).

    ``mode``: how groups cross. ``"slots"`` (the default): the ring above. ``"inline"``: every group's arrays
    pickled through torch's queue. ``"tensors"``: every batch as new shared-memory tensors, torch's own way
    (what a plain ``DataLoader`` does). The last two are kept for ``benchmarks.handover``, which measured them
    (``docs/batch-path.md``)."""

    def __init__(self, workers: int, slots: int, mode: str = "slots") -> None:
        if mode not in MODES:
            raise ValueError(f"hand-over mode must be one of {MODES}, got {mode!r}")
        self.workers, self.slots, self.mode = workers, slots, mode
        # [epoch, then per worker: batches delivered, stream samples consumed]
        self.state = torch.zeros(1 + 2 * workers, dtype=torch.int64).share_memory_()
        # per (worker, slot): the number of the last group the main process copied out, and the version of the
        # slot buffer it holds
        self.taken = torch.full((workers, slots), -1, dtype=torch.int64).share_memory_()
        self.registered = torch.zeros((workers, slots), dtype=torch.int64).share_memory_()
        self._tables: tuple[np.ndarray, np.ndarray] | None = None  # numpy views of the two (cheaper to index)
        # worker side (its own copy after the fork)
        self._ring: list[torch.Tensor | None] = [None] * slots
        self._version = [0] * slots
        self._written: list[int | None] = [None] * slots
        self._sent: set[tuple[int, int]] = set()  # (slot, version) sent this pass
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
        self._sent = set()  # an earlier pass's items may have been dropped unread: send the buffers again
        resume = {w: (s[1 + 2 * w], s[2 + 2 * w]) for w in range(self.workers) if s[1 + 2 * w]}
        return s[0], resume

    # -- a group: packed by the worker, unpacked by the main process ---------------------------------------
    def grouped(self, worker: int, batches: Iterable[tuple[Built | None, dict]]) -> Iterator[tuple]:
        """Worker ``worker``'s ``(batch or None, report)`` pairs packed in groups: the first alone, then what
        was built in 1/8, 1/4, 1/2 of ``GROUP_SECONDS`` and from then on in about ``GROUP_SECONDS`` (at most
        ``GROUP_BATCHES`` batches, about ``GROUP_BYTES``), so a pass's first batches arrive without a wait."""
        group: list[tuple[Built | None, dict]] = []
        start, budget, size = time.perf_counter(), 0.0, 0
        for built, report in batches:
            group.append((built, report))
            size += 0 if built is None else sum(v.nbytes for v in built.xs.values()) + built.labels.nbytes
            if len(group) >= GROUP_BATCHES or size >= GROUP_BYTES or time.perf_counter() - start >= budget:
                yield self.pack(worker, group)
                group, size = [], 0
                budget = min(GROUP_SECONDS, max(2 * budget, GROUP_SECONDS / 8))  # the pipeline fills at once
                start = time.perf_counter()
        if group:
            yield self.pack(worker, group)

    def pack(self, worker: int, group: list[tuple[Built | None, dict]]) -> tuple:
        """One item of a group of ``(batch or None, report)`` pairs."""
        if self.mode == "tensors":
            return ("tensors", [(None, None, r) if b is None else
                                ({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.xs.items()},
                                 torch.from_numpy(b.labels), r) for b, r in group])
        arrays = [None if b is None else
                  [(k, np.ascontiguousarray(v)) for k, v in b.xs.items()] + [("", b.labels)] for b, _ in group]
        reports = [r for _, r in group]
        s = None if self.mode == "inline" else self._free(worker)
        if s is None:  # no slot whose last group was copied out
            return ("inline", [(None, None, r) if a is None else (dict(a[:-1]), a[-1][1], r)
                               for a, r in zip(arrays, reports)])
        size, layouts = 0, []
        for batch in arrays:
            layout = None if batch is None else []
            for name, a in batch or ():
                layout.append((name, a.dtype.str, a.shape, size))  # type: ignore[union-attr]
                size += -(-a.nbytes // ALIGN) * ALIGN
            layouts.append(layout)
        room = max(size, min(2 * size, GROUP_BYTES))  # for a group like this one and the next, a little larger
        for k in range(self.slots) if self._ring[s] is None else (s,):  # the first group makes them all
            if self._ring[k] is None or self._ring[k].numel() < size:  # type: ignore[union-attr]
                self._ring[k] = torch.empty(room, dtype=torch.uint8).share_memory_()
                self._version[k] += 1
        buf = self._ring[s].numpy()  # type: ignore[union-attr]
        for batch, layout in zip(arrays, layouts):
            for (_, a), (_, _, _, off) in zip(batch or (), layout or ()):
                buf[off : off + a.nbytes] = a.reshape(-1).view(np.uint8)
        n, self._count = self._count, self._count + 1
        self._written[s] = n
        registered = self._views()[1]
        send = [(k, v, self._ring[k]) for k, v in enumerate(self._version)
                if v and registered[worker, k] != v and (k, v) not in self._sent]
        self._sent.update((k, v) for k, v, _ in send)
        return ("slot", worker, s, n, self._version[s], send, layouts, reports)

    def _free(self, worker: int) -> int | None:
        """The lowest slot free to write: never written this pass, or its last group copied out."""
        taken = self._views()[0]
        for s, prev in enumerate(self._written):
            if prev is None or taken[worker, s] == prev:
                return s
        return None

    def unpack(self, item: tuple, pin: bool = False) -> list[Batch]:
        """The ``(outputs, labels, report)`` of each batch of a packed group, copied out of its slot (into
        pinned memory with ``pin``); the slot is then marked taken."""
        if item[0] == "inline":
            return [(None, None, r) if xs is None else ({k: _tensor(v, pin) for k, v in xs.items()},
                                                        _tensor(labels, pin), r) for xs, labels, r in item[1]]
        if item[0] == "tensors":
            return item[1] if not pin else [(None, None, r) if xs is None else
                                            ({k: v.pin_memory() for k, v in xs.items()}, labels.pin_memory(), r)
                                            for xs, labels, r in item[1]]
        _, w, s, n, version, sent, layouts, reports = item
        taken, registered = self._views()
        for k, v, ring in sent:  # buffers made or replaced since the last item
            self._held[(w, k)] = (v, ring.numpy())
            registered[w, k] = v
        held_version, buf = self._held[(w, s)]
        if held_version != version:
            raise RuntimeError(f"loader worker {w}: slot {s} version {version} was never received")
        out: list[Batch] = []
        for layout, report in zip(layouts, reports):
            if layout is None:
                out.append((None, None, report))
                continue
            xs = {}
            for name, dtype, shape, off in layout:
                dt = np.dtype(dtype)
                count = int(np.prod(shape, dtype=np.int64))
                xs[name] = _tensor(buf[off : off + count * dt.itemsize].view(dt).reshape(shape), pin)
            labels = xs.pop("")
            out.append((xs, labels, report))
        taken[w, s] = n
        return out

    def _views(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tables is None:
            self._tables = (self.taken.numpy(), self.registered.numpy())
        return self._tables


def slots_for(prefetch_factor: int) -> int:
    """Slots per worker that leave none of its groups inline: torch holds up to ``prefetch_factor`` items
    of a worker, the main process copies one out, the worker fills one."""
    return prefetch_factor + 2


def _tensor(a: np.ndarray, pin: bool) -> torch.Tensor:
    """A tensor holding a copy of ``a`` (pinned with ``pin``)."""
    if not pin:
        return torch.from_numpy(a.copy())  # numpy's copy: one memcpy on this thread (torch's may fan out)
    out = torch.empty(a.shape, dtype=torch.from_numpy(a[:0]).dtype, pin_memory=True)
    out.numpy()[...] = a
    return out
