"""The ``vq`` codec: code packing, block layout, nearest-vector search, codebook fitting, the stored payload and
the three outputs (codes, bit-planes, codebook vectors) with masked cells."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from lossyload.media.audio import fit_clip, log_mel
from lossyload.codecs import create_codec
from lossyload.codecs.vq import Vq, nearest, pack, to_blocks, unpack
from lossyload.errors import CodecError, DecodeError

from ..conftest import audio_bytes

RATE = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


def tonal(i: int, seconds: float = 1.0) -> bytes:
    """Source A: a quiet low tone (most bands near silence)."""
    t = np.arange(int(RATE * seconds)) / RATE
    noise = 0.002 * np.random.default_rng(i).standard_normal(t.shape)
    return audio_bytes(0.2 * np.sin(2 * np.pi * (200 + 30 * i) * t) + noise)


def noise(i: int, seconds: float = 1.0) -> bytes:
    """Source B: loud broadband noise (every band loud)."""
    return audio_bytes(0.5 * np.random.default_rng(100 + i).standard_normal(int(RATE * seconds)).clip(-3, 3) / 3)


def samples() -> list[tuple[str, bytes]]:
    return [(f"a{i}.wav", tonal(i)) for i in range(3)] + [(f"b{i}.wav", noise(i)) for i in range(3)]


@pytest.fixture(scope="module")
def fitted() -> Vq:
    return create_codec("vq").fit(samples())


# ------------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 2, 7, 4096, 4097])
def test_pack_unpack_round_trip(bits: int, count: int) -> None:
    codes = np.random.default_rng(bits * 10_000 + count).integers(0, 2**bits, count).astype(np.uint8)
    codes[0] = 2**bits - 1  # the largest code survives
    data = pack(codes, bits)
    assert len(data) == ((count + 1) // 2 if bits <= 4 else count)
    back = unpack(data, bits, count)
    assert back is not None and back.shape == (count,)
    np.testing.assert_array_equal(back, codes)


def test_pack_layout_is_high_nibble_first() -> None:
    assert pack(np.array([1, 2, 3]), 4) == bytes([0x12, 0x30])
    assert pack(np.array([200, 7]), 8) == bytes([200, 7])


@pytest.mark.parametrize("bits, count, size", [(4, 10, 4), (4, 10, 6), (4, 9, 4), (8, 10, 9), (8, 10, 11), (2, 0, 1)])
def test_unpack_of_the_wrong_length_is_none(bits: int, count: int, size: int) -> None:
    assert unpack(bytes(size), bits, count) is None


# ------------------------------------------------------------------------------------------- blocks
def test_to_blocks_layout() -> None:
    spec = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(to_blocks(spec, (2, 2)),
                                  [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])
    np.testing.assert_array_equal(to_blocks(spec, (1, 2)), np.arange(16).reshape(8, 2))
    np.testing.assert_array_equal(to_blocks(spec, (2, 1)),
                                  [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14], [11, 15]])


def test_nearest_picks_the_true_nearest() -> None:
    codebook = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    vectors = np.array([[1, 1], [9, 1], [2, 8], [6, 7], [-5, -5], [20, 3], [4.9, 0]], np.float32)
    np.testing.assert_array_equal(nearest(vectors, codebook), [0, 1, 2, 3, 0, 1, 0])
    rng = np.random.default_rng(0)
    book, x = rng.normal(0, 3, (16, 4)).astype(np.float32), rng.normal(0, 3, (500, 4)).astype(np.float32)
    brute = ((x[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
    got = nearest(x, book)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, brute)


# ------------------------------------------------------------------------------------------- fit
def test_fit_learns_a_sorted_codebook(fitted: Vq) -> None:
    unfitted = create_codec("vq")
    assert unfitted.needs_fit() and not fitted.needs_fit()
    book = np.asarray(fitted.config.codebook)
    assert book.shape == (16, 4) and fitted.codebook.dtype == np.float32
    np.testing.assert_array_equal(fitted.codebook, book.astype(np.float32))
    means = book.mean(axis=1)
    assert np.all(np.diff(means) >= 0)  # quiet -> loud
    assert len(np.unique(book.round(3), axis=0)) == 16
    # the codebook spans both sources: near-silent bands of the tone and loud bands of the noise
    assert means[0] < -6 and means[-1] > 2
    a = fitted.decode(fitted.encode(tonal(9), source="a").payload)
    b = fitted.decode(fitted.encode(noise(9), source="b").payload)
    assert np.median(a) < np.median(b)
    assert fitted.config.fit_seed == 0 and fitted.options == unfitted.options


def test_fit_is_deterministic_for_a_seed(fitted: Vq) -> None:
    again = create_codec("vq").fit(samples())
    assert again.config == fitted.config
    other = create_codec("vq", {"fit_seed": 1}).fit(samples())
    assert other.config.codebook != fitted.config.codebook


def test_fit_skips_unusable_samples_and_refuses_when_none_is_usable(fitted: Vq) -> None:
    with_bad = create_codec("vq").fit([("bad.wav", b"not audio"), *samples(), ("empty.wav", audio_bytes(np.zeros(0)))])
    assert with_bad.config == fitted.config
    with pytest.raises(CodecError, match="none of the 2 samples"):
        create_codec("vq").fit([("bad.wav", b"not audio"), ("empty.wav", audio_bytes(np.zeros(0)))])


def test_fit_keeps_the_other_settings() -> None:
    vq = create_codec("vq", {"codebook_size": 4, "block": [4, 2], "n_mels": 32, "frames": 32},
                      {"output": "bits", "frames": 8}).fit(samples())
    assert np.asarray(vq.config.codebook).shape == (4, 8)
    assert (vq.config.n_mels, vq.config.frames, vq.config.block, vq.config.bits) == (32, 32, (4, 2), 2)
    assert vq.options.output == "bits" and vq.options.frames == 8


# ------------------------------------------------------------------------------------------- encode / decode
def test_encode_decode_gives_the_nearest_codes(fitted: Vq) -> None:
    data = tonal(5)
    enc = fitted.encode(data, source="a.wav")
    assert enc.transcoded is None
    clip, _ = fit_clip(data, fitted.config, source="a.wav")
    expected = nearest(to_blocks(log_mel(clip, fitted.config), (2, 2)), fitted.codebook).reshape(64, 64)
    codes = fitted.decode(enc.payload)
    assert codes.dtype == np.int16 and codes.shape == (64, 64)
    np.testing.assert_array_equal(codes, expected)
    assert len(np.unique(codes)) >= 4
    # 4096 codes of 4 bits: 2048 bytes packed, less after zstd
    assert len(enc.payload) < 2048
    assert zstandard.ZstdDecompressor().decompress(enc.payload) == pack(expected, 4)


def test_encode_notes_what_fit_clip_changed(fitted: Vq) -> None:
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.1 * np.sin(2 * np.pi * 900 * t)], axis=1)
    enc = fitted.encode(audio_bytes(stereo, 44100), source="s.wav")
    assert [n.split(":")[0] for n in enc.transcoded.split("; ")] == ["downmixed", "resampled", "cropped"]


def test_encode_without_a_codebook_says_how_to_get_one() -> None:
    with pytest.raises(CodecError, match="--config-from"):
        create_codec("vq").encode(tonal(0), source="a.wav")


def test_decode_refuses_codes_beyond_the_codebook() -> None:
    book = [[float(i)] * 4 for i in range(10)]  # 10 codes: still 4 bits each, so 10..15 can be stored
    vq = create_codec("vq", {"codebook_size": 10, "codebook": book})
    codes = np.zeros((64, 64), np.uint8)
    ok = zstandard.ZstdCompressor().compress(pack(codes + 9, 4))
    assert vq.decode(ok).max() == 9
    codes[3, 7] = 12
    with pytest.raises(DecodeError, match="code 12 >= codebook_size 10"):
        vq.decode(zstandard.ZstdCompressor().compress(pack(codes, 4)))


def test_decode_refuses_a_grid_of_another_size(fitted: Vq) -> None:
    with pytest.raises(DecodeError, match="not the 64x64 code grid"):
        fitted.decode(zstandard.ZstdCompressor().compress(pack(np.zeros((32, 64), np.uint8), 4)))
    with pytest.raises(DecodeError, match="zstd"):
        fitted.decode(b"\x28\xb5\x2f\xfd" + bytes(20))


# ------------------------------------------------------------------------------------------- finalize
def grid_with_masks(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    codes = np.random.default_rng(seed).integers(0, 16, (64, 64)).astype(np.int16)
    masked = np.zeros_like(codes, bool)
    masked[:, 10:13] = True  # a time mask
    masked[40:44] = True  # a frequency mask
    return np.where(masked, -1, codes).astype(np.int16), masked


def with_output(vq: Vq, output: str) -> Vq:
    return create_codec("vq", vq.stored_config(), {"output": output})


def test_finalize_codes(fitted: Vq) -> None:
    codes, masked = grid_with_masks()
    out = with_output(fitted, "codes").finalize(codes)
    assert list(out) == ["codes"] and out["codes"].dtype == np.uint8
    assert np.all(out["codes"][masked] == 16)
    np.testing.assert_array_equal(out["codes"][~masked], codes[~masked])


def test_finalize_bits_are_the_code_bit_planes(fitted: Vq) -> None:
    codes, masked = grid_with_masks(1)
    bits = with_output(fitted, "bits").finalize(codes)["bits"]
    assert bits.dtype == np.int8 and bits.shape == (4, 64, 64)
    assert set(np.unique(bits[:, ~masked])) == {-1, 1}
    assert np.all(bits[:, masked] == 0)
    rebuilt = sum(((bits[i].astype(int) + 1) // 2) << i for i in range(4))
    np.testing.assert_array_equal(rebuilt[~masked], codes[~masked])
    # LSB first: code 1 sets plane 0 only
    one = with_output(fitted, "bits").finalize(np.ones((64, 64), np.int16))["bits"]
    assert np.all(one[0] == 1) and np.all(one[1:] == -1)


def test_finalize_vectors_are_codebook_rows_channels_first(fitted: Vq) -> None:
    codes, masked = grid_with_masks(2)
    vectors = with_output(fitted, "vectors").finalize(codes)["vectors"]
    assert vectors.dtype == np.float32 and vectors.shape == (4, 64, 64) and vectors.flags.c_contiguous
    expected = np.moveaxis(fitted.codebook[np.where(masked, 0, codes)], -1, 0)
    np.testing.assert_array_equal(vectors[:, ~masked], expected[:, ~masked])
    assert np.all(vectors[:, masked] == 0)
    assert np.all(vectors[:, ~masked] != 0)  # a fitted codebook holds no zero entry to hide a mistake
