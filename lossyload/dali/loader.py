"""``DaliLoader``: lossyload shards through an NVIDIA DALI pipeline, yielding the torch loader's batches."""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import LossyloadError, ShardError, require
from ..fs import check_inside, join, read_index
from ..integrity import file_digest
from ..loader import plan
from ..loader.resolve import resolve_codec
from ..loader.stream import ErrorPolicy
from . import graphs, index as dali_index
from .cached import cached_root

log = logging.getLogger("lossyload")
READER = "reader"
POLICY = None


class DaliLoader:
    """Iterate ``(x, labels)`` batches (``(x, labels, keys)`` with ``return_keys``) of a local shard set (or a
    remote one with ``cache_dir``: read from the node-local cache, see :mod:`lossyload.dali.cached`),
    decoded and augmented by a DALI pipeline: on the CPU with ``device_id=None``, on GPU ``device_id`` (mixed
    JPEG decoding, GPU operators; ``x`` is then a CUDA tensor) otherwise.

    Rank ``world.rank`` of ``world.world_size`` reads DALI shard ``shard_id=rank`` of ``num_shards=world_size``
    (contiguous, disjoint, together the whole index; DALI moves each rank to the next shard every epoch). Every
    rank has the same share (see :meth:`_plan`), so ``len()`` is the torch loader's batches per rank; the last
    batch is partial unless ``drop_last``. Samples that
    fail the up-front check (see :mod:`lossyload.dali.index`) raise at construction (``on_error="raise"``) or
    are left out and listed in ``skipped`` (``on_error="skip"``). Augmentation randomness is DALI's, seeded by
    ``seed``; DALI pipelines cannot resume mid-epoch (no ``state_dict``)."""

    def __init__(self, url: str, *, batch_size: int, codec: str | None = None, options: Any = None,
                 transforms: list | None = None, train: bool = True, shuffle: bool | None = None,
                 shuffle_buffer: int = 1000, seed: int = 0, drop_last: bool | None = None,
                 world: plan.World | None = None, on_error: str = "raise",
                 storage_options: dict[str, Any] | None = None, verify: bool = False,
                 device_id: int | str | None = "auto",
                 num_threads: int = 1, prefetch_queue_depth: int = 2, return_keys: bool = False,
                 index_dir: str | None = None, cache_dir: str | None = None,
                 cache_limit: int | str | None = None) -> None:
        self.root, self.index = read_index(url, storage_options)
        self.codec = resolve_codec(self.index, codec, options, self.root, storage_options)
        self.transforms = list(self.codec.default_transforms(train) if transforms is None else transforms)
        graphs.check(self.codec, self.transforms)
        require("nvidia.dali", "dali")
        # remote shards: fetched into the node-local cache and held there while this loader lives
        self.root, self._pins, self.traffic = cached_root(self.root, self.index, storage_options, cache_dir,
                                                          cache_limit)
        base = dali_index.local_root(self.root)
        if not self._pins:  # the dataset's own folder (a cache view links to the cache, by design)
            for s in self.index.shards:
                check_inside(base, os.path.join(base, s.url))
        ErrorPolicy(on_error)  # validate
        self.batch_size, self.return_keys, self.device_id = batch_size, return_keys, resolve_device(device_id)
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        w = world or plan.World.detect()
        self.shard_id, self.num_shards = w.rank, w.world_size
        if verify:
            self._verify(base)
        self._tmp = tempfile.TemporaryDirectory(prefix="lossyload-dali-")
        manifest, idx_dir = self._manifest(base, index_dir)
        problems = [f"{join(self.root, s.url)} [{k}]: {r}" for s in manifest.shards for k, r in s.problems]
        if problems and on_error == "raise":
            raise ShardError(f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        self.skipped: list[str] = problems
        shards = [s for s in manifest.shards if s.keys]
        if not shards:
            raise ShardError(f"{self.root}: no sample can be read ({len(problems)} left out)")
        tars = [os.path.join(base, s.url) for s in shards]
        self._keys = {(p, off): k for p, s in zip(tars, shards) for k, off in s.keys}
        self.samples = len(self._keys)
        self._paths, index_paths = self._plan(tars, [os.path.join(idx_dir, s.index) for s in shards])
        if not plan.batches_per_rank(self.samples, self.num_shards, batch_size, self.drop_last):
            raise ShardError(f"{self.root}: {self.samples} samples over {self.num_shards} ranks leave no full batch "
                             f"of {batch_size} (drop_last)")
        self._pipe = self._pipeline(index_paths, shuffle_buffer, seed, num_threads, prefetch_queue_depth)
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        names = ["x", "label"] + (["info"] if return_keys else [])
        policy = getattr(LastBatchPolicy, POLICY or ("DROP" if self.drop_last else "PARTIAL"))
        self._it = DALIGenericIterator(self._pipe, names, reader_name=READER, last_batch_policy=policy,
                                       auto_reset=True)
        self._dtype = graphs.torch_dtype(self.codec)
        self.epoch = 0
        self._open = False  # an epoch's loop was left early (DALI cannot restart an epoch)

    @property
    def labels(self) -> list[str]:
        return self.index.labels

    def __len__(self) -> int:
        return len(self._it)

    def _plan(self, tars: list[str], indexes: list[str]) -> tuple[list[str], list[str]]:
        """Tar paths and index files that give every rank the same number of samples, as the torch loader's
        plan does (``drop_last``: the remainder is left out; otherwise the list wraps around and a few samples
        from its start are read twice), so DALI's contiguous shards are equal and every rank yields the same
        batches: ``len(loader)``, the last one equally partial on every rank (never empty)."""
        rows: list[tuple[str, str]] = []
        for tar, idx in zip(tars, indexes):
            with open(idx) as f:
                rows += [(tar, line) for line in f.read().splitlines()[1:] if line.strip()]
        total = plan.samples_per_rank(len(rows), self.num_shards, self.drop_last) * self.num_shards
        segments: list[tuple[str, list[str]]] = []
        for i in range(total):
            tar, line = rows[i % len(rows)]
            if not segments or segments[-1][0] != tar or i % len(rows) == 0:
                segments.append((tar, []))
            segments[-1][1].append(line)
        paths, out = [], []
        for j, (tar, lines) in enumerate(segments):
            dest = os.path.join(self._tmp.name, f"plan-{j:06d}.idx")
            with open(dest, "w") as f:
                f.write(f"v1.2 {len(lines)}\n" + "".join(line + "\n" for line in lines))
            paths.append(tar)
            out.append(dest)
        return paths, out

    def _verify(self, base: str) -> None:
        for s in self.index.shards:
            with open(os.path.join(base, s.url), "rb") as f:
                problems = file_digest(f, s.bytes).problems(s.bytes, s.sha256, bounded=True)
            if problems:
                raise ShardError(f"{join(self.root, s.url)}: {problems[0]} (verify)")

    def _manifest(self, base: str, index_dir: str | None) -> tuple[dali_index.Manifest, str]:
        """The shard set's DALI index (``lossyload dali-index``), or one built now in a temporary directory."""
        idx_dir = index_dir or os.path.join(base, dali_index.INDEX_DIR)
        self.indexed_now = False
        manifest = dali_index.load(self.root, self.index, self.codec.name, idx_dir)
        if manifest is None:
            log.info("%s: no DALI index for codec %s; indexing the shards now (run 'lossyload dali-index' once "
                     "to skip this)", self.root, self.codec.name)
            self.indexed_now = True
            idx_dir = os.path.join(self._tmp.name, "index")
            manifest = dali_index.build(self.root, self.index, self.codec, idx_dir)
        return manifest, idx_dir

    def _pipeline(self, index_paths: list[str], shuffle_buffer: int, seed: int, num_threads: int, depth: int):
        from nvidia.dali import fn, pipeline_def

        @pipeline_def(batch_size=self.batch_size, num_threads=max(1, num_threads), device_id=self.device_id,
                      seed=seed, prefetch_queue_depth=depth)
        def pipe():
            payload, cls = fn.readers.webdataset(
                paths=self._paths, index_paths=index_paths, ext=[self.index.member, "cls"],
                dtypes=[graphs.member_dtype(self.codec), _uint8()], missing_component_behavior="error",
                shard_id=self.shard_id, num_shards=self.num_shards, random_shuffle=self.shuffle,
                initial_fill=max(1, shuffle_buffer), pad_last_batch=True, name=READER)
            x = graphs.output(self.codec, self.transforms, payload, self.device_id is not None)
            outs = [x, fn.pad(cls, fill_value=0)]
            if self.return_keys:
                outs.append(fn.pad(fn.get_property(payload, key="source_info"), fill_value=0))
            return tuple(outs)

        p = pipe()
        p.build()
        return p

    def set_epoch(self, epoch: int) -> None:
        """Recorded for logs only: DALI's shuffling and augmentation continue from ``seed`` across epochs."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        if self._open:  # the last loop was left early: DALI cannot restart an epoch, so its rest is read unseen
            for _ in iter(self._it.__next__, None):
                pass
        self._open = True
        for out in self._it:
            d = out[0]
            labels = torch.tensor([_int(row) for row in d["label"].numpy()], dtype=torch.int64)
            x = d["x"] if self._dtype is None else d["x"].to(self._dtype)
            if self.return_keys:
                yield x, labels, [self._key(row) for row in d["info"].numpy()]
            else:
                yield x, labels
        if self.skipped:
            reasons = Counter(s.rsplit("]: ", 1)[-1].split(":")[0] for s in self.skipped)
            log.warning("epoch %d: %d samples left out of the DALI index %s", self.epoch, len(self.skipped),
                        dict(reasons))
        self._open = False
        self.epoch += 1

    def _key(self, row) -> str:
        """The sample key of DALI's ``source_info`` (``<tar path>:<payload offset>:<member name>``)."""
        info = row.tobytes().rstrip(b"\0").decode("utf-8", "replace")
        for path in self._paths:
            if info.startswith(path + ":"):
                offset = info[len(path) + 1:].split(":", 1)[0]
                return self._keys[(path, int(offset))]
        raise ShardError(f"DALI reported a sample of an unknown shard: {info!r}")

    def close(self) -> None:
        """Remove the loader's temporary index files and release its cached shards (also done when it is
        garbage-collected)."""
        self._tmp.cleanup()
        for lock in self._pins:
            lock.close()


def _uint8():
    from nvidia.dali import types

    return types.UINT8


def _int(row) -> int:
    return int(row.tobytes().rstrip(b"\0").decode().strip())


def resolve_device(device_id: int | str | None) -> int | None:
    """``"auto"``: GPU 0 when torch sees a CUDA device, else the CPU (``None``); an int or None as given."""
    if device_id == "auto":
        return 0 if torch.cuda.is_available() else None
    if device_id is not None and not isinstance(device_id, int):
        raise LossyloadError(f"device_id must be 'auto', None (CPU) or a GPU index, got {device_id!r}")
    return device_id
