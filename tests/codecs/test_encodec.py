"""The ``encodec`` codec: 10-bit code packing, the random-initialised model (codebooks initialised, seeded),
the latent from the stored codebooks against EnCodec's own quantizer, load-time bandwidth, masks, the side
file checks and the weights paths. All with ``weights="random"`` (no download); few clips, as encoding runs
the EnCodec encoder."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from lossyload.codecs import create_codec
from lossyload.codecs.encodec import ASSET, CHECKPOINT_URL, Encodec, load_model, pack_codes, unpack_codes
from lossyload.errors import CodecError, DecodeError

RANDOM = {"weights": "random"}
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]  # inside the encodec package


def clip_bytes(seed: int = 0, freq: float = 440.0, rate: int = 16000, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.shape)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return clip_bytes()


@pytest.fixture(scope="module")
def stored(clip: bytes) -> tuple[Encodec, np.ndarray, dict[str, bytes]]:
    """The default random codec (6 kbps: 8 levels), the codes of ``clip`` and the side files."""
    codec = create_codec("encodec", RANDOM)
    codes = codec.decode(codec.encode(clip, source="clip.wav").payload)
    return codec, codes, codec.assets()


def with_assets(assets: dict[str, bytes], config: dict | None = None, **options) -> Encodec:
    codec = create_codec("encodec", config or RANDOM, options)
    codec.load_assets(assets)
    return codec


def quantizer_latent(codes: np.ndarray, bandwidth: float = 6.0) -> np.ndarray:
    """EnCodec's own dequantisation: the quantizer of the random model decodes ``codes`` [levels, T]."""
    model = load_model("random", 0, bandwidth)
    with torch.inference_mode():
        return model.quantizer.decode(torch.from_numpy(codes.astype(np.int64))[:, None, :])[0].numpy()


# ------------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("shape", [(8, 75), (2, 1), (32, 75), (3, 7)])
def test_pack_unpack_round_trip(shape: tuple[int, int]) -> None:
    codes = np.random.default_rng(shape[0] * 100 + shape[1]).integers(0, 1024, shape).astype(np.int64)
    codes.flat[0], codes.flat[-1] = 1023, 0
    payload = pack_codes(codes)
    assert payload[:4] == b"E" + bytes([shape[0]]) + shape[1].to_bytes(2, "little")
    assert len(payload) == 4 + (shape[0] * shape[1] * 10 + 7) // 8
    back = unpack_codes(payload)
    assert back.shape == shape
    np.testing.assert_array_equal(back, codes)


def test_payload_size_of_one_second_at_6_kbps() -> None:
    assert len(pack_codes(np.zeros((8, 75), np.int64))) == 4 + 750


def test_pack_is_little_endian_10_bit() -> None:
    assert pack_codes(np.array([[1, 1023]]))[4:] == bytes([0b00000001, 0b11111100, 0b00001111])


@pytest.mark.parametrize("mangle", [
    lambda p: p[:-1],  # truncated body
    lambda p: p + b"\0",  # one byte too many
    lambda p: b"X" + p[1:],  # wrong magic
    lambda p: p[:3],  # not even a header
    lambda p: p[:1] + bytes([9]) + p[2:],  # header says 9 levels
], ids=["truncated", "longer", "magic", "header", "levels"])
def test_bad_payload_is_a_decode_error(mangle) -> None:
    payload = pack_codes(np.random.default_rng(0).integers(0, 1024, (8, 75)))
    with pytest.raises(DecodeError):
        unpack_codes(mangle(payload))


def test_decode_refuses_codes_of_another_shape() -> None:
    codec = create_codec("encodec", RANDOM)
    with pytest.raises(DecodeError, match=r"holds codes \[4, 75\], expected \[8, 75\]"):
        codec.decode(pack_codes(np.zeros((4, 75), np.int64)))
    with pytest.raises(DecodeError, match=r"expected \[8, 75\]"):
        codec.decode(pack_codes(np.zeros((8, 74), np.int64)))


# ------------------------------------------------------------------------------------------- random model
def test_random_model_codes_use_the_codebooks(stored) -> None:
    codec, codes, _ = stored
    assert codes.dtype == np.int16 and codes.shape == (8, 75)
    assert codes.min() >= 0 and codes.max() < 1024
    assert len(np.unique(codes[0])) >= 10  # not all 0: the codebooks were initialised
    assert all(len(np.unique(level)) >= 10 for level in codes)


def test_random_model_is_seeded(clip: bytes, stored) -> None:
    _, codes, _ = stored
    load_model.cache_clear()  # a fresh model from the seed, not the cached one
    again = create_codec("encodec", RANDOM)
    np.testing.assert_array_equal(again.decode(again.encode(clip, source="c").payload), codes)
    other = create_codec("encodec", {**RANDOM, "seed": 1})
    other_codes = other.decode(other.encode(clip, source="c").payload)
    assert (other_codes != codes).mean() > 0.5


def test_codes_depend_on_the_audio(stored) -> None:
    codec, codes, _ = stored
    other = codec.decode(codec.encode(clip_bytes(seed=1, freq=1800.0), source="c2").payload)
    assert (other != codes).mean() > 0.3


def test_codes_output_marks_masked_entries(stored) -> None:
    codec, codes, _ = stored
    masked = codes.copy()
    masked[5:] = -1
    masked[:, 20:30] = -1
    out = codec.finalize(masked)
    assert list(out) == ["codes"] and out["codes"].dtype == np.int16
    assert np.all(out["codes"][5:] == 1024) and np.all(out["codes"][:, 20:30] == 1024)
    np.testing.assert_array_equal(out["codes"][:5, :20], codes[:5, :20])


# ------------------------------------------------------------------------------------------- latent
def test_latent_equals_the_quantizer_decode(stored) -> None:
    _, codes, assets = stored
    codec = with_assets(assets, output="latent")
    latent = codec.finalize(codes)["latent"]
    assert latent.dtype == np.float32 and latent.shape == (128, 75) and latent.flags.c_contiguous
    np.testing.assert_allclose(latent, quantizer_latent(codes), rtol=1e-5, atol=1e-5)
    assert codec.output_spec()["latent"].shape == (128, 75)


def test_assets_hold_the_codebooks_of_the_stored_levels(stored) -> None:
    _, _, assets = stored
    assert list(assets) == [ASSET]
    books = np.load(io.BytesIO(assets[ASSET]), allow_pickle=False)
    assert books.shape == (8, 1024, 128) and books.dtype == np.float32
    model = load_model("random", 0, 6.0)
    np.testing.assert_array_equal(books[3], model.quantizer.vq.layers[3]._codebook.embed.numpy())
    small = create_codec("encodec", {**RANDOM, "bandwidth": 1.5}).assets()
    assert np.load(io.BytesIO(small[ASSET])).shape == (2, 1024, 128)


def test_load_time_bandwidth_keeps_the_first_levels(stored) -> None:
    codec, codes, assets = stored
    low = with_assets(assets, output="codes", bandwidth=3.0)
    assert low.levels == 4
    payload = pack_codes(codes)
    np.testing.assert_array_equal(low.decode(payload), codes[:4])
    assert low.output_spec()["codes"].shape == (4, 75)
    latent = with_assets(assets, output="latent", bandwidth=3.0)
    got = latent.finalize(latent.decode(payload))["latent"]
    np.testing.assert_allclose(got, quantizer_latent(codes[:4]), rtol=1e-5, atol=1e-5)
    full = with_assets(assets, output="latent").finalize(codes)["latent"]
    assert not np.allclose(got, full, atol=1e-3)  # the finer levels did contribute
    assert with_assets(assets, bandwidth=6.0).levels == 8


def test_masked_entries_contribute_nothing_to_the_latent(stored) -> None:
    _, codes, assets = stored
    codec = with_assets(assets, output="latent")
    model = load_model("random", 0, 6.0)
    masked = codes.copy()
    masked[3] = -1  # one level dropped everywhere
    masked[:, 40] = -1  # one frame masked at every level
    latent = codec.finalize(masked)["latent"]
    assert np.all(latent[:, 40] == 0)
    level3 = model.quantizer.vq.layers[3]._codebook.embed[torch.from_numpy(codes[3].astype(np.int64))].numpy().T
    expected = quantizer_latent(codes) - level3
    keep = np.arange(75) != 40
    np.testing.assert_allclose(latent[:, keep], expected[:, keep], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(codec.finalize(np.full((8, 75), -1, np.int16))["latent"], 0)


def test_latent_without_the_codebooks_is_a_codec_error(stored) -> None:
    _, codes, _ = stored
    codec = create_codec("encodec", RANDOM, {"output": "latent"})
    with pytest.raises(CodecError, match=f"needs the codebooks \\({ASSET}\\)"):
        codec.finalize(codes)
    codec.load_assets({})  # no side file named: still none
    with pytest.raises(CodecError, match="needs the codebooks"):
        codec.finalize(codes)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.mark.parametrize("blob, message", [
    (npy(np.zeros((4, 1024, 128), np.float32)), r"holds float32\[4, 1024, 128\], expected float32\[8, 1024, 128\]"),
    (npy(np.zeros((8, 1024, 64), np.float32)), "expected float32"),
    (npy(np.zeros((8, 1024, 128), np.float64)), "holds float64"),
    (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a plain .npy array"),
    (pickle.dumps(np.zeros((8, 1024, 128), np.float32)), "not a plain .npy array"),
    (npy(np.zeros((8, 1024, 128), np.float32))[:5000], "not a plain .npy array"),
], ids=["levels", "dim", "dtype", "object-array", "pickle", "truncated"])
def test_bad_side_file_is_a_codec_error(blob: bytes, message: str) -> None:
    codec = create_codec("encodec", RANDOM, {"output": "latent"})
    with pytest.raises(CodecError, match=message):
        codec.load_assets({ASSET: blob})


def test_empty_side_file_is_a_codec_error() -> None:
    codec = create_codec("encodec", RANDOM, {"output": "latent"})
    with pytest.raises(CodecError, match="not a plain .npy array"):
        codec.load_assets({ASSET: b""})


# ------------------------------------------------------------------------------------------- weights
def test_missing_pretrained_weights_say_what_to_do(tmp_path, clip: bytes) -> None:
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        codec = create_codec("encodec")  # weights="pretrained" by default
        with pytest.raises(CodecError) as info:
            codec.encode(clip, source="c.wav")
        with pytest.raises(CodecError):
            codec.assets()
    finally:
        torch.hub.set_dir(old)
    message = str(info.value)
    assert CHECKPOINT_URL in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "weights" in message and "random" in message
    with pytest.raises(CodecError, match="not found at /no/such/file.th"):
        create_codec("encodec", {"weights": "/no/such/file.th"}).encode(clip, source="c.wav")


def test_weights_from_a_state_dict_file(tmp_path, clip: bytes, stored) -> None:
    _, codes, assets = stored
    path = tmp_path / "weights.th"
    torch.save(load_model("random", 0, 6.0).state_dict(), path)
    codec = create_codec("encodec", {"weights": str(path), "seed": 5})  # the file's weights, not the seed's
    try:
        np.testing.assert_array_equal(codec.decode(codec.encode(clip, source="c").payload), codes)
        assert codec.assets()[ASSET] == assets[ASSET]
    finally:
        load_model.cache_clear()
