"""Tests of the DCT math in :mod:`lossyload.media.dct`."""

from __future__ import annotations

from pathlib import Path

import jpeglib
import numpy as np
import pytest
from PIL import Image

from lossyload.media.dct import (
    INV_ZIGZAG,
    ZIGZAG,
    DctCoefficients,
    dct_matrix,
    dct_plane,
    dequantize,
    from_pixels,
    idct_plane,
    quantize,
    resample_chroma,
    to_pixels,
)

# JPEG Annex K luminance table (natural order), the quality-50 reference.
ANNEX_K_LUMA = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.uint16,
)


def smooth_image(h: int, w: int, seed: int = 0, noise: float = 3.0) -> np.ndarray:
    """A uint8 RGB test image like a photo: detailed luma, smooth chroma, mostly away from clipping."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    luma = 128 + 50 * np.sin(xx / 5 + yy / 7) + 15 * np.cos(yy / 3)
    luma += np.random.default_rng(seed).normal(0.0, noise, luma.shape)
    cb, cr = 30 * np.sin(xx / 40 + yy / 60), 30 * np.cos(yy / 30 - xx / 50)
    rgb = np.stack([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb], -1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def from_jpeglib(path: Path) -> DctCoefficients:
    """Read a 4:2:0 JPEG's coefficients with jpeglib into the canonical form."""
    jpeg = jpeglib.read_dct(str(path))

    def channels(blocks: np.ndarray) -> np.ndarray:
        hb, wb = blocks.shape[:2]
        return blocks.reshape(hb, wb, 64).transpose(2, 0, 1)[ZIGZAG].astype(np.int16)

    qt = jpeg.qt[jpeg.quant_tbl_no].reshape(3, 64).astype(np.uint16)
    return DctCoefficients(y=channels(jpeg.Y), c=np.stack([channels(jpeg.Cb), channels(jpeg.Cr)]), qt=qt)


# ------------------------------------------------------------------------------------------- zigzag


def test_zigzag_is_a_permutation_along_antidiagonals() -> None:
    assert sorted(ZIGZAG.tolist()) == list(range(64))
    np.testing.assert_array_equal(ZIGZAG[INV_ZIGZAG], np.arange(64))
    diagonal = ZIGZAG // 8 + ZIGZAG % 8  # u + v never decreases along the zigzag scan
    assert np.all(np.diff(diagonal) >= 0)
    assert ZIGZAG[:6].tolist() == [0, 1, 8, 16, 9, 2]


# ------------------------------------------------------------------------------------------- DCT


def test_dct_matrix_is_orthonormal_and_matches_jpeg_fdct() -> None:
    d = dct_matrix()
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-12)
    block = np.random.default_rng(1).uniform(-128, 127, (8, 8))
    coef = d @ block @ d.T
    # JPEG FDCT (ITU T.81 A.3.3): F(u,v) = 1/4 C(u) C(v) sum f(y,x) cos((2y+1)u pi/16) cos((2x+1)v pi/16).
    for u, v in [(0, 0), (0, 3), (5, 1), (7, 7)]:
        cu, cv = (1 / np.sqrt(2) if u == 0 else 1.0), (1 / np.sqrt(2) if v == 0 else 1.0)
        n = np.arange(8)
        basis = np.outer(np.cos((2 * n + 1) * u * np.pi / 16), np.cos((2 * n + 1) * v * np.pi / 16))
        assert coef[u, v] == pytest.approx(0.25 * cu * cv * np.sum(block * basis), abs=1e-9)


def test_dct_idct_round_trip() -> None:
    pixels = np.random.default_rng(2).uniform(-128, 127, (24, 40)).astype(np.float32)
    coef = dct_plane(pixels)
    assert coef.shape == (64, 3, 5) and coef.dtype == np.float32
    np.testing.assert_allclose(idct_plane(coef), pixels, atol=1e-3)
    # DC of a block is 8x its mean.
    np.testing.assert_allclose(coef[0, 1, 2], 8 * pixels[8:16, 16:24].mean(), rtol=1e-5)


def test_dct_plane_rejects_ragged_input() -> None:
    with pytest.raises(ValueError):
        dct_plane(np.zeros((12, 16), np.float32))
    with pytest.raises(ValueError):
        idct_plane(np.zeros((63, 2, 2), np.float32))


def test_dequantize_quantize_round_trip() -> None:
    rng = np.random.default_rng(3)
    table = rng.integers(1, 100, 64).astype(np.uint16)
    channels = rng.integers(-300, 300, (10, 4, 6)).astype(np.int16)
    natural = dequantize(channels, table)
    assert natural.shape == (64, 4, 6) and natural.dtype == np.float32
    # Channel 2 is natural index 8 (u=1, v=0); frequencies beyond the kept 10 are zero.
    np.testing.assert_array_equal(natural[8], channels[2] * float(table[8]))
    assert not natural[ZIGZAG[10:]].any()
    back = quantize(natural, table, keep=10)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, channels)
    np.testing.assert_array_equal(quantize(natural, table, keep=3), channels[:3])


def test_quantize_rounds_and_clips() -> None:
    table = np.full(64, 2, np.uint16)
    natural = np.zeros((64, 1, 3), np.float32)
    natural[0, 0] = [2.9, -1e9, 1e9]
    out = quantize(natural, table, keep=1)
    assert out[0, 0].tolist() == [1, -32768, 32767]
    with pytest.raises(ValueError):
        quantize(natural, np.zeros(64, np.uint16), keep=1)
    with pytest.raises(ValueError):
        quantize(natural, table, keep=65)


@pytest.mark.parametrize("dy", [1, 2])
@pytest.mark.parametrize("dx", [1, 2])
def test_resample_chroma_matches_pixel_box_filter(dy: int, dx: int) -> None:
    natural = np.random.default_rng(4).normal(0, 40, (64, 4, 6)).astype(np.float32)
    pixels = idct_plane(natural)
    h, w = pixels.shape
    reference = dct_plane(pixels.reshape(h // dy, dy, w // dx, dx).mean(axis=(1, 3)))
    out = resample_chroma(natural, dy, dx)
    assert out.shape == (64, 4 // dy, 6 // dx) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=1e-3)


def test_resample_chroma_validates() -> None:
    with pytest.raises(ValueError):
        resample_chroma(np.zeros((64, 3, 4), np.float32), 2, 1)
    with pytest.raises(ValueError):
        resample_chroma(np.zeros((64, 4, 4), np.float32), 3, 1)


# ------------------------------------------------------------------------------------------- colour


def test_from_pixels_to_pixels_round_trip() -> None:
    # Unit quantization: only coefficient rounding and chroma subsampling lose anything, so an
    # image whose pixels are constant on 2x2 cells (no chroma detail) comes back within 2 levels.
    img = smooth_image(48, 64, noise=5.0).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
    img = np.rint(img).astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1)
    d = from_pixels(img, np.ones((3, 64), np.uint16))
    d.validate()
    assert d.keep == (64, 64) and d.blocks == (6, 8)
    err = np.abs(to_pixels(d).astype(np.int32) - img)
    assert err.max() <= 2 and err.mean() < 0.5


def test_from_pixels_with_jpeg_quantization_is_close() -> None:
    img = smooth_image(64, 96, noise=0.0)
    qt = np.stack([ANNEX_K_LUMA] * 3)
    err = np.abs(to_pixels(from_pixels(img, qt, keep=(64, 64))).astype(np.int32) - img)
    assert err.mean() < 3.0  # quality-50 tables (measured mean 1.9 levels)


def test_from_pixels_keep_and_validation() -> None:
    d = from_pixels(smooth_image(32, 32), np.ones((3, 64), np.uint16), keep=(15, 6))
    assert d.y.shape == (15, 4, 4) and d.c.shape == (2, 6, 2, 2)
    with pytest.raises(ValueError):
        from_pixels(np.zeros((24, 32, 3), np.uint8), np.ones((3, 64), np.uint16))


def test_to_pixels_matches_libjpeg_decode(tmp_path: Path) -> None:
    path = tmp_path / "img.jpg"
    img = smooth_image(64, 96, seed=5)
    Image.fromarray(img).save(path, quality=90, subsampling=2)  # 2 = 4:2:0
    d = from_jpeglib(path)
    d.validate()
    ours = to_pixels(d).astype(np.int32)
    theirs = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
    assert ours.shape == theirs.shape == img.shape
    # libjpeg upsamples chroma with a triangle ("fancy") filter, we replicate: RGB differs a little
    # where chroma changes (measured: mean 0.53, max 3 levels).
    assert np.abs(ours - theirs).mean() < 1.0
    assert np.abs(ours - theirs).max() <= 6
    # Luma has no upsampling: libjpeg's integer IDCT vs our float IDCT differ by at most 1 level.
    raw = Image.open(path)
    raw.draft("YCbCr", raw.size)  # decoder output without colour conversion
    libjpeg_y = np.asarray(raw)[..., 0].astype(np.int32)
    our_y = np.clip(np.rint(idct_plane(dequantize(d.y, d.qt[0])) + 128), 0, 255).astype(np.int32)
    assert np.abs(our_y - libjpeg_y).max() <= 1
    assert np.abs(our_y - libjpeg_y).mean() < 0.05


def test_to_pixels_colours_match_libjpeg_on_flat_patches(tmp_path: Path) -> None:
    # Saturated flat 32x32 patches: away from patch edges upsampling and ringing play no part, so
    # this checks the colour conversion itself (a 1% error in a JFIF coefficient already fails).
    colours = np.random.default_rng(6).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    img = colours.repeat(32, axis=0).repeat(32, axis=1)
    path = tmp_path / "flat.jpg"
    Image.fromarray(img).save(path, quality=95, subsampling=2)
    ours = to_pixels(from_jpeglib(path)).astype(np.int32)
    theirs = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
    inner = np.zeros((32, 32), bool)
    inner[6:26, 6:26] = True
    err = np.abs(ours - theirs)[np.tile(inner, (4, 6))]
    assert err.max() <= 1 and err.mean() < 0.05
