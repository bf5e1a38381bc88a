"""Tests of :mod:`lossyload.media.jpeg`: coefficients against an independent reader (jpeglib), the pre-extracted
coefficient encoding, and preparing source bytes for a shard."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import jpeglib
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.JpegImagePlugin import get_sampling

from lossyload.media import dct, jpeg
from lossyload.media.dct import ZIGZAG, DctCoefficients
from lossyload.errors import DecodeError, EncodeError

from ..conftest import THREE_TABLES, jpeg_bytes, photo, png_bytes, synthetic_rgb


# ------------------------------------------------------------------------------------------- jpeglib reference
def _zigzag_channels(blocks: np.ndarray) -> np.ndarray:
    """jpeglib's [Hb, Wb, 8, 8] natural blocks -> [64, Hb, Wb] zigzag channels."""
    hb, wb = blocks.shape[:2]
    return blocks.reshape(hb, wb, 64).transpose(2, 0, 1)[ZIGZAG]


def _pad(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    assert x.shape[1] <= rows and x.shape[2] <= cols
    out = np.zeros((x.shape[0], rows, cols), x.dtype)
    out[:, : x.shape[1], : x.shape[2]] = x
    return out


def reference(path: Path, h: int, w: int) -> DctCoefficients:
    """The documented canonical form, built from jpeglib's reading: luma and qt as stored, the grid zero-padded
    to whole 16x16 MCUs, chroma that is not 4:2:0 brought to the 4:2:0 grid by dequantize -> DCT-domain box
    filter -> requantize with the image's own chroma table."""
    j = jpeglib.read_dct(str(path))
    hc, wc = -(-h // 16), -(-w // 16)
    y = _pad(_zigzag_channels(j.Y), 2 * hc, 2 * wc).astype(np.int16)
    if not j.has_chrominance:
        qt = np.ones((3, 64), np.uint16)
        qt[0] = j.qt[j.quant_tbl_no[0]].reshape(64)
        return DctCoefficients(y=y, c=np.zeros((2, 64, hc, wc), np.int16), qt=qt)
    qt = j.qt[j.quant_tbl_no].reshape(3, 64).astype(np.uint16)
    (lv, lh), chroma_samp = j.samp_factor[0], j.samp_factor[1:]  # jpeglib gives (vertical, horizontal)
    planes = []
    for (cv, ch), blocks, table in zip(chroma_samp, (j.Cb, j.Cr), qt[1:]):
        dy, dx = 2 * cv // lv, 2 * ch // lh
        full = _pad(_zigzag_channels(blocks), hc * dy, wc * dx)
        if dy == dx == 1:
            planes.append(full.astype(np.int16))
        else:
            planes.append(dct.quantize(dct.resample_chroma(dct.dequantize(full, table), dy, dx), table, 64))
    return DctCoefficients(y=y, c=np.stack(planes), qt=qt)


def assert_same(a: DctCoefficients, b: DctCoefficients) -> None:
    assert a.y.dtype == b.y.dtype == np.int16 and a.c.dtype == b.c.dtype == np.int16
    np.testing.assert_array_equal(a.qt, b.qt)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.c, b.c)


KINDS = {  # name -> PIL save arguments
    "baseline-420": dict(subsampling=2),
    "progressive-420": dict(subsampling=2, progressive=True),
    "baseline-422": dict(subsampling=1),
    "baseline-444": dict(subsampling=0),
    "progressive-444": dict(subsampling=0, progressive=True),
    "three-tables-420": dict(subsampling=2, qtables=THREE_TABLES),
    "three-tables-422": dict(subsampling=1, qtables=THREE_TABLES),
    "three-tables-444": dict(subsampling=0, qtables=THREE_TABLES),
}
SIZES = [(64, 96), (75, 100), (70, 90), (8, 8)]  # (H, W): MCU-aligned, and not


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", list(KINDS))
def test_coefficients_match_jpeglib(tmp_path: Path, kind: str, size: tuple[int, int]) -> None:
    h, w = size
    data = jpeg_bytes(photo(h, w, top=90, left=140), quality=85, **KINDS[kind])
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    d = jpeg.read_coefficients(data)
    d.validate()
    if "qtables" in KINDS[kind]:
        np.testing.assert_array_equal(d.qt, np.array(THREE_TABLES))
    assert d.blocks == (2 * -(-h // 16), 2 * -(-w // 16))
    assert d.keep == (64, 64)
    assert_same(d, reference(path, h, w))


@pytest.mark.parametrize("size", [(64, 96), (75, 100)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_greyscale_has_zero_chroma_and_unit_chroma_tables(tmp_path: Path, size: tuple[int, int]) -> None:
    h, w = size
    data = jpeg_bytes(photo(h, w), mode="L", quality=80)
    (tmp_path / "g.jpg").write_bytes(data)
    d = jpeg.read_coefficients(data)
    assert d.c.shape == (2, 64, -(-h // 16), -(-w // 16))
    assert not d.c.any()
    np.testing.assert_array_equal(d.qt[1:], np.ones((2, 64)))
    assert_same(d, reference(tmp_path / "g.jpg", h, w))
    # and it decodes to the grey image PIL sees
    pixels = dct.to_pixels(d)[:h, :w].astype(int)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(pixels - pil).max() <= 2


@pytest.mark.parametrize("h, w", [(75, 100), (70, 90), (24, 40)])
def test_grid_padding_is_zero(h: int, w: int) -> None:
    """The grid is ceil(H/16)*2 x ceil(W/16)*2 blocks; blocks past the image's own ceil(H/8) x ceil(W/8) are zero."""
    d = jpeg.read_coefficients(jpeg_bytes(synthetic_rgb(h, w, seed=3), quality=90))
    hb, wb = 2 * -(-h // 16), 2 * -(-w // 16)
    assert d.y.shape == (64, hb, wb) and d.c.shape == (2, 64, hb // 2, wb // 2)
    rows, cols = -(-h // 8), -(-w // 8)
    assert not d.y[:, rows:, :].any() and not d.y[:, :, cols:].any()
    assert d.y[0, rows - 1, cols - 1] != 0 or d.y[:, rows - 1, :cols].any()  # real blocks are there
    crows, ccols = -(-h // 16), -(-w // 16)  # chroma planes are ceil(H/2) x ceil(W/2): no padding on the grid
    assert d.c[:, 0, crows - 1, ccols - 1].all()


@pytest.mark.parametrize("tables", [False, True], ids=["standard-tables", "three-tables"])
@pytest.mark.parametrize("sub", [2, 1, 0], ids=["420", "422", "444"])
def test_decoded_pixels_follow_the_source(sub: int, tables: bool) -> None:
    """Pixel-level check of the chroma resampling: a wrong axis or table would be far off."""
    h, w = 75, 100
    src = photo(h, w, top=100, left=150)
    data = jpeg_bytes(src, subsampling=sub, quality=95, **({"qtables": THREE_TABLES} if tables else {}))
    pixels = dct.to_pixels(jpeg.read_coefficients(data))[:h, :w].astype(int)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(pixels - src).mean() < 3.5
    assert np.abs(pixels - pil).mean() < 2.5


@pytest.mark.parametrize("keep", [(1, 1), (6, 3), (15, 10), (64, 1), (64, 64)])
@pytest.mark.parametrize("sub", [2, 0], ids=["420", "444"])
def test_keep_gives_the_first_zigzag_channels(keep: tuple[int, int], sub: int) -> None:
    data = jpeg_bytes(photo(48, 80), subsampling=sub)
    full = jpeg.read_coefficients(data)
    part = jpeg.read_coefficients(data, keep)
    assert part.keep == keep
    np.testing.assert_array_equal(part.y, full.y[: keep[0]])
    np.testing.assert_array_equal(part.c, full.c[:, : keep[1]])
    np.testing.assert_array_equal(part.qt, full.qt)


def test_unsupported_jpegs_raise_decode_error() -> None:
    src = synthetic_rgb(32, 48)
    with pytest.raises(DecodeError, match="CMYK"):
        jpeg.read_coefficients(jpeg_bytes(src, mode="CMYK"))
    with pytest.raises(DecodeError, match="RGB.*not YCbCr"):  # Adobe transform 0: stored as R, G, B
        jpeg.read_coefficients(jpeg_bytes(src, keep_rgb=True, subsampling=0))
    for data in (b"", b"\xff\xd8" + bytes(range(256)) * 2, png_bytes(src), jpeg_bytes(src)[:200]):
        with pytest.raises(DecodeError, match="not a readable JPEG"):
            jpeg.read_coefficients(data)


# ------------------------------------------------------------------------------------------- pack / unpack
def test_pack_unpack_round_trip_real_coefficients() -> None:
    data = jpeg_bytes(photo(75, 100), subsampling=0)
    for keep in [(64, 64), (16, 8), (1, 1)]:
        d = jpeg.read_coefficients(data, keep)
        for compression in jpeg.COMPRESSIONS:
            back = jpeg.unpack_coefficients(jpeg.pack_coefficients(d, compression=compression))
            assert_same(back, d)
            assert back.qt.dtype == np.uint16


@st.composite
def coefficients(draw) -> DctCoefficients:
    ky, kc = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    hm, wm = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    i16 = np.iinfo(np.int16)
    return DctCoefficients(
        y=rng.integers(i16.min, i16.max, (ky, 2 * hm, 2 * wm), endpoint=True).astype(np.int16),
        c=rng.integers(i16.min, i16.max, (2, kc, hm, wm), endpoint=True).astype(np.int16),
        qt=rng.integers(1, 65535, (3, 64), endpoint=True).astype(np.uint16),
    )


@settings(max_examples=60, deadline=None)
@given(coefficients(), st.sampled_from([1, 3, 19]), st.sampled_from(jpeg.COMPRESSIONS))
def test_pack_unpack_round_trip_any(d: DctCoefficients, level: int, compression: str) -> None:
    assert_same(jpeg.unpack_coefficients(jpeg.pack_coefficients(d, level, compression)), d)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_unpack_random_lz4_bytes_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        jpeg.unpack_coefficients(b"LZ4B" + body)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_unpack_random_bytes_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        jpeg.unpack_coefficients(payload)


@pytest.mark.parametrize("compression", jpeg.COMPRESSIONS)
def test_unpack_truncated_is_a_decode_error(compression: str) -> None:
    d = jpeg.read_coefficients(jpeg_bytes(synthetic_rgb(32, 48)), (8, 4))
    payload = jpeg.pack_coefficients(d, compression=compression)
    for n in sorted({0, 1, 4, 12, len(payload) // 2, len(payload) - 1}):
        with pytest.raises(DecodeError):
            jpeg.unpack_coefficients(payload[:n])


def test_unpack_lz4_declared_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = jpeg.pack_coefficients(jpeg.read_coefficients(jpeg_bytes(synthetic_rgb(64, 64))), compression="lz4")
    jpeg.unpack_coefficients(payload)
    huge = b"LZ4B" + struct.pack("<I", 2**32 - 1) + payload[8:]  # claims 4 GiB: refused before allocating
    with pytest.raises(DecodeError, match="more than"):
        jpeg.unpack_coefficients(huge)


def _raw(magic: bytes, ky: int, kc: int, hb: int, wb: int, body: int) -> bytes:
    return zstandard.ZstdCompressor().compress(struct.pack("<4sHHHH", magic, ky, kc, hb, wb) + bytes(body))


def _fits(ky: int, kc: int, hb: int, wb: int) -> int:
    return 2 * (ky * hb * wb + 2 * kc * (hb // 2) * (wb // 2) + 192)


@pytest.mark.parametrize(
    "header, body",
    [
        ((b"LLD0", 4, 4, 2, 2), _fits(4, 4, 2, 2)),  # wrong magic
        ((b"LLD1", 0, 4, 2, 2), _fits(0, 4, 2, 2)),  # no luma channel
        ((b"LLD1", 4, 65, 2, 2), _fits(4, 65, 2, 2)),  # too many chroma channels
        ((b"LLD1", 4, 4, 3, 2), _fits(4, 4, 3, 2)),  # odd grid
        ((b"LLD1", 4, 4, 0, 0), _fits(4, 4, 0, 0)),  # empty grid
        ((b"LLD1", 4, 4, 2, 2), _fits(4, 4, 2, 2) + 2),  # trailing bytes
        ((b"LLD1", 4, 4, 2, 2), _fits(4, 4, 2, 2) - 2),  # short body
        ((b"LLD1", 4, 4, 2, 2), -12),  # header only, cut short
    ],
)
def test_unpack_wrong_header_is_a_decode_error(header: tuple, body: int) -> None:
    payload = _raw(*header, max(body, 0)) if body >= 0 else zstandard.ZstdCompressor().compress(b"LLD1\x04")
    with pytest.raises(DecodeError, match="bad pre-extracted coefficient member"):
        jpeg.unpack_coefficients(payload)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 70), st.integers(0, 70), st.integers(0, 5), st.integers(0, 5), st.integers(-4, 4))
def test_unpack_checks_header_against_size(ky: int, kc: int, hb: int, wb: int, extra: int) -> None:
    body = _fits(ky, kc, hb, wb) + 2 * extra
    payload = _raw(b"LLD1", ky, kc, hb, wb, max(body, 0))
    valid = extra == 0 and 1 <= ky <= 64 and 1 <= kc <= 64 and hb and wb and hb % 2 == 0 and wb % 2 == 0
    if valid:
        d = jpeg.unpack_coefficients(payload)
        d.validate()
        assert d.keep == (ky, kc) and d.blocks == (hb, wb)
    else:
        with pytest.raises(DecodeError):
            jpeg.unpack_coefficients(payload)


def test_unpack_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = jpeg.pack_coefficients(jpeg.read_coefficients(jpeg_bytes(synthetic_rgb(64, 64))))
    jpeg.unpack_coefficients(payload)
    raw = zstandard.ZstdDecompressor().decompress(payload)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(raw)  # size not in the frame header
    assert zstandard.frame_content_size(payload) == len(raw) and zstandard.frame_content_size(unsized) == -1
    monkeypatch.setattr(jpeg, "MAX_UNPACKED", len(raw) - 1)
    for p in (payload, unsized):
        with pytest.raises(DecodeError, match="bad pre-extracted"):
            jpeg.unpack_coefficients(p)


# ------------------------------------------------------------------------------------------- prepare_jpeg
def prepare(data: bytes, **kw):
    args = dict(source="src/file", quality=90, subsampling="4:2:0", resize=None, max_pixels=10**7)
    args.update(kw)
    return jpeg.prepare_jpeg(data, **args)


@pytest.mark.parametrize("kind", ["baseline-420", "progressive-420", "baseline-422", "baseline-444", "grey"])
def test_readable_jpegs_are_copied_byte_for_byte(kind: str) -> None:
    src = photo(50, 70)
    data = jpeg_bytes(src, mode="L") if kind == "grey" else jpeg_bytes(src, **KINDS[kind])
    out, reason = prepare(data)
    assert out == data and reason is None


def test_png_is_transcoded_at_the_asked_quality_and_subsampling() -> None:
    src = photo(48, 64)
    out, reason = prepare(png_bytes(src), quality=95, subsampling="4:4:4")
    assert reason == "png source"
    im = Image.open(io.BytesIO(out))
    assert im.format == "JPEG" and im.size == (64, 48) and get_sampling(im) == 0
    assert np.abs(np.asarray(im.convert("RGB")).astype(int) - src).mean() < 3
    out2, _ = prepare(png_bytes(src), quality=40, subsampling="4:2:0")
    assert get_sampling(Image.open(io.BytesIO(out2))) == 2 and len(out2) < len(out)


def test_cmyk_and_rgb_colourspace_jpegs_are_transcoded_to_true_colours() -> None:
    src = photo(48, 64)
    for data, why in [(jpeg_bytes(src, mode="CMYK", quality=95), "CMYK"),
                      (jpeg_bytes(src, keep_rgb=True, subsampling=0, quality=95), "not YCbCr")]:
        out, reason = prepare(data)
        assert why in reason
        pixels = dct.to_pixels(jpeg.read_coefficients(out))[:48, :64].astype(int)
        assert np.abs(pixels - src).mean() < 6, reason


def test_alpha_palette_and_16_bit_sources_are_transcoded_faithfully() -> None:
    src = photo(40, 56)
    rgba = np.dstack([src, np.full(src.shape[:2], 255, np.uint8)])
    out, reason = prepare(png_bytes(rgba))
    assert reason == "png source" and Image.open(io.BytesIO(out)).mode == "RGB"
    grey16 = (np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)
    out, reason = prepare(png_bytes(grey16))
    im = Image.open(io.BytesIO(out))
    assert reason == "png source" and im.mode == "L"
    assert np.abs(np.asarray(im).astype(float) - grey16 / 257.0).mean() < 2  # not clipped to white


def test_resize_transcodes_only_larger_images() -> None:
    data = jpeg_bytes(photo(75, 100))
    out, reason = prepare(data, resize=32)
    assert reason == "resized from 100x75"
    assert Image.open(io.BytesIO(out)).size == (43, 32)
    out, reason = prepare(png_bytes(photo(75, 100)), resize=50)
    assert reason == "resized from 100x75 (png source)" and Image.open(io.BytesIO(out)).size == (67, 50)
    assert prepare(data, resize=75) == (data, None)


def _png_header(w: int, h: int) -> bytes:
    """A PNG that only claims its size: signature, IHDR, IEND (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("w, h", [(9000, 8000), (30000, 30000)])  # over max_pixels; over PIL's bomb limit too
def test_huge_images_are_refused_from_the_header(w: int, h: int) -> None:
    with pytest.raises(EncodeError, match="image too large") as info:
        prepare(_png_header(w, h), max_pixels=64_000_000)
    assert info.value.source == "src/file"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an image"),
        (b"plain text, not an image\n", "not an image"),
        (jpeg_bytes(synthetic_rgb(48, 64))[:300], "corrupt or truncated"),
        (jpeg_bytes(synthetic_rgb(7, 64)), "smaller than one 8x8 DCT block"),
        (png_bytes(synthetic_rgb(64, 5)), "smaller than one 8x8 DCT block"),
        (jpeg_bytes(synthetic_rgb(100, 101)), "image too large: 101x100 exceeds max_pixels=10000"),
    ],
    ids=["empty", "text", "truncated", "short", "narrow-png", "huge"],
)
def test_unusable_sources_raise_encode_error_naming_the_source(data: bytes, message: str) -> None:
    with pytest.raises(EncodeError) as info:
        prepare(data, source="photos/cat/x.jpg", max_pixels=10_000)
    assert message in info.value.reason
    assert info.value.source == "photos/cat/x.jpg" and str(info.value).startswith("photos/cat/x.jpg: ")
