"""The ``rgb`` baseline codec: both decode backends, normalisation, the default transforms' output size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from lossyload.codecs import create_codec
from lossyload.codecs.rgb import IMAGENET_MEAN, IMAGENET_STD
from lossyload.errors import DecodeError

from ..conftest import jpeg_bytes, photo, png_bytes


def as_tensor(img) -> torch.Tensor:
    return img if isinstance(img, torch.Tensor) else F.pil_to_tensor(img)


@pytest.mark.parametrize(
    "kw", [dict(subsampling=2), dict(subsampling=1), dict(subsampling=0, progressive=True), dict(mode="L")],
    ids=["420", "422", "444-progressive", "grey"],
)
def test_turbo_and_pil_decode_the_same_pixels(kw: dict) -> None:
    src = photo(75, 100, top=20, left=30)
    data = jpeg_bytes(src, **kw)
    turbo = create_codec("rgb", None, {"backend": "turbo"}).decode(data)
    pil = create_codec("rgb", None, {"backend": "pil"}).decode(data)
    assert isinstance(turbo, torch.Tensor) and turbo.dtype == torch.uint8 and turbo.shape == (3, 75, 100)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (100, 75)
    diff = (turbo.int() - as_tensor(pil).int()).abs()
    assert diff.max() <= 2 and diff.float().mean() < 0.1
    expected = src if "mode" not in kw else np.repeat(np.asarray(Image.fromarray(src).convert("L"))[..., None], 3, 2)
    assert (turbo.permute(1, 2, 0).int() - torch.from_numpy(expected).int()).abs().float().mean() < 3


@pytest.mark.parametrize("backend", ["turbo", "pil"])
def test_finalize_normalises_with_mean_and_std(backend: str) -> None:
    mean, std = (0.25, 0.5, 0.75), (0.1, 0.2, 0.4)
    colour = np.array([200, 100, 30], np.uint8)
    data = jpeg_bytes(np.broadcast_to(colour, (32, 48, 3)).copy(), quality=100, subsampling=0)
    for options, (m, s) in [({}, (IMAGENET_MEAN, IMAGENET_STD)), ({"mean": mean, "std": std}, (mean, std))]:
        codec = create_codec("rgb", None, {"backend": backend, **options})
        img = codec.decode(data)
        got = as_tensor(img)[:, 0, 0].numpy().astype(np.float64)
        assert np.abs(got - colour).max() <= 2  # a flat colour survives JPEG almost exactly
        out = codec.finalize(img)["rgb"]
        assert out.dtype == np.float32 and out.shape == (3, 32, 48)
        expect = (got / 255.0 - np.array(m)) / np.array(s)
        np.testing.assert_allclose(out[:, 0, 0], expect, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1], out.shape), atol=2 / 255 / min(s))


@pytest.mark.parametrize("backend", ["turbo", "pil"])
@pytest.mark.parametrize("size", [(40, 30), (75, 100), (300, 120)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_transforms_give_the_crop_size(backend: str, size: tuple[int, int]) -> None:
    h, w = size
    data = jpeg_bytes(photo(h, w))
    for crop in (16, 56):
        codec = create_codec("rgb", None, {"backend": backend, "crop": crop})
        for train in (False, True):
            img = codec.decode(data)
            for t in codec.default_transforms(train):
                img = t(img, np.random.default_rng(1))
            out = codec.finalize(img)["rgb"]
            assert out.shape == (3, crop, crop) == codec.output_spec()["rgb"].shape


def test_eval_transform_is_a_centre_crop_of_the_resized_image() -> None:
    codec = create_codec("rgb", None, {"crop": 56})
    (t,) = codec.default_transforms(False)
    src = photo(128, 192)
    img = codec.decode(jpeg_bytes(src, quality=100, subsampling=0))
    out = t(img, np.random.default_rng(0))
    ref = F.center_crop(F.resize(img, [64], antialias=True), [56, 56])  # 56 / 0.875 = 64
    assert torch.equal(out, ref)
    again = t(img, np.random.default_rng(99))
    assert torch.equal(out, again)  # no randomness in eval


@pytest.mark.parametrize("backend", ["turbo", "pil"])
def test_bad_payload_is_a_decode_error(backend: str) -> None:
    codec = create_codec("rgb", None, {"backend": backend})
    for payload in (b"", b"no image here", jpeg_bytes(photo(32, 32))[:40]):
        with pytest.raises(DecodeError, match="not a decodable JPEG"):
            codec.decode(payload)


def test_encode_copies_jpegs_and_transcodes_others() -> None:
    codec = create_codec("rgb")
    data = jpeg_bytes(photo(32, 40))
    assert codec.member == "jpg"
    enc = codec.encode(data, source="a")
    assert enc.payload == data and enc.transcoded is None
    enc = codec.encode(png_bytes(photo(32, 40)), source="a")
    assert enc.transcoded == "png source" and Image.open(io.BytesIO(enc.payload)).format == "JPEG"
