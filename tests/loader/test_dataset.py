"""``open_dataset`` / ``LossyDataset``: samples, codecs over the same shards, lengths, codec-level output."""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lossyload import LossyDataset, World, make_loader, open_dataset
from lossyload.augment.dct import CenterCrop
from lossyload.codecs import create_codec
from lossyload.errors import CodecError, IndexFormatError

from .conftest import HEIGHT, N_SAMPLES, WIDTH, rewrite

OPTS = {"crop": 32}


def payloads(ds: Path, member: str = "jpg") -> dict[int, bytes]:
    """label -> payload bytes, read with Python's tarfile (independent of the loader)."""
    out, by_key = {}, {}
    for shard in sorted(ds.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                by_key.setdefault(key, {})[ext] = tar.extractfile(m).read()
    for members in by_key.values():
        out[int(members["cls"])] = members[member]
    return out


def test_samples_without_batch_size(jpeg_ds: Path):
    ds = open_dataset(str(jpeg_ds), options=OPTS, shuffle=False)
    assert isinstance(ds, LossyDataset) and isinstance(ds, torch.utils.data.IterableDataset)
    assert ds.labels == [f"c{i:03d}" for i in range(N_SAMPLES)]
    assert len(ds) == N_SAMPLES // 1  # train: drop_last, but batch size 1 drops nothing
    samples = list(ds)
    assert len(samples) == N_SAMPLES
    assert [y for _, y in samples] == list(range(N_SAMPLES))
    for x, y in samples:
        assert type(y) is int
        assert set(x) == {"y", "cbcr", "qt"}
        assert x["y"].shape == (64, 4, 4) and x["y"].dtype == torch.int16
        assert x["cbcr"].shape == (128, 2, 2) and x["cbcr"].dtype == torch.int16
        assert x["qt"].shape == (3, 64) and x["qt"].dtype == torch.int16


def test_unbatched_world_split(jpeg_ds: Path):
    got = []
    for r in range(3):
        ds = open_dataset(str(jpeg_ds), options=OPTS, world=World(rank=r, world_size=3), drop_last=True)
        assert len(ds) == N_SAMPLES // 3
        labels = [y for _, y in ds]
        assert len(labels) == len(ds)
        got += labels
    assert len(got) == len(set(got)) == 3 * (N_SAMPLES // 3)


def test_single_output_codec_gives_a_tensor(jpeg_ds: Path):
    ds = open_dataset(str(jpeg_ds), options={"crop": 32, "chroma": "concat", "keep": (6, 3)}, train=False)
    x, y = next(iter(ds))
    assert isinstance(x, torch.Tensor) and x.shape == (6 + 2 * 3, 4, 4) and x.dtype == torch.int16 and y == 0
    bx, by = next(iter(make_loader(str(jpeg_ds), batch_size=5, options={"crop": 32, "chroma": "concat"},
                                   train=False)))
    assert isinstance(bx, torch.Tensor) and bx.shape == (5, 64 + 128, 4, 4) and by.tolist() == [0, 1, 2, 3, 4]


def test_outputs_are_the_shards_coefficients(jpeg_ds: Path):
    """Eval pipeline: each output is exactly the centre crop of its own JPEG's coefficients."""
    codec = create_codec("jpeg-dct", {}, OPTS)
    src = payloads(jpeg_ds)
    n = 0
    for x, y in make_loader(str(jpeg_ds), batch_size=8, options=OPTS, train=False, num_workers=2):
        for i, label in enumerate(y.tolist()):
            want = codec.finalize(CenterCrop(size=32)(codec.decode(src[label]), np.random.default_rng(0)))
            for k in ("y", "cbcr", "qt"):
                np.testing.assert_array_equal(x[k][i].numpy(), want[k])
            n += 1
    assert n == N_SAMPLES
    # the DC coefficients really differ between images: labels and tensors are not mixed up
    dcs = {int(codec.decode(p).y[0].mean()) for p in src.values()}
    assert len(dcs) > N_SAMPLES // 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_batches_are_codec_level(jpeg_ds: Path, num_workers):
    ld = make_loader(str(jpeg_ds), batch_size=6, num_workers=num_workers, options=OPTS, drop_last=True)
    batches = list(ld)
    assert len(batches) == len(ld) == N_SAMPLES // 6
    for x, y in batches:
        assert x["y"].shape == (6, 64, 4, 4) and x["y"].dtype == torch.int16
        assert x["cbcr"].shape == (6, 128, 2, 2) and x["cbcr"].dtype == torch.int16
        assert x["qt"].shape == (6, 3, 64) and x["qt"].dtype == torch.int16
        assert y.shape == (6,) and y.dtype == torch.int64
        assert x["qt"].min() >= 1  # real quantisation tables


def test_rgb_codec_over_jpeg_dct_shards(jpeg_ds: Path):
    ds = open_dataset(str(jpeg_ds), codec="rgb", options={"crop": 32}, train=False)
    assert ds.codec.name == "rgb"
    samples = list(ds)
    assert [y for _, y in samples] == list(range(N_SAMPLES))
    x, _ = samples[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
    ld = make_loader(str(jpeg_ds), codec="rgb", batch_size=8, options={"crop": 32, "backend": "pil"},
                     num_workers=1)
    shapes = {tuple(x.shape[1:]) for x, _ in ld}
    assert shapes == {(3, 32, 32)}


def test_rgb_codec_over_coefficient_shards_fails_naming_both_members(coef_ds: Path):
    with pytest.raises(CodecError) as e:
        open_dataset(str(coef_ds), codec="rgb")
    msg = str(e.value)
    assert "'jpg'" in msg and "'dct.zst'" in msg and "rgb" in msg


def test_coefficient_shards(coef_ds: Path):
    ds = open_dataset(str(coef_ds), options=OPTS, train=False)
    assert ds.index.member == "dct.zst" and len(ds) == 10
    samples = list(ds)
    assert [y for _, y in samples] == list(range(10))
    x, _ = samples[0]
    assert x["y"].shape == (64, 4, 4) and x["cbcr"].shape == (128, 2, 2) and x["qt"].shape == (3, 64)
    # the same images sharded as JPEG give the same coefficients
    src = payloads(coef_ds, "dct.zst")
    codec = create_codec("jpeg-dct", {"storage": "coefficients"}, OPTS)
    want = codec.finalize(CenterCrop(size=32)(codec.decode(src[0]), np.random.default_rng(0)))
    np.testing.assert_array_equal(x["y"].numpy(), want["y"])


def test_unknown_codec_and_bad_options(jpeg_ds: Path):
    with pytest.raises(CodecError, match="unknown codec"):
        open_dataset(str(jpeg_ds), codec="nope")
    with pytest.raises(CodecError, match="crop"):
        open_dataset(str(jpeg_ds), options={"crop": 30})
    with pytest.raises(CodecError, match="unknown field"):
        open_dataset(str(jpeg_ds), options={"bogus": 1})


def test_options_as_dataclass(jpeg_ds: Path):
    from lossyload.codecs.jpeg_dct import JpegDctOptions

    ds = open_dataset(str(jpeg_ds), options=JpegDctOptions(crop=16, keep=(10, 4)), train=False)
    x, _ = next(iter(ds))
    assert x["y"].shape == (10, 2, 2) and x["cbcr"].shape == (8, 1, 1)


def test_not_a_dataset(tmp_path: Path):
    with pytest.raises(IndexFormatError, match="index.json"):
        open_dataset(str(tmp_path))


def test_index_json_url(jpeg_ds: Path):
    ds = open_dataset(str(jpeg_ds / "index.json"), options=OPTS, train=False)
    assert len(list(ds)) == N_SAMPLES


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [None, 1, 5, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len(jpeg_ds: Path, world_size, batch_size, drop_last):
    ds = open_dataset(str(jpeg_ds), batch_size=batch_size, drop_last=drop_last, options=OPTS,
                      world=World(rank=world_size - 1, world_size=world_size))
    per_rank = N_SAMPLES // world_size if drop_last else math.ceil(N_SAMPLES / world_size)
    bs = batch_size or 1
    assert len(ds) == (per_rank // bs if drop_last else math.ceil(per_rank / bs))


def test_samples_smaller_than_the_crop_are_padded(jpeg_ds: Path):
    """The fixture images are 48x32: a 64 px crop pads with zero coefficients instead of failing."""
    assert (WIDTH, HEIGHT) == (48, 32)
    ds = open_dataset(str(jpeg_ds), options={"crop": 64}, train=True, batch_size=4)
    x, _ = next(iter(ds))
    assert x["y"].shape == (4, 64, 8, 8)


def test_no_crop_uneven_sizes_fail_clearly(jpeg_copy: Path):
    ds = open_dataset(str(jpeg_copy), options=OPTS, transforms=[], batch_size=4, train=False)
    x, _ = next(iter(ds))  # all fixture images share one size: batching works without a crop
    assert x["y"].shape == (4, 64, HEIGHT // 8, WIDTH // 8)

    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
    rewrite(jpeg_copy / "shard-000000.tar", lambda ms: [(n, buf.getvalue() if n == "c001/img.jpg" else d)
                                                      for n, d in ms])
    with pytest.raises(CodecError, match="cannot be batched: add a crop"):
        next(iter(ds))
    assert next(iter(open_dataset(str(jpeg_copy), options=OPTS, batch_size=4, train=False)))[1].tolist() == [0, 1, 2, 3]
