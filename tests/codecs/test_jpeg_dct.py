"""``jpeg-dct`` load-time options and storage variants, checked against the coefficients read directly."""

from __future__ import annotations

import numpy as np
import pytest

from lossyload.media import jpeg
from lossyload.augment.dct import CenterCrop
from lossyload.codecs import create_codec
from lossyload.media.dct import INV_ZIGZAG, ZIGZAG, DctCoefficients
from lossyload.errors import CodecError, DecodeError

from ..conftest import THREE_TABLES, jpeg_bytes, photo, png_bytes

KEEPS = [(64, 64), (10, 6), (1, 1), (3, 20)]


@pytest.fixture(scope="module")
def source() -> bytes:
    return jpeg_bytes(photo(64, 96, top=40, left=100), subsampling=0, qtables=THREE_TABLES)  # Y, Cb, Cr tables differ


@pytest.fixture(scope="module")
def full(source: bytes) -> DctCoefficients:
    return jpeg.read_coefficients(source)


def finalize(source: bytes, config=None, **options) -> dict[str, np.ndarray]:
    codec = create_codec("jpeg-dct", config, options)
    return codec.finalize(codec.decode(codec.encode(source, source="x").payload))


def natural_channels(k: int) -> np.ndarray:
    """The natural indices of the k lowest zigzag frequencies, ascending."""
    return np.sort(ZIGZAG[:k])


@pytest.mark.parametrize("keep", KEEPS)
def test_zigzag_order_is_the_stored_order(source: bytes, full: DctCoefficients, keep) -> None:
    out = finalize(source, keep=keep)
    np.testing.assert_array_equal(out["y"], full.y[: keep[0]])
    np.testing.assert_array_equal(out["cbcr"], full.c[:, : keep[1]].reshape(2 * keep[1], *full.c.shape[2:]))
    np.testing.assert_array_equal(out["qt"], full.qt)


@pytest.mark.parametrize("keep", KEEPS)
def test_natural_order_sorts_channels_by_natural_index(source: bytes, full: DctCoefficients, keep) -> None:
    out = finalize(source, keep=keep, order="natural")
    ny, nc = natural_channels(keep[0]), natural_channels(keep[1])
    assert np.all(np.diff(ny) > 0)
    for i, n in enumerate(ny):  # channel i holds natural frequency n = u * 8 + v
        np.testing.assert_array_equal(out["y"][i], full.y[INV_ZIGZAG[n]])
    cbcr = out["cbcr"].reshape(2, keep[1], *full.c.shape[2:])
    for i, n in enumerate(nc):
        np.testing.assert_array_equal(cbcr[:, i], full.c[:, INV_ZIGZAG[n]])


@pytest.mark.parametrize("order", ["zigzag", "natural"])
@pytest.mark.parametrize("keep", KEEPS)
def test_dequantize_multiplies_by_the_matching_table_entry(source: bytes, full: DctCoefficients, keep, order) -> None:
    plain = finalize(source, keep=keep, order=order)
    deq = finalize(source, keep=keep, order=order, dequantize=True)
    freqs_y = ZIGZAG[: keep[0]] if order == "zigzag" else natural_channels(keep[0])
    freqs_c = ZIGZAG[: keep[1]] if order == "zigzag" else natural_channels(keep[1])
    assert deq["y"].dtype == np.int16 and deq["cbcr"].dtype == np.int16
    expect_y = plain["y"].astype(np.int64) * full.qt[0][freqs_y][:, None, None]
    np.testing.assert_array_equal(deq["y"], expect_y)
    cb, cr = np.split(plain["cbcr"].astype(np.int64), 2)
    expect_c = np.concatenate([cb * full.qt[1][freqs_c][:, None, None], cr * full.qt[2][freqs_c][:, None, None]])
    np.testing.assert_array_equal(deq["cbcr"], expect_c)
    assert len({tuple(t) for t in full.qt}) == 3  # the tables differ, so a swapped table would show


@pytest.mark.parametrize("keep", KEEPS)
def test_concat_repeats_chroma_2x_after_luma(source: bytes, full: DctCoefficients, keep) -> None:
    sep = finalize(source, keep=keep)
    out = finalize(source, keep=keep, chroma="concat")
    assert set(out) == {"dct"}
    ky, kc = keep
    hb, wb = full.blocks
    assert out["dct"].shape == (ky + 2 * kc, hb, wb) and out["dct"].dtype == np.int16
    np.testing.assert_array_equal(out["dct"][:ky], sep["y"])
    chroma = out["dct"][ky:]
    for a in (0, 1):
        for b in (0, 1):
            np.testing.assert_array_equal(chroma[:, a::2, b::2], sep["cbcr"])


def test_concat_output_spec_with_crop(source: bytes) -> None:
    codec = create_codec("jpeg-dct", None, {"keep": (6, 3), "chroma": "concat", "crop": 48})
    spec = codec.output_spec()
    assert spec["dct"].shape == (12, 6, 6)
    out = codec.finalize(CenterCrop(size=48)(codec.decode(source), np.random.default_rng(0)))
    assert out["dct"].shape == (12, 6, 6)


def test_coefficient_storage_decodes_like_jpeg_storage(source: bytes) -> None:
    for stored in [(64, 64), (16, 8)]:
        coef = create_codec("jpeg-dct", {"storage": "coefficients", "keep": list(stored)})
        assert coef.member == "dct.zst" and coef.keep == stored
        payload = coef.encode(source, source="x").payload
        from_jpeg = create_codec("jpeg-dct", None, {"keep": stored}).decode(source)
        d = coef.decode(payload)
        np.testing.assert_array_equal(d.y, from_jpeg.y)
        np.testing.assert_array_equal(d.c, from_jpeg.c)
        np.testing.assert_array_equal(d.qt, from_jpeg.qt)
        # fewer at load time than stored: the lowest ones
        fewer = create_codec("jpeg-dct", {"storage": "coefficients", "keep": list(stored)}, {"keep": (4, 2)})
        d4 = fewer.decode(payload)
        assert d4.keep == (4, 2)
        np.testing.assert_array_equal(d4.y, from_jpeg.y[:4])


def test_keep_larger_than_stored_is_refused() -> None:
    with pytest.raises(CodecError, match=r"keep=\(32, 8\) asks for more coefficients than stored \(\(16, 8\)\)"):
        create_codec("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]}, {"keep": [32, 8]})
    # JPEG storage holds all 64
    assert create_codec("jpeg-dct", {"storage": "jpeg"}, {"keep": [64, 64]}).keep == (64, 64)


def test_payload_with_fewer_coefficients_than_asked_is_a_decode_error(source: bytes) -> None:
    small = create_codec("jpeg-dct", {"storage": "coefficients", "keep": [4, 2]}).encode(source, source="x").payload
    reader = create_codec("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]})
    with pytest.raises(DecodeError, match="fewer"):
        reader.decode(small)


def test_encode_reports_transcoding_and_copies_jpegs(source: bytes) -> None:
    codec = create_codec("jpeg-dct")
    assert codec.member == "jpg"
    enc = codec.encode(source, source="x")
    assert enc.payload == source and enc.transcoded is None
    enc = codec.encode(png_bytes(photo(32, 32)), source="x")
    assert enc.transcoded == "png source" and enc.payload[:2] == b"\xff\xd8"
    coef = create_codec("jpeg-dct", {"storage": "coefficients"})
    assert coef.encode(png_bytes(photo(32, 32)), source="x").transcoded == "png source"


# ------------------------------------------------------------------------------------------- fused crop
WINDOWS = [(0, 0, 2, 2), (1, 2, 3, 2), (-1, -2, 4, 5), (3, 4, 2, 2), (9, 9, 2, 2), (-3, 1, 2, 1)]


@pytest.mark.parametrize("storage", ["jpeg", "coefficients"])
@pytest.mark.parametrize("kind", ["420", "444", "422", "grey", "odd"])
@pytest.mark.parametrize("window", WINDOWS)
def test_decode_window_equals_decode_then_crop(kind: str, window, storage: str) -> None:
    from lossyload.augment.dct import crop

    src = photo(75, 100) if kind == "odd" else photo(64, 96)
    opts = {"subsampling": {"444": 0, "422": 1}.get(kind, 2)}
    data = jpeg_bytes(src, mode="L", **opts) if kind == "grey" else jpeg_bytes(src, **opts)
    codec = create_codec("jpeg-dct", {"storage": storage}, {"keep": [16, 8]})
    payload = codec.encode(data, source="t").payload
    seen = []

    def win(hm: int, wm: int):
        seen.append((hm, wm))
        return window

    got = codec.decode_window(payload, win)
    want = codec.decode(payload)
    assert seen == [(want.y.shape[1] // 2, want.y.shape[2] // 2)]  # the window sees the image's MCU grid
    want = crop(want, *window)
    for a, b in ((got.y, want.y), (got.c, want.c), (got.qt, want.qt)):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_member_names_the_compression() -> None:
    names = {c: create_codec("jpeg-dct", {"storage": "coefficients", "compression": c}).member for c in jpeg.COMPRESSIONS}
    assert names == {"zstd": "dct.zst", "lz4": "dct.lz4"}
    assert create_codec("jpeg-dct").member == "jpg"
