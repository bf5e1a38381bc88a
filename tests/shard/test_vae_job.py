"""The ``vae`` codec through the whole pipeline: ``run_job`` on a tiny ImageFolder with a random tiny VAE, then the
loader. The index records everything needed to read the latents back; the stored bytes are exactly the latent
grid; bad files are skipped; a rerun is a no-op whatever its runtime fields; parallel encoding is byte
identical; a validation split reuses the training split's fitted quantization."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lossyload
from lossyload.augment.latent import PosteriorSample, View
from lossyload.codecs import create_codec
from lossyload.errors import LossyloadError
from lossyload.index import Index
from lossyload.shard import ShardJob, job as job_module, run_job
from lossyload.shard.job import config_from_dataset
from lossyload.media.vae_model import encode_pixels, image_views, load_vae

from ..conftest import dataset_files, make_image_folder, read_tar, write

pytestmark = pytest.mark.usefixtures("one_thread")
VAE = {"model": "random:tiny", "resolution": 32, "fit_samples": 8}
C, G = 4, 4  # latent channels and grid (32 px / downsampling 8)
CLASSES = {"bird": 6, "cat": 6, "dog": 6}


def shard(src: Path, dest: Path, config: dict | None = None, **kw) -> job_module.ShardSummary:
    return run_job(ShardJob(src=str(src), dest=str(dest), codec="vae", config=config or VAE, progress=False, **kw))


def index_of(dest: Path) -> Index:
    return Index.from_json((dest / "index.json").read_text())


def payloads(dest: Path) -> list[tuple[str, bytes]]:
    """(key, .vae bytes) of every sample, in shard order."""
    index = index_of(dest)
    return [(name[: -len(".vae")], data) for s in index.shards for name, data in read_tar(dest / s.url)
            if name.endswith(".vae")]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = make_image_folder(tmp_path_factory.mktemp("vae") / "src", CLASSES, size=(40, 48))
    write(root / "bird" / "zz_bad.jpg", b"\xff\xd8\xff\xe0 a JPEG start, then nothing")
    write(root / "cat" / "notes.jpg", b"shopping list\n" * 20)  # not an image, named like one
    return root


@pytest.fixture(scope="module")
def built(src: Path, tmp_path_factory) -> dict[str, tuple[Path, job_module.ShardSummary]]:
    """The shard sets the tests read (never modified by them): default, two views, float16 with the std."""
    root = tmp_path_factory.mktemp("vae_sets")
    out = {}
    for name, extra in (("base", {}), ("views2", {"views": 2}), ("std16", {"store_std": True, "storage": "float16"})):
        out[name] = (root / name, shard(src, root / name, {**VAE, **extra}, maxcount=8))
    return out


# ------------------------------------------------------------------------------------------- the index
def test_index_records_model_and_quantization(built) -> None:
    dest, summary = built["base"]
    cfg = index_of(dest).config
    assert (cfg["latent_channels"], cfg["downsample"], cfg["resolution"]) == (C, 8, 32)
    assert (cfg["scaling_factor"], cfg["shift_factor"]) == (1.0, 0.0)
    assert len(cfg["scale"]) == C and all(s > 0 for s in cfg["scale"])
    assert len(cfg["offset"]) == C and all(np.isfinite(cfg["offset"]))
    assert len(cfg["preview_map"]) == (C + 1) * 3 and np.abs(cfg["preview_map"]).sum() > 0
    assert cfg["std_scale"] is None and cfg["storage"] == "int8" and cfg["model"] == "random:tiny"
    assert summary.samples == 18 and summary.shards == 3 and not summary.already_complete
    f16 = index_of(built["std16"][0]).config
    assert f16["scale"] is None and f16["store_std"] and f16["latent_channels"] == C  # float16 needs no range


def test_stored_latents_are_the_model_means_within_half_a_step(src: Path, built) -> None:
    dest, _ = built["base"]
    index = index_of(dest)
    cfg = index.config
    codec = create_codec("vae", cfg)
    vae = load_vae("random:tiny", None, 0, False, "cpu")
    scale, offset = np.asarray(cfg["scale"])[:, None, None], np.asarray(cfg["offset"])[:, None, None]
    for key, data in payloads(dest)[:6]:
        path = src / f"{key}.jpg"
        views, _ = image_views(path.read_bytes(), source=str(path), resolution=32, views=1, seed=0,
                               max_pixels=64_000_000)
        mean = encode_pixels(vae, views, 1, "cpu")[0][0]
        got = codec.decode(data)[0, 0]
        inside = np.abs(mean - offset) <= 127 * scale
        assert inside.mean() > 0.9
        assert (np.abs(got - mean) <= scale / 2 + 1e-5)[inside].all()
        np.testing.assert_allclose(got[~inside], np.clip(mean, offset - 127 * scale, offset + 127 * scale)[~inside],
                                   atol=1e-5)


# ------------------------------------------------------------------------------------------- stored bytes
@pytest.mark.parametrize("name, views, planes, itemsize", [("base", 1, 1, 1), ("views2", 2, 1, 1),
                                                           ("std16", 1, 2, 2)])
def test_payload_is_views_planes_channels_grid(built, name: str, views: int, planes: int, itemsize: int) -> None:
    dest, _ = built[name]
    index = index_of(dest)
    labels = {c: i for i, c in enumerate(index.labels)}
    members = [m for s in index.shards for m in read_tar(dest / s.url)]
    sizes = {len(data) for n, data in members if n.endswith(".vae")}
    assert sizes == {views * planes * C * G * G * itemsize}
    assert [n.rsplit(".", 1)[1] for n, _ in members] == ["vae", "cls"] * 18
    for (n, data), (m, cls) in zip(members[::2], members[1::2]):
        assert n[:-4] == m[:-4] and int(cls) == labels[n.split("/")[0]]
    assert index.bytes == sum((dest / s.url).stat().st_size for s in index.shards)


# ------------------------------------------------------------------------------------------- the loader
def test_loader_yields_latent_batches(built) -> None:
    dest, _ = built["base"]
    loader = lossyload.make_loader(str(dest), batch_size=4)
    batches = list(loader)
    assert len(batches) == len(loader) == 4  # 18 samples, train drops the last partial batch
    for x, y in batches:
        assert x.shape == (4, C, G, G) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    assert torch.cat([x for x, _ in batches]).std() > 0


def test_eval_samples_are_the_decoded_view_0_means(built) -> None:
    dest, _ = built["views2"]
    codec = create_codec("vae", index_of(dest).config)
    ds = lossyload.open_dataset(str(dest), train=False, shuffle=False)
    got = [x.numpy() for x, _ in ds]
    stored = payloads(dest)
    assert len(got) == len(stored) == 18
    for x, (_, data) in zip(got, stored):
        decoded = codec.decode(data)
        assert decoded.shape == (2, 1, C, G, G) and decoded.dtype == np.float32
        np.testing.assert_array_equal(x, decoded[0, 0])
    assert not any(np.array_equal(codec.decode(d)[0], codec.decode(d)[1]) for _, d in stored)


def test_two_views_with_default_train_transforms(built) -> None:
    """Train mode picks a random view and maybe flips it: each sample is one of the four candidates."""
    dest, _ = built["views2"]
    codec = create_codec("vae", index_of(dest).config)
    ds = lossyload.open_dataset(str(dest), train=True, shuffle=False, seed=3)
    seen = set()
    for (x, _), (_, data) in zip(ds, payloads(dest)):
        d = codec.decode(data)[:, 0]
        candidates = {(v, f): (d[v][..., ::-1] if f else d[v]) for v in range(2) for f in (False, True)}
        which = [k for k, c in candidates.items() if np.array_equal(x.numpy(), c)]
        assert which, "a training sample is no view of its stored latents"
        seen.update(which)
    assert {v for v, _ in seen} == {0, 1} and {f for _, f in seen} == {False, True}
    x, _ = next(iter(lossyload.make_loader(str(dest), batch_size=4)))
    assert x.shape == (4, C, G, G)


def test_std_plane_feeds_posterior_sampling(built) -> None:
    dest, _ = built["std16"]
    codec = create_codec("vae", index_of(dest).config)
    decoded = codec.decode(payloads(dest)[0][1])
    assert decoded.shape == (1, 2, C, G, G) and (decoded[:, 1] > 0).all()
    plain = [x for x, _ in lossyload.open_dataset(str(dest), train=False, shuffle=False, transforms=[])]
    sampled = [x for x, _ in lossyload.open_dataset(str(dest), train=False, shuffle=False,
                                                    transforms=[View(), PosteriorSample(temperature=1.0)])]
    assert len(plain) == len(sampled) == 18
    assert all(not torch.equal(a, b) for a, b in zip(plain, sampled))
    with pytest.raises(LossyloadError, match="store_std"):
        next(iter(lossyload.open_dataset(str(built["base"][0]), train=False, transforms=[PosteriorSample()])))


# ------------------------------------------------------------------------------------------- the job
def test_bad_file_is_skipped_and_counted(src: Path, built) -> None:
    dest, summary = built["base"]
    truncated, text = str(src / "bird" / "zz_bad.jpg"), str(src / "cat" / "notes.jpg")
    assert sorted(summary.skipped) == [truncated, text]
    assert summary.skipped[truncated].startswith("corrupt or truncated image")
    assert summary.skipped[text].startswith("not an image")
    assert index_of(dest).skipped == summary.skipped and index_of(dest).samples == 18
    assert "skipped 2" in summary.format()
    assert not any(k.endswith(("zz_bad", "notes")) for k, _ in payloads(dest))


def test_rerun_is_a_no_op_whatever_the_runtime_fields(src: Path, built, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    shutil.copytree(built["base"][0], dest)
    before = dataset_files(dest)
    for config in (VAE, {**VAE, "batch_size": 2, "device": "cpu"}, {**VAE, "download": True},
                   config_from_dataset(str(dest), "vae") | {"batch_size": 5}):
        summary = shard(src, dest, config, maxcount=8)
        assert summary.already_complete and summary.samples == 18 and summary.shards == 3
        assert len(summary.skipped) == 2
    assert dataset_files(dest) == before


def test_other_settings_need_overwrite(src: Path, built, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    shutil.copytree(built["base"][0], dest)
    before = dataset_files(dest)
    for config in ({**VAE, "resolution": 64}, {**VAE, "views": 2}, {**VAE, "scale": [1.0] * C, "offset": [0.0] * C}):
        with pytest.raises(LossyloadError, match="already holds a dataset made with other settings"):
            shard(src, dest, config, maxcount=8)
    assert dataset_files(dest) == before
    summary = shard(src, dest, {**VAE, "resolution": 64}, maxcount=8, overwrite=True)
    assert summary.samples == 18 and index_of(dest).config["resolution"] == 64
    assert {len(d) for _, d in payloads(dest)} == {C * 8 * 8}


def test_two_workers_give_identical_shards(tmp_path: Path) -> None:
    """40 items: two chunks of encode_batch, one per worker process."""
    src = make_image_folder(tmp_path / "src", {"a": 20, "b": 20}, size=(32, 32), seed=7)
    one, two = tmp_path / "one", tmp_path / "two"
    shard(src, one, maxcount=16, workers=1)
    shard(src, two, maxcount=16, workers=2)
    a, b = index_of(one), index_of(two)
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards] and len(a.shards) == 3
    assert a.config == b.config and a.samples == 40
    assert dataset_files(one) == dataset_files(two)


def test_test_split_reuses_the_fitted_quantization(built, tmp_path: Path) -> None:
    dest, _ = built["base"]
    test_src = make_image_folder(tmp_path / "test", CLASSES, size=(56, 40), seed=500)
    train_cfg = index_of(dest).config
    config = config_from_dataset(str(dest), "vae")
    summary = shard(test_src, tmp_path / "test_set", config)
    test_cfg = index_of(tmp_path / "test_set").config
    assert summary.samples == 18
    for k in ("scale", "offset", "preview_map", "latent_channels", "downsample", "resolution"):
        assert test_cfg[k] == train_cfg[k], k
    # fitting on the test split itself would have given another range: the reuse is not a coincidence
    shard(test_src, tmp_path / "test_own")
    assert index_of(tmp_path / "test_own").config["scale"] != train_cfg["scale"]
    with pytest.raises(LossyloadError, match="not 'vq'"):
        config_from_dataset(str(dest), "vq")
