"""A bounded soak: many epochs of a small damaged set with 2 persistent loader workers (started by the first
epoch, serving every later one), some epochs left early. After a warm-up, the main process's open file
descriptors, threads and memory stay flat, the same two workers serve every epoch and none outlives
``loader.close()``, and every epoch's accounting is the same (no skip list growing across epochs). ``-s``
shows the per-epoch table."""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lossyload import make_loader

from .conftest import build

pytestmark = pytest.mark.usefixtures("one_thread")

N = 21  # 3 shards of 7: c000/img .. c020/img
BAD = "c009/img"  # its JPEG bytes are garbage: one skip per epoch (one process: nothing repeated)
EPOCHS = 80
ABANDON = 6  # every 6th epoch the loop leaves after 2 batches
WARMUP = 2  # epochs 0..1; epoch 2 is the reference
MB = 1 << 20


@pytest.fixture(scope="module")
def soak_ds(tmp_path_factory) -> Path:
    ds = build(tmp_path_factory, "soak", N)
    path = ds / "shard-000001.tar"
    with tarfile.open(path) as tar:
        m = tar.getmember(BAD + ".jpg")
    raw = bytearray(path.read_bytes())
    raw[m.offset_data : m.offset_data + m.size] = b"\0" * m.size
    path.write_bytes(bytes(raw))
    return ds


@dataclass(frozen=True)
class Snapshot:
    maxrss: int  # bytes: peak resident set of this process so far
    rss: int  # bytes: resident set now
    fds: int
    threads: int
    children: int  # child processes that were not there before the soak
    extra_threads: int  # threads alive that were not before the soak


def _vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass(frozen=True)
class Before:
    """What the process ran before the soak (other tests' servers, say): not counted as the loader's."""

    threads: frozenset[threading.Thread]
    children: frozenset[int]

    @classmethod
    def now(cls) -> Before:
        return cls(frozenset(threading.enumerate()), frozenset(p.pid for p in multiprocessing.active_children()))

    def new_children(self) -> int:
        return sum(p.pid not in self.children for p in multiprocessing.active_children())


def snapshot(before: Before) -> Snapshot:
    threads = threading.enumerate()
    return Snapshot(maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss=_vm_rss(),
                    fds=len(os.listdir("/proc/self/fd")), threads=len(threads), children=before.new_children(),
                    extra_threads=sum(t not in before.threads for t in threads))


def settle(initial: Before, ref: Snapshot | None, children: int = 0,
           seconds: float = 3.0) -> tuple[Snapshot, float]:
    """``(state, seconds waited)`` once ``children`` workers are left (and, with ``ref``, its descriptors and
    threads): the queue feeder threads of a closed DataLoader exit (and its pipes close) a moment after it
    closes. Half a second in, the garbage collector is run once (a full collection costs ~0.2 s here, too
    much for every epoch). A leak never settles: after ``seconds`` the state is taken as it is."""
    t0 = time.monotonic()
    collected = False
    while True:
        s = snapshot(initial)
        waited = time.monotonic() - t0
        done = s.children == children and (ref is None or (s.fds, s.extra_threads) == (ref.fds, ref.extra_threads))
        if (done and (children or s.extra_threads == 0)) or waited > seconds:
            return s, waited
        if waited > 0.5 and not collected:
            gc.collect()
            collected = True
        time.sleep(0.01)


def test_soak_resources_stay_flat(soak_ds: Path):
    ld = make_loader(str(soak_ds), batch_size=4, num_workers=2, seed=7, drop_last=False, on_error="skip",
                     return_keys=True)
    want = {f"c{i:03d}/img" for i in range(N)} - {BAD}
    initial = Before.now()
    before, _ = settle(initial, None)
    rows: list[tuple] = []
    ref: Snapshot | None = None
    t_all = time.monotonic()
    workers: set[int] = set()
    for ep in range(EPOCHS):
        abandon = ep % ABANDON == ABANDON - 1
        t0 = time.monotonic()
        keys: list[str] = []
        alive = 0
        for b, batch in enumerate(ld):
            keys += batch[2]
            if b == 0:
                alive = initial.new_children()
                workers |= {p.pid for p in multiprocessing.active_children()} - initial.children
            if abandon and b == 1:
                break
        del batch  # the last batch's tensors: not the loader's to free
        seconds = time.monotonic() - t0
        s, waited = settle(initial, ref, children=2)
        accounting = (len(set(keys)), len(keys), len(ld.skipped), ld.padded, set(keys) <= want)
        rows.append((ep, abandon, seconds, waited, alive, accounting, s))
        if ep == WARMUP:
            ref = s
    elapsed = time.monotonic() - t_all

    print(f"\nsoak: {EPOCHS} epochs in {elapsed:.1f} s (before: rss {before.rss / MB:.1f} MB, fds {before.fds}, "
          f"threads {before.threads})")
    print(" epoch  left   secs  settle  workers  keys  skip  pad  maxrss_MB  rss_MB  fds  threads  children")
    for ep, abandon, seconds, waited, alive, (distinct, _, skipped, padded, _), s in rows:
        print(f" {ep:5d}  {'early' if abandon else '':5s} {seconds:5.2f}  {waited:6.2f}  {alive:7d}  {distinct:4d}  "
              f"{skipped:4d}  {padded:3d}  {s.maxrss / MB:9.1f}  {s.rss / MB:6.1f}  {s.fds:3d}  {s.threads:7d}  "
              f"{s.children:8d}")

    assert [alive for *_, alive, _, _ in rows] == [2] * EPOCHS  # both workers ran every epoch ...
    assert [s.children for *_, s in rows] == [2] * EPOCHS and len(workers) == 2  # ... the same two, kept
    for ep, abandon, *_, (distinct, total, skipped, padded, known), _ in rows:
        # the same accounting every full epoch: nothing carried over from the one before
        assert known and (distinct, total) == ((8, 8) if abandon else (N - 1, N - 1)), f"epoch {ep}"
        assert abandon or (skipped, padded) == (1, 0), f"epoch {ep}"
    assert len(ld.skipped) == 1 and f"[{BAD}]: DecodeError" in ld.skipped[0]
    assert ld.epoch == EPOCHS - EPOCHS // ABANDON  # epochs left early are run again, not counted
    after = [s for ep, *_, s in rows if ep >= WARMUP]
    assert ref is not None
    assert [(s.fds, s.threads, s.extra_threads) for s in after] == [(ref.fds, ref.threads, ref.extra_threads)] * len(after)
    ld.close()
    closed, _ = settle(initial, None)
    assert closed.children == 0 and closed.extra_threads == 0  # nothing outlives close()
    assert (closed.fds, closed.threads) == (before.fds, before.threads)
    grown = max(s.rss for s in after) - ref.rss
    assert grown < 16 * MB, f"resident set grew by {grown / MB:.1f} MB over {len(after)} epochs"
    peak = after[-1].maxrss - ref.maxrss
    assert peak < 16 * MB, f"peak resident set grew by {peak / MB:.1f} MB over {len(after)} epochs"
