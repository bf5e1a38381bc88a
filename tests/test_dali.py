"""The DALI backend on the CPU (real DALI, no GPU): the same tensors as the torch loader for ``vae`` and ``rgb``,
known epoch lengths, disjoint shards per rank, augmentations, up-front checks of bad samples, DALI index files,
and clear errors for codecs without a DALI form, remote URLs and a missing DALI."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

import lossyload
from lossyload.augment import dct, latent, rgb
from lossyload.cli import main
from lossyload.errors import DaliUnsupportedError, LossyloadError, ShardError
from lossyload.loader import plan
from lossyload.loader.plan import World
from lossyload.shard import ShardJob, run_job

from .conftest import make_image_folder
from .loader.conftest import rewrite

pytestmark = pytest.mark.usefixtures("one_thread")
N = 11  # samples in every set: 6 + 5 images, in shards of 4 (4 + 4 + 3)
VAE = {"model": "random:tiny", "resolution": 32, "fit_samples": 8}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dali")
    src = make_image_folder(root / "src", {"a": 6, "b": 5}, size=(40, 48))
    configs = {"int8": ("vae", {**VAE, "views": 2, "store_std": True}), "float16": ("vae", {**VAE, "storage": "float16"}),
               "jpeg": ("jpeg-dct", {})}
    for name, (codec, config) in configs.items():
        run_job(ShardJob(src=str(src), dest=str(root / name), codec=codec, config=config, maxcount=4, progress=False))
    return {name: root / name for name in configs}


def by_key(url: Path, backend: str, **kw) -> dict[str, torch.Tensor]:
    """Every sample of one epoch (no shuffle, no augmentation unless given), by key."""
    kw = {"train": False, "shuffle": False, "transforms": [], **kw}
    out = {}
    for x, _, keys in lossyload.make_loader(str(url), batch_size=4, return_keys=True, backend=backend, **kw):
        for k, xi in zip(keys, x):
            assert k not in out
            out[k] = xi
    return out


def assert_same(url: Path, **kw) -> dict[str, torch.Tensor]:
    ref, got = by_key(url, "torch", **kw), by_key(url, "dali", **kw)
    assert len(ref) == N and sorted(got) == sorted(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k]), k
    return got


# ------------------------------------------------------------------------------------------- same tensors
@pytest.mark.parametrize("name,options,transforms", [
    ("int8", None, []),
    ("int8", {"scaled": False, "dtype": "float16"}, []),
    ("int8", None, [latent.View(index=1), latent.CenterCrop(size=3)]),
    ("float16", None, []),
    ("float16", None, [latent.HFlip(p=1.0)]),
])
def test_vae_is_exactly_the_torch_loader(sets, name, options, transforms) -> None:
    got = assert_same(sets[name], options=options, transforms=transforms)
    assert next(iter(got.values())).shape == ((4, 3, 3) if transforms and name == "int8" else (4, 4, 4))


def test_view_and_plane_matter(sets) -> None:  # the comparison above can fail: another view is another tensor
    a = by_key(sets["int8"], "dali", transforms=[latent.View(index=0)])
    b = by_key(sets["int8"], "dali", transforms=[latent.View(index=1)])
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("transforms", [[], [rgb.HFlip(p=1.0)]])
def test_rgb_is_exactly_the_torch_loader(sets, transforms) -> None:
    """DALI's CPU JPEG decoder is libjpeg-turbo like simplejpeg (same IDCT and upsampling): pixels are equal,
    and the normalization uses the same float32 constants, so the tensors are equal (resize-free settings)."""
    got = assert_same(sets["jpeg"], codec="rgb", transforms=transforms)
    assert next(iter(got.values())).shape == (3, 40, 48)


# ------------------------------------------------------------------------------------------- epochs, shards
@pytest.mark.parametrize("bs,drop_last", [(4, False), (4, True), (11, False), (5, True)])
def test_epochs_have_a_known_length(sets, bs, drop_last) -> None:
    ld = lossyload.make_loader(str(sets["int8"]), batch_size=bs, backend="dali", drop_last=drop_last, seed=3,
                               return_keys=True)
    want = N // bs if drop_last else math.ceil(N / bs)
    assert len(ld) == want
    for _ in range(2):
        batches = list(ld)
        assert len(batches) == want
        keys = [k for _, _, ks in batches for k in ks]
        assert len(set(keys)) == len(keys) == (want * bs if drop_last else N)
        assert all(len(y) == bs for _, y, _ in batches[:-1]) and all(x.shape[0] == len(y) for x, y, _ in batches)


def test_a_loop_left_early_is_followed_by_a_full_pass(sets) -> None:
    """As with the torch loader, the next loop after a ``break`` is a whole epoch, not the rest of one."""
    ld = lossyload.make_loader(str(sets["int8"]), batch_size=4, backend="dali", seed=3, return_keys=True)
    for _ in ld:
        break
    keys = [k for _, _, ks in ld for k in ks]
    assert len(ld) == N // 4 and len(keys) == len(set(keys)) == 4 * len(ld)  # drop_last (train=True)
    assert len(list(ld)) == len(ld)


@pytest.mark.parametrize("world_size,drop_last", [(2, False), (3, False), (2, True), (3, True)])
def test_ranks_read_the_torch_loaders_shares(sets, world_size, drop_last) -> None:
    """Without shuffling, rank r reads exactly the samples the torch loader gives rank r: disjoint shares
    covering the set (``drop_last``: less the remainder; otherwise a few samples from the start read twice)."""
    seen: list[str] = []
    for rank in range(world_size):
        kw = dict(batch_size=2, codec="rgb", train=False, drop_last=drop_last, return_keys=True,
                  world=World(rank=rank, world_size=world_size))
        ld = lossyload.make_loader(str(sets["jpeg"]), backend="dali", **kw)
        keys = [k for _, _, ks in ld for k in ks]
        ref = lossyload.make_loader(str(sets["jpeg"]), **kw)
        assert sorted(keys) == sorted(k for _, _, ks in ref for k in ks) and len(ld) == len(ref)
        seen += keys
    n = plan.batches_per_rank(N, world_size, 2, True) * 2 if drop_last else plan.samples_per_rank(N, world_size, False)
    assert len(seen) == world_size * n
    assert len(set(seen)) == (len(seen) if drop_last else N)


@pytest.mark.parametrize("world_size,bs", [(2, 2), (2, 4), (2, 5), (3, 3)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_rank_yields_the_same_batches_every_epoch(sets, world_size, bs, drop_last) -> None:
    sizes = []
    for rank in range(world_size):
        ld = lossyload.make_loader(str(sets["int8"]), batch_size=bs, backend="dali", drop_last=drop_last,
                                   world=World(rank=rank, world_size=world_size))
        assert len(ld) == plan.batches_per_rank(N, world_size, bs, drop_last)
        sizes += [[len(y) for _, y in ld] for _ in range(2)]  # two epochs (DALI moves ranks between shards)
    assert all(s == sizes[0] for s in sizes) and len(sizes[0]) == len(ld) and 0 not in sizes[0]
    assert sum(sizes[0]) == (len(ld) * bs if drop_last else plan.samples_per_rank(N, world_size, False))


def test_labels_match_the_torch_loader(sets) -> None:
    def labels(backend):
        ld = lossyload.make_loader(str(sets["int8"]), batch_size=4, backend=backend, train=False, return_keys=True)
        return {k: int(v) for _, y, ks in ld for k, v in zip(ks, y)}

    got = labels("dali")
    assert got == labels("torch") and set(got.values()) == {0, 1}


# ------------------------------------------------------------------------------------------- augmentations
def test_vae_training_augmentations(sets) -> None:
    full = by_key(sets["int8"], "torch", transforms=[latent.View(index=0)])
    crops = by_key(sets["int8"], "dali", transforms=[latent.RandomCrop(size=2), latent.HFlip(p=1.0)])
    for k, x in crops.items():  # a flipped 2x2 window of the full latent, somewhere
        flipped = full[k].flip(-1)
        windows = [flipped[:, i:i + 2, j:j + 2] for i in range(3) for j in range(3)]
        assert x.shape == (4, 2, 2) and any(torch.equal(x, w) for w in windows), k
    noisy = by_key(sets["int8"], "dali", transforms=[latent.View(index=0), latent.GaussianNoise(sigma=0.01)])
    diff = torch.stack([noisy[k] - full[k] for k in full])
    assert 0.005 < float(diff.std()) < 0.02
    post = by_key(sets["int8"], "dali", transforms=[latent.View(index=0), latent.PosteriorSample()])
    assert all(post[k].shape == full[k].shape and not torch.equal(post[k], full[k]) for k in full)
    train = lossyload.make_loader(str(sets["int8"]), batch_size=4, backend="dali")  # the codec's defaults
    x, y = next(iter(train))
    assert x.shape == (4, 4, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_rgb_training_defaults(sets) -> None:
    ld = lossyload.make_loader(str(sets["jpeg"]), batch_size=4, backend="dali", codec="rgb", options={"crop": 32})
    x, y = next(iter(ld))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and -3 < float(x.mean()) < 3
    ev = lossyload.make_loader(str(sets["jpeg"]), batch_size=4, backend="dali", codec="rgb", train=False,
                               options={"crop": 32})
    assert next(iter(ev))[0].shape == (4, 3, 32, 32)


# ------------------------------------------------------------------------------------------- refusals
def test_codec_without_a_dali_form_is_refused(sets) -> None:
    with pytest.raises(DaliUnsupportedError, match="codec 'jpeg-dct' has no DALI form: DALI's JPEG decoders"):
        lossyload.make_loader(str(sets["jpeg"]), batch_size=4, backend="dali")
    with pytest.raises(DaliUnsupportedError, match="has no DALI form for codec 'rgb'"):
        lossyload.make_loader(str(sets["jpeg"]), batch_size=4, backend="dali", codec="rgb",
                              transforms=[dct.HFlip(p=0.5)])
    with pytest.raises(DaliUnsupportedError, match="padding"):
        lossyload.make_loader(str(sets["int8"]), batch_size=4, backend="dali",
                              transforms=[latent.RandomCrop(size=4, padding=1)])
    with pytest.raises(ShardError, match="leave no full batch of 20"):
        lossyload.make_loader(str(sets["int8"]), batch_size=20, backend="dali", drop_last=True)
    with pytest.raises(ValueError, match="backend must be"):
        lossyload.make_loader(str(sets["int8"]), batch_size=4, backend="jax")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the default on a machine without a GPU")
def test_device_auto_is_the_cpu_without_a_gpu(sets) -> None:
    from lossyload.dali.loader import resolve_device

    ld = lossyload.make_loader(str(sets["int8"]), batch_size=4, backend="dali")
    assert ld.device_id is None and resolve_device("auto") is None and resolve_device(0) == 0
    x, _ = next(iter(ld))
    assert x.device.type == "cpu"
    with pytest.raises(LossyloadError, match="device_id must be"):
        resolve_device("cuda")


def test_remote_url_is_refused(sets) -> None:
    fs = fsspec.filesystem("memory")
    for p in sets["int8"].iterdir():
        if p.is_file():
            fs.pipe(f"/dali-remote/{p.name}", p.read_bytes())
    with pytest.raises(LossyloadError, match="DALI reads local shards only"):
        lossyload.make_loader("memory://dali-remote", batch_size=4, backend="dali")


def test_missing_dali_names_the_extra(sets) -> None:
    code = ("import sys; sys.modules['nvidia.dali'] = None\n"
            "import lossyload\n"
            "try:\n"
            f"    lossyload.make_loader({str(sets['int8'])!r}, batch_size=4, backend='dali')\n"
            "except lossyload.LossyloadError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert "MissingDependencyError" in out.stdout and "pip install 'lossyload[dali]'" in out.stdout


# ------------------------------------------------------------------------------------------- bad samples, index
@pytest.fixture
def damaged(sets, tmp_path) -> tuple[Path, str]:
    """A copy of the int8 set whose second shard has one payload cut short; the key of that sample."""
    dest = tmp_path / "ds"
    shutil.copytree(sets["int8"], dest, ignore=shutil.ignore_patterns("dali"))
    bad = []

    def cut(members):
        out = []
        for name, data in members:
            if name.endswith(".vae") and not bad:
                bad.append(name[: -len(".vae")])
                data = data[:-5]
            out.append((name, data))
        return out

    rewrite(dest / "shard-000001.tar", cut)
    return dest, bad[0]


def test_bad_sample_raises_naming_shard_and_key(damaged) -> None:
    dest, key = damaged
    with pytest.raises(ShardError, match=rf"shard-000001\.tar \[{key}\]: DecodeError: vae member holds"):
        lossyload.make_loader(str(dest), batch_size=4, backend="dali")


def test_bad_sample_is_skipped_and_counted(damaged, caplog) -> None:
    dest, key = damaged
    ld = lossyload.make_loader(str(dest), batch_size=4, backend="dali", on_error="skip", train=False,
                               return_keys=True)
    assert len(ld.skipped) == 1 and f"[{key}]" in ld.skipped[0] and "shard-000001.tar" in ld.skipped[0]
    keys = [k for _, _, ks in ld for k in ks]
    assert len(keys) == N - 1 and key not in keys and len(ld) == math.ceil((N - 1) / 4)
    assert "1 samples left out of the DALI index" in caplog.text
    torch_ld = lossyload.make_loader(str(dest), batch_size=4, on_error="skip", train=False)
    list(torch_ld)
    assert [s.split("]")[0] for s in torch_ld.skipped] == [s.split("]")[0] for s in ld.skipped]  # same sample


def test_dali_index_command_writes_the_index_the_loader_uses(damaged, capsys) -> None:
    dest, key = damaged
    assert main(["dali-index", str(dest)]) == 1  # one sample left out
    out = capsys.readouterr().out
    assert f"[{key}]" in out and "3 DALI index files, 10 samples indexed, 1 left out" in out
    assert sorted(os.listdir(dest / "dali")) == ["manifest.json", "shard-000000.idx", "shard-000001.idx",
                                                   "shard-000002.idx"]
    assert (dest / "dali" / "shard-000001.idx").read_text().startswith("v1.2 3\nvae ")
    ld = lossyload.make_loader(str(dest), batch_size=4, backend="dali", on_error="skip")
    assert not ld.indexed_now and len(ld.skipped) == 1  # read from the written index, not rebuilt
    with open(dest / "shard-000002.tar", "ab") as f:  # the shard changed after indexing
        f.write(bytes(512))
    with pytest.raises(ShardError, match="shard-000002.tar: .* bytes on disk, the index says"):
        lossyload.make_loader(str(dest), batch_size=4, backend="dali", on_error="skip")


def test_dali_index_of_a_clean_set(sets, tmp_path, capsys) -> None:
    assert main(["dali-index", str(sets["jpeg"]), "--codec", "rgb", "--out", str(tmp_path / "idx")]) == 0
    assert "11 samples indexed, 0 left out" in capsys.readouterr().out
    ld = lossyload.make_loader(str(sets["jpeg"]), batch_size=4, backend="dali", codec="rgb", train=False,
                               transforms=[], index_dir=str(tmp_path / "idx"))
    assert not ld.indexed_now and sum(len(y) for _, y in ld) == N
    assert np.isfinite(next(iter(ld))[0].numpy()).all()


def test_eval_crops_vae_exact_rgb_within_the_documented_bound(sets) -> None:
    """docs/dali.md: with the evaluation crops (``train=False``), ``vae`` is exactly the torch loader; ``rgb``
    resizes with DALI's resampling, not torch's, so its tensors differ slightly (the bound the doc states)."""
    assert_same(sets["int8"], transforms=None)
    ref = by_key(sets["jpeg"], "torch", codec="rgb", transforms=None, options={"crop": 64})
    got = by_key(sets["jpeg"], "dali", codec="rgb", transforms=None, options={"crop": 64})
    assert sorted(got) == sorted(ref) and len(ref) == N
    diff = torch.stack([(got[k] - ref[k]).abs() for k in ref])
    assert got[next(iter(got))].shape == (3, 64, 64)
    print(f"rgb eval crops, DALI vs torch: max {diff.max():.3f}, mean {diff.mean():.4f} (normalized units)")
    assert diff.max() <= 1.0 and diff.mean() <= 0.05
