"""The loader's batch path (``lossyload.loader.batch``) against its per-sample path on the same shards: the
same samples in the same order, equal tensors where nothing is random, every bad sample inside a batch
skipped alone and counted, and exact resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard

from lossyload import World, make_loader
from lossyload.loader import batch
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader

from .conftest import build, rewrite
from .resume import batches, check_resume, same

pytestmark = pytest.mark.usefixtures("one_thread")

N = 30
BS = 4
CROP = 16


@pytest.fixture(scope="module")
def coef30(tmp_path_factory) -> Path:
    """30 samples of pre-extracted coefficients in 5 shards (7, 7, 7, 7, 2). Read-only."""
    return build(tmp_path_factory, "batch-coef", N, storage="coefficients")


@pytest.fixture
def damaged(coef30: Path, tmp_path: Path) -> Path:
    """A copy with three bad members: two in one batch-sized run of shard 1, one in shard 3."""
    ds = tmp_path / "ds"
    shutil.copytree(coef30, ds)
    broken = {"c008/img.dct.zst": lambda p: p[: len(p) // 2],  # truncated zstd frame
              "c009/img.dct.zst": lambda p: zstandard.ZstdCompressor().compress(b"LLD1" + bytes(40)),
              "c023/img.dct.zst": lambda p: b"not zstd"}
    for name in ("shard-000001.tar", "shard-000003.tar"):
        rewrite(ds / name, lambda ms: [(n, broken[n](d) if n in broken else d) for n, d in ms])
    return ds


def run(url: Path, **kw) -> tuple[list, LossyLoader]:
    kw.setdefault("options", {"crop": CROP})
    ld = make_loader(str(url), batch_size=BS, return_keys=True, shuffle_buffer=6, **kw)
    return batches(ld), ld


def test_the_batch_path_is_taken_for_fixed_size_codecs(coef30: Path, jpeg_ds: Path) -> None:
    coef = LossyDataset(str(coef30), options={"crop": CROP})
    assert batch.on_batch_path(coef.codec, coef.transforms)
    jpeg = LossyDataset(str(jpeg_ds), options={"crop": CROP})  # JPEG bytes: sizes known only after decoding
    assert not batch.on_batch_path(jpeg.codec, jpeg.transforms)
    assert not batch.on_batch_path(coef.codec, [lambda x, rng: x])  # a transform without a batch form


@pytest.mark.parametrize("train", [False, True])
def test_same_samples_and_order_as_the_per_sample_path(coef30: Path, train: bool) -> None:
    fast, _ = run(coef30, train=train)
    slow, _ = run(coef30, train=train, batch_path=False)
    assert [k for k, _, _ in fast] == [k for k, _, _ in slow]
    keys = [k for ks, _, _ in fast for k in ks]
    assert len(set(keys)) == len(keys) == (N - N % BS if train else N)  # train drops the last partial batch
    if not train:  # centre crops only: nothing random, so the tensors are the same too
        assert same(fast, slow)


def test_train_batches_are_deterministic_and_random(coef30: Path) -> None:
    a, _ = run(coef30, seed=3)
    b, _ = run(coef30, seed=3)
    assert same(a, b)
    flips = [x["y"] for _, x, _ in a]
    assert any(not torch.equal(f, g) for f, g in zip(flips, [x["y"] for _, x, _ in run(coef30, seed=4)[0]]))


@pytest.mark.parametrize("num_workers,world_size", [(0, 1), (2, 1), (0, 2)])
def test_a_bad_sample_inside_a_batch_skips_only_that_sample(damaged: Path, num_workers: int, world_size: int) -> None:
    ranks = [World(rank=r, world_size=world_size) for r in range(world_size)]
    fast, ld = zip(*(run(damaged, on_error="skip", num_workers=num_workers, train=False, drop_last=False, world=w)
                     for w in ranks))
    slow, ref = zip(*(run(damaged, on_error="skip", num_workers=num_workers, train=False, drop_last=False,
                          batch_path=False, world=w) for w in ranks))
    bad = {"c008/img", "c009/img", "c023/img"}
    assert all(same(f, s) for f, s in zip(fast, slow))
    keys = [k for f in fast for ks, _, _ in f for k in ks]
    assert set(keys) == {f"c{i:03d}/img" for i in range(N)} - bad
    assert sorted(s.split("[")[1].split("]")[0] for d in ld for s in d.skipped) == sorted(bad)
    assert [d.skipped for d in ld] == [d.skipped for d in ref]
    assert [d.padded for d in ld] == [d.padded for d in ref] == ([2, 1] if world_size == 2 else [0])
    assert len(keys) == (N if world_size == 2 else N - 3)  # across ranks padded back; in one process not


def test_raise_mode_names_the_shard_and_key(damaged: Path) -> None:
    with pytest.raises(Exception, match=r"shard-000001\.tar \[c008/img\]"):
        run(damaged, shuffle=False)


@pytest.mark.parametrize("stops", [None])
def test_every_stop_resumes_exactly_on_the_batch_path_with_skips(damaged: Path, stops) -> None:
    def make() -> LossyLoader:
        return LossyLoader(LossyDataset(str(damaged), batch_size=BS, options={"crop": CROP}, shuffle_buffer=6,
                                        on_error="skip", drop_last=False), return_keys=True)

    assert check_resume(make, stops=stops) == -(-(N - 3) // BS)  # one process: the 3 skips shorten the epoch


def test_pad_repeats_rows_like_the_per_sample_path() -> None:
    def built(keys: list[str]) -> batch.Built:
        return batch.Built({"x": np.array([int(k) for k in keys])}, np.arange(len(keys)), keys)

    out, added = batch.pad(built(["1", "2"]), built(["7", "8", "9"]), 6)
    pool = ["1", "2", "7", "8", "9"]  # the per-sample path: cur.append(pool[(want - len(cur)) % len(pool)])
    cur = ["1", "2"]
    while len(cur) < 6:
        cur.append(pool[(6 - len(cur)) % len(pool)])
    assert out.keys == cur and added == 4 and list(out.xs["x"]) == [int(k) for k in cur]


@pytest.mark.parametrize("size", [5, 128, 10_000])
def test_the_shuffle_buffer_delivers_at_a_bounded_fill(size: int) -> None:
    """A buffer larger than the data starts delivering once it holds ``SHUFFLE_START`` samples (the first
    batch does not wait for the whole set); the output is a permutation, a pure function of the seed."""
    from lossyload.loader.dataset import SHUFFLE_START, _shuffled

    pulled = []

    def src():
        for i in range(1000):
            pulled.append(i)
            yield i

    out = _shuffled(src(), size, np.random.default_rng(1))
    first = next(out)
    assert len(pulled) <= min(size, SHUFFLE_START) + 1
    rest = [first, *out]
    assert sorted(rest) == list(range(1000)) and rest != list(range(1000))
    assert rest == list(_shuffled(iter(range(1000)), size, np.random.default_rng(1)))
    assert rest != list(_shuffled(iter(range(1000)), size, np.random.default_rng(2)))
