"""``LossyLoader``: the batched drop-in for a ``DataLoader`` over a :class:`LossyDataset`, with exact
mid-epoch resume (``state_dict`` / ``load_state_dict``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..cache import Traffic
from ..errors import LossyloadError, ShardError, WorkerError
from . import auto, plan
from .order import Segment, pending
from .dataset import LossyDataset
from .handover import Handover, slots_for
from .threads import thread_batches
from .watch import watching

log = logging.getLogger("lossyload")
STATE_VERSION = 2
_READABLE = (1, STATE_VERSION)  # version 1: the same without "segments"
TOPOLOGY = ("rank", "world_size", "num_workers", "batch_size")  # settings an elastic resume may change
MIX_SAMPLES = 256  # a shuffling loader's first samples, whose labels are checked once for class order


class LossyLoader:
    """Iterate ``(x, labels)`` batches (``(x, labels, keys)`` with ``return_keys``); batching happens inside
    the workers. Each full pass advances the epoch (or call ``set_epoch``). Skipped samples of the epoch are in
    ``skipped`` (``"url [key]: reason"``); across ranks, the number of decoded samples repeated in their place
    (to keep every rank's batch count equal) in ``padded``; in one process nothing is repeated and the epoch
    ends early, ``shortfall`` batches short of ``len(loader)``; all are logged as a warning when it ends. ``traffic`` counts the epoch's shard bytes
    fetched from the remote store and read from the node-local cache (:class:`lossyload.cache.Traffic`).

    ``state_dict()`` at any point between batches, then ``load_state_dict()`` on a loader over the same data
    and settings (in a new process, after a crash), continues the epoch with exactly the batches an
    uninterrupted run would have yielded next: same samples, same order, same augmentations. A state saved
    under another world size, number of workers or batch size (by any one rank: ranks move in lockstep) is an
    *elastic* resume: the samples no rank had delivered are shared out anew, each delivered once across the
    new ranks (plus the padding equal batches need). ``source_traffic`` and ``skipped_by_source`` split
    ``traffic`` and ``skipped`` by the sources of a mixture.
    """

    def __init__(self, dataset: LossyDataset, *, num_workers: int | str = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, return_keys: bool = False, worker_type: str = "process",
                 device: str | torch.device | None = None) -> None:
        num_workers, worker_type = auto.resolve(dataset, num_workers, worker_type)
        self.worker_type = worker_type  # "thread": workers are threads of this process (lossyload.loader.threads)
        self.dataset = dataset
        self.dataset.report = True
        if not len(dataset) and dataset.samples:  # as the DALI backend says too
            world = dataset.world or plan.World.detect()
            raise ShardError(f"{dataset.root}: {dataset.samples} samples over {world.world_size} rank(s) leave no "
                             f"full batch of {dataset.batch_size} (drop_last, the default with train=True): pass "
                             "drop_last=False to get the partial batch, or a smaller batch_size")
        self.num_workers = num_workers
        # ``device``: batches move there as the codec's stored integers (pinned, non-blocking) and ``finish``
        # runs there
        self.device = torch.device(device) if device is not None else None
        # process workers hand over the codec's wire form when this process can finish it in one numpy pass:
        # fewer bytes cross, and the work divides between the two processes (docs/batch-path.md)
        self.dataset.wire = self.device is not None or (num_workers > 0 and worker_type == "process"
                                                        and dataset.codec.finishes_arrays())
        self.pin_memory = pin_memory or (self.device is not None and self.device.type == "cuda")
        self.prefetch_factor = (prefetch_factor or auto.prefetch(dataset)) if num_workers else None
        self._dl: DataLoader | None = None  # the persistent process workers, started by the first pass
        self._dl_segments: list = []  # the epoch segments they were started with (see _from_processes)
        self.handover_mode = "slots"  # how their batches cross (lossyload.loader.handover.MODES)
        self._shards_hash: list[str] | None = None
        self._handover: Handover | None = None
        self.return_keys = return_keys
        self.epoch = 0
        self.skipped: list[str] = []
        self.padded = 0
        self.shortfall = 0  # batches fewer than len(self) in the last epoch (skips in one process)
        self.traffic = Traffic()
        self.source_traffic = {src.name: Traffic() for src in dataset.sources}
        # per worker: batches delivered, and the samples of its stream (read, shuffled) they consumed
        self._done = [[0, 0] for _ in range(max(1, num_workers))]
        self._ended: set[int] = set()  # workers whose share ran out before their plan (skips, one process)
        self._resuming = False  # set by load_state_dict: the next iteration continues the saved epoch
        self._first_labels: list[int] | None = []  # of the first samples delivered, until checked (then None)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def _host_finish(self) -> bool:
        """Whether process workers' batches arrive in the wire form and are finished here (then pinned)."""
        return self.device is None and self.dataset.wire_form()

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._done, self._ended = [[0, 0] for _ in self._done], set()
            self._fresh_epoch()
        self.epoch = epoch

    def _fresh_epoch(self) -> None:
        self.dataset.segments, self.dataset.pending = [], None

    @property
    def skipped_by_source(self) -> dict[str, int]:
        """How many of ``skipped`` each source contributed."""
        roots = [(src.name, src.root.rstrip("/") + "/") for src in self.dataset.sources]
        return {name: sum(s.startswith(root) for s in self.skipped) for name, root in roots}

    # -- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this loader stands: the epoch and, per worker, the batches delivered so far (JSON-friendly).
        After an epoch's last batch, the state is that of the next epoch's start."""
        epoch, done, skipped, padded = self.epoch, [list(d) for d in self._done], list(self.skipped), self.padded
        segments = [dataclasses.asdict(g) for g in self.dataset.segments]
        if any(self._planned_counts()) and all(d == n or w in self._ended  # after the last batch: the next
               for w, (d, n) in enumerate(zip(self._done_counts(), self._planned_counts()))):  # epoch's start
            epoch += 1
        if epoch != self.epoch:  # nothing of `epoch` delivered yet (``skipped`` would be the last epoch's)
            done, skipped, padded, segments = [[0, 0] for _ in self._done], [], 0, []
        elif not any(self._done_counts()) and not segments:
            done, skipped, padded = [[0, 0] for _ in self._done], [], 0
        return {"version": STATE_VERSION, "epoch": epoch, "workers": done, "skipped": skipped, "padded": padded,
                "segments": segments, "settings": self._settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a loader over the same data and settings; the
        world size, number of workers and batch size may differ: an elastic resume)."""
        if state.get("version") not in _READABLE:
            raise LossyloadError(f"loader state version {state.get('version')!r} is not {STATE_VERSION}")
        mine, saved = self._settings(), state["settings"]
        diff = {k: (v, mine.get(k)) for k, v in saved.items() if mine.get(k) != v and k not in TOPOLOGY}
        if diff:
            raise LossyloadError("loader state was saved with other settings; a resume (elastic in world size, "
                                 "workers and batch size only) needs the same "
                                 + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in sorted(diff.items())))
        ds = self.dataset
        segments = [Segment(g["world_size"], g["num_workers"], g["batch_size"], g["drop_last"],
                                  tuple(g["batches"])) for g in state.get("segments", [])]
        done = [[int(b), int(c)] for b, c in state["workers"]]
        same = all(saved.get(k) == mine.get(k) for k in TOPOLOGY[1:])
        if not same and (segments or any(b for b, _ in done)):  # elastic: the saved segment ends here
            segments.append(Segment(saved["world_size"], saved["num_workers"], saved["batch_size"] or 1,
                                          saved["drop_last"], tuple(b for b, _ in done)))
            done = [[0, 0] for _ in self._done]
        elif not same:
            done = [[0, 0] for _ in self._done]
        self.epoch = int(state["epoch"])
        ds.set_epoch(self.epoch)
        ds.segments = segments
        ds.pending = pending(ds.samples, segments, seed=ds.seed, epoch=self.epoch,
                                   shuffle_buffer=ds.shuffle_buffer)
        if same and saved.get("rank") != mine.get("rank"):  # another rank's stream positions: no skips assumed
            planned = self._planned_counts()
            bs = ds.batch_size or 1
            done = [[b, min(b * bs, planned[w] * bs)] for w, (b, _) in enumerate(done)]
        self._done = done
        self.skipped = list(state["skipped"])
        self.padded = int(state["padded"])
        self._resuming = True

    def _settings(self) -> dict[str, Any]:
        ds = self.dataset
        world = ds.world or plan.World.detect()
        if self._shards_hash is None:  # once: an index may list 100,000 shards (a mixture: one hash per source,
            self._shards_hash = [  # so an error names the one that changed)
                hashlib.sha256("".join(s.sha256 for s in src.index.shards).encode()).hexdigest()[:16]
                for src in ds.sources]
        shards: Any = self._shards_hash if ds.mixture else self._shards_hash[0]
        per = [(src.codec.name, json.loads(json.dumps(dataclasses.asdict(src.codec.options), default=str)),
                [_describe(t) for t in src.transforms]) for src in ds.sources]
        codec, options, transforms = (list(x) for x in zip(*per)) if ds.mixture else per[0]
        out = {"samples": ds.samples, "shards": shards, "codec": codec, "rank": world.rank,
               "world_size": world.world_size, "num_workers": max(1, self.num_workers), "batch_size": ds.batch_size,
               "seed": ds.seed, "shuffle": ds.shuffle, "shuffle_buffer": ds.shuffle_buffer, "drop_last": ds.drop_last,
               "batch_path": ds.batch_path, "options": options, "transforms": transforms}
        if ds.mixture:
            out["sources"] = [src.name for src in ds.sources]
            out["shares"] = list(ds.layout.counts)
        return out

    def _planned_counts(self) -> list[int]:
        """Batches per worker in an epoch."""
        ds, n = self.dataset, len(self._done)
        world = ds.world or plan.World.detect()
        return ds.worker_batches(plan.World(rank=world.rank, world_size=world.world_size, num_workers=n))

    def _done_counts(self) -> list[int]:
        return [b for b, _ in self._done]

    def _order(self) -> deque[int]:
        """The workers whose batches come next, in an uninterrupted epoch's order (round robin), less the
        batches already delivered."""
        n, counts = len(self._done), self._planned_counts()
        return deque(w for r in range(max(counts, default=0)) for w in range(n)
                     if self._done[w][0] <= r < counts[w])

    # -- iteration ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        ds = self.dataset
        ds.set_epoch(self.epoch)
        if not self._resuming:  # a fresh pass over the epoch (also after a loop left early)
            self._done = [[0, 0] for _ in self._done]
            self.skipped, self.padded = [], 0
            self._fresh_epoch()
        self._ended, self.shortfall = set(), 0
        self.traffic = Traffic()
        self.source_traffic = {src.name: Traffic() for src in ds.sources}
        self._resuming = False
        ds.resume = {w: (b, c) for w, (b, c) in enumerate(self._done) if b}
        order = self._order()
        if not self.num_workers:
            items: Iterator[Any] = iter(ds)
        elif self.worker_type == "thread":
            items = thread_batches(ds, self.num_workers, self.prefetch_factor, list(order))
        else:
            items = self._from_processes()
        waiting: dict[int, deque] = {w: deque() for w in range(len(self._done))}
        for item in items:
            if self.pin_memory and (self.worker_type == "thread" or not self.num_workers) and item[0] is not None:
                item = (_pinned(item[0]), item[1].pin_memory(), item[2])  # (processes: pinned by unpack)
            waiting[item[2]["worker"]].append(item)
            while order and waiting[order[0]]:  # deliver in the uninterrupted order
                xs, y, report = waiting[order.popleft()].popleft()
                self.skipped.extend(report["skipped"])
                self.padded += report["padded"]
                self.traffic.add(report.get("traffic"))
                for src, t in zip(ds.sources, report.get("source_traffic", ())):
                    self.source_traffic[src.name].add(t)
                if report.get("last"):  # the worker's share ran out early: its later turns are gone
                    self._ended.add(report["worker"])
                    order = deque(w for w in order if w != report["worker"])
                if xs is None:  # nothing was left for this turn
                    continue
                self._done[report["worker"]] = [report["batch"] + 1, report["consumed"]]
                if self.device is not None:
                    xs = {k: v.to(self.device, non_blocking=True) for k, v in xs.items()}
                    y = y.to(self.device, non_blocking=True)
                x, y = ds.output(xs, y)
                if self._host_finish and self.pin_memory:
                    x, y = _pinned(x), (y.pin_memory() if isinstance(y, torch.Tensor) else y)
                if self._first_labels is not None:
                    self._check_mix(y)
                yield (x, y, report["keys"]) if self.return_keys else (x, y)
        if self._first_labels:  # an epoch shorter than MIX_SAMPLES
            self._check_mix(None)
        stuck = {w: len(q) for w, q in waiting.items() if q}
        if stuck or order:
            raise LossyloadError(f"epoch {self.epoch}: worker batches out of plan (undelivered {stuck}, "
                                 f"{len(order)} expected batches missing)")
        self.shortfall = sum(self._planned_counts()) - sum(self._done_counts())  # this segment's plan
        if self.skipped:
            reasons = Counter(s.rsplit("]: ", 1)[-1].split(":")[0] for s in self.skipped)
            if self.padded:
                log.warning("epoch %d: skipped %d samples %s; %d repeated to keep batches equal across ranks",
                            self.epoch, len(self.skipped), dict(reasons), self.padded)
            else:
                log.warning("epoch %d: skipped %d samples %s; none repeated (one process): the epoch had %d "
                            "batches, %d fewer than len(loader)", self.epoch, len(self.skipped), dict(reasons),
                            len(self) - self.shortfall, self.shortfall)
        self.set_epoch(self.epoch + 1)
        ds.resume = {}

    def _from_processes(self) -> Iterator[Any]:
        """This pass's items from the persistent worker processes (started on the first pass), each copied
        out of its shared-memory slot as it arrives. Workers started under other epoch segments (an elastic
        resume, or the ordinary epoch after one) are restarted: their dataset copies hold the segments."""
        ds = self.dataset
        if self._dl is not None and self._dl_segments != ds.segments:
            self.close()
        if self._dl is None:
            self._handover = ds.handover = Handover(self.num_workers, slots_for(self.prefetch_factor),
                                                    self.handover_mode)
            self._dl = DataLoader(ds, batch_size=None, num_workers=self.num_workers, persistent_workers=True,
                                  prefetch_factor=self.prefetch_factor, collate_fn=_as_is)
            self._dl_segments = list(ds.segments)
        self._handover.publish(self.epoch, ds.resume)
        for item in _guarded(self._dl, self):
            yield from self._handover.unpack(item, self.pin_memory and not self._host_finish)

    def close(self) -> None:
        """Stop the worker processes now and release their slots (both happen anyway when the loader is
        garbage-collected); the next pass starts new ones."""
        dl, self._dl = self._dl, None
        self._handover = self.dataset.handover = None
        it = getattr(dl, "_iterator", None)
        if it is not None:
            it._shutdown_workers()
            dl._iterator = None

    def _check_mix(self, y: Any) -> None:
        """Once per loader: warn when the first samples of a shuffling loader are dominated by one label while
        the index lists several (shards written in class order: a shuffle buffer mixes only nearby samples)."""
        if y is not None and self.dataset.shuffle:
            self._first_labels.extend(torch.as_tensor(y).reshape(-1).tolist())  # type: ignore[union-attr]
            if len(self._first_labels) < MIX_SAMPLES:  # type: ignore[arg-type]
                return
        labels, self._first_labels = self._first_labels, None
        if labels and (found := dominated(labels, self.dataset.labels)):
            log.warning("%s: %s; the shards are probably in class order (written with --keep-order?): reshard "
                        "in the default shuffled order, or training sees class-sorted batches", self.dataset.root,
                        found)


def dominated(labels: list[int], names: list[str], group: int = 64) -> str | None:
    """What is wrong when one label holds more of each ``group`` of ``labels`` (a loader's first samples) than
    a shuffled set of ``names`` classes plausibly gives it: on average over half of a group, and over twice
    its even share (95% for two classes); None when the mix looks right, or with fewer than ``group`` samples."""
    groups = [labels[i:i + group] for i in range(0, len(labels) - group + 1, group)]
    if len(names) < 2 or not groups:
        return None
    tops = [Counter(g).most_common(1)[0] for g in groups]
    share = sum(n for _, n in tops) / (group * len(groups))
    if share <= max(0.5, min(2 / len(names), 0.95)):
        return None
    top = Counter(label for label, _ in tops).most_common(1)[0][0]
    name = names[top] if 0 <= top < len(names) else str(top)
    return (f"in each {group} of the first {group * len(groups)} samples one label holds {share:.0%} on average "
            f"(most often {name!r}), of {len(names)} labels in the index")


def _guarded(dl: DataLoader, loader: LossyLoader) -> Iterator[Any]:
    """The DataLoader's items; a worker that dies is a :class:`WorkerError` saying where the epoch stands,
    also when its death is noticed during the caller's training step (see :mod:`.watch`). The workers are
    then stopped: the next pass starts new ones."""
    items = iter(dl)  # starts the workers (and torch's SIGCHLD handler, which ``watching`` wraps)
    with watching() as w:
        while w.held is None:
            w.waiting = True
            try:
                item = next(items)
            except StopIteration:
                return
            except RuntimeError as exc:
                if "DataLoader worker" not in str(exc):
                    raise
                loader.close()
                raise _worker_error(exc, loader) from exc
            finally:
                w.waiting = False
            yield item
        held, w.held = w.held, None
        loader.close()
        raise _worker_error(held, loader) from held


def _worker_error(exc: RuntimeError, loader: LossyLoader) -> WorkerError:
    done = sum(b for b, _ in loader._done)
    return WorkerError(f"epoch {loader.epoch}: a loader worker died after {done} of {len(loader)} batches "
                       f"({exc}); state_dict() taken now resumes the epoch exactly")


def _pinned(x: Any) -> Any:
    return {k: v.pin_memory() for k, v in x.items()} if isinstance(x, dict) else x.pin_memory()


def _as_is(item: Any) -> Any:
    """The workers yield finished batches: no conversion pass over them (and their key lists)."""
    return item


def _describe(transform: Any) -> str:
    """A transform's settings, comparable across processes (its repr when a dataclass, else its type)."""
    return repr(transform) if dataclasses.is_dataclass(transform) else type(transform).__qualname__
