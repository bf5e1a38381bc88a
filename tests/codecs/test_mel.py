"""The ``mel`` baseline codec: shards keep the fitted clip as 16-bit FLAC/WAV; the loader computes the same
log-mel spectrogram ``vq`` quantizes (or returns the clip)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from lossyload.media.audio import fit_clip, log_mel
from lossyload.codecs import create_codec
from lossyload.errors import DecodeError

from ..conftest import audio_bytes

RATE = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


def noisy(seconds: float, rate: int = RATE, seed: int = 0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    rng = np.random.default_rng(seed)
    waves = [0.3 * np.sin(2 * np.pi * (440 + 200 * c) * t) + 0.05 * rng.standard_normal(t.shape)
             for c in range(channels)]
    return waves[0] if channels == 1 else np.stack(waves, axis=1)


SOURCES = {
    "exact": lambda: audio_bytes(noisy(1.0)),
    "short": lambda: audio_bytes(noisy(0.4, seed=1), fmt="FLAC"),
    "stereo-44k-long": lambda: audio_bytes(noisy(2.0, rate=44100, seed=2, channels=2), rate=44100),
    "float-wav": lambda: audio_bytes(noisy(1.0, seed=3).astype(np.float32), subtype="FLOAT"),
}


@pytest.mark.parametrize("fmt", ["flac", "wav"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_encode_stores_the_fitted_clip_as_16_bit_pcm(fmt: str, source: str) -> None:
    codec = create_codec("mel", {"format": fmt})
    assert codec.member == fmt
    data = SOURCES[source]()
    enc = codec.encode(data, source=source)
    info = sf.info(io.BytesIO(enc.payload))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        fmt.upper(), "PCM_16", RATE, 1, 16000)
    clip, notes = fit_clip(data, codec.config, source=source)
    assert enc.transcoded == ("; ".join(notes) or None)
    stored = sf.read(io.BytesIO(enc.payload), dtype="float32")[0]
    assert np.abs(stored - clip).max() <= 1 / 32768
    wave = create_codec("mel", {"format": fmt}, {"output": "wave"}).decode(enc.payload)
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    np.testing.assert_array_equal(wave, stored)


def test_flac_is_smaller_than_wav() -> None:
    data = SOURCES["exact"]()
    flac = create_codec("mel").encode(data, source="x").payload
    wav = create_codec("mel", {"format": "wav"}).encode(data, source="x").payload
    assert len(wav) >= 32000 and len(flac) < 0.9 * len(wav)


@pytest.mark.parametrize("source, atol", [("exact", 1e-6), ("short", 1e-6), ("stereo-44k-long", 3e-2),
                                           ("float-wav", 3e-2)])
def test_mel_output_equals_log_mel_of_the_clip(source: str, atol: float) -> None:
    """A 16-bit 16 kHz mono source is stored exactly; a resampled or float one is rounded to 16 bits, which
    moves the log-mel values of the quietest narrow bands by up to ~1e-2 (1e-3 on average)."""
    codec = create_codec("mel")
    data = SOURCES[source]()
    out = codec.finalize(codec.decode(codec.encode(data, source="x").payload))
    assert list(out) == ["mel"]
    mel = out["mel"]
    assert mel.dtype == np.float32 and mel.shape == (128, 128)
    expected = log_mel(fit_clip(data, codec.config, source="x")[0], codec.config)
    np.testing.assert_allclose(mel, expected, atol=atol, rtol=0)
    assert np.abs(mel - expected).mean() < 1e-3
    assert codec.output_spec()["mel"].shape == mel.shape


def test_wave_output() -> None:
    codec = create_codec("mel", None, {"output": "wave"})
    data = SOURCES["short"]()
    out = codec.finalize(codec.decode(codec.encode(data, source="x").payload))
    assert list(out) == ["wave"] and out["wave"].dtype == np.float32 and out["wave"].shape == (16000,)
    np.testing.assert_allclose(out["wave"], fit_clip(data, codec.config, source="x")[0], atol=1 / 32768)
    assert np.all(out["wave"][6400:] == 0)
    assert codec.output_spec()["wave"].shape == (16000,)


def test_other_settings_reach_the_output() -> None:
    codec = create_codec("mel", {"sample_rate": 8000, "seconds": 0.5, "n_mels": 40, "frames": 50})
    enc = codec.encode(SOURCES["exact"](), source="x")
    assert sf.info(io.BytesIO(enc.payload)).frames == 4000 and "resampled" in enc.transcoded
    assert codec.finalize(codec.decode(enc.payload))["mel"].shape == (40, 50)


@pytest.mark.parametrize("member, message", [
    (audio_bytes(noisy(2.0, rate=8000), rate=8000, fmt="FLAC"), "x 16000 at 8000 Hz"),  # the right length
    (audio_bytes(noisy(0.9), fmt="FLAC"), "x 14400 at 16000 Hz"),
    (audio_bytes(noisy(1.0, channels=2), fmt="FLAC"), "2 channel"),
], ids=["rate", "length", "stereo"])
def test_member_of_another_shape_is_a_decode_error(member: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        create_codec("mel").decode(member)


@pytest.mark.parametrize("payload", [b"", b"fLaC" + bytes(50), b"RIFF....WAVE", b"\x00" * 1000])
def test_garbage_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="member"):
        create_codec("mel").decode(payload)


def test_nan_member_is_a_decode_error() -> None:
    bad = audio_bytes(np.full(16000, np.nan, np.float32), subtype="FLOAT")
    with pytest.raises(DecodeError, match="NaN"):
        create_codec("mel", {"format": "wav"}).decode(bad)
