"""``lossyload.media.audio``: any audio file to a fixed-length mono clip (and what was changed), 16-bit PCM writing,
the log-mel spectrogram. Every clip is generated here and written with ``soundfile``."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torchaudio.functional as AF

from lossyload.media.audio import ClipConfig, MelConfig, fit_clip, log_mel, write_pcm16
from lossyload.errors import EncodeError

from ..conftest import audio_bytes

RATE = 16000
CFG = ClipConfig()  # 16 kHz, 1 s, max 30 s
MEL = MelConfig()
LSB = 1 / 32768  # one step of 16-bit PCM


pytestmark = pytest.mark.usefixtures("one_thread")


def sine(freq: float, seconds: float, rate: int = RATE, amp: float = 0.3) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(round(rate * seconds))) / rate)


def noisy(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A tone plus noise: every sample distinct, so positions can be checked."""
    return sine(440, seconds, rate) + 0.05 * np.random.default_rng(seed).standard_normal(int(round(rate * seconds)))


def pcm16(wave: np.ndarray) -> np.ndarray:
    """What 16-bit PCM keeps of ``wave``: written and read back by libsndfile."""
    return sf.read(io.BytesIO(audio_bytes(wave, RATE)), dtype="float32")[0]


# ------------------------------------------------------------------------------------------- fit_clip
def test_exact_length_mono_clip_is_unchanged() -> None:
    wave = noisy(1.0)
    clip, notes = fit_clip(audio_bytes(wave, RATE), CFG, source="a.wav")
    assert notes == []
    assert clip.dtype == np.float32 and clip.shape == (16000,)
    assert np.abs(clip - wave).max() <= LSB


def test_short_clip_is_zero_padded_at_the_end() -> None:
    wave = noisy(0.4)
    clip, notes = fit_clip(audio_bytes(wave, RATE, "FLAC"), CFG, source="short.flac")
    assert clip.shape == (16000,) and notes == []
    assert np.abs(clip[:6400] - wave).max() <= LSB
    assert np.all(clip[6400:] == 0)


def test_long_clip_is_centre_cropped_and_noted() -> None:
    wave = noisy(1.5)  # 24000 samples: the centre 16000 start at 4000
    clip, notes = fit_clip(audio_bytes(wave, RATE), CFG, source="long.wav")
    assert clip.shape == (16000,)
    assert np.abs(clip - wave[4000:20000]).max() <= LSB
    assert np.abs(clip - wave[4001:20001]).max() > 10 * LSB  # the position matters
    assert len(notes) == 1 and notes[0].startswith("cropped") and "1.50 s" in notes[0]


def test_other_rate_is_resampled_keeping_the_pitch() -> None:
    clip, notes = fit_clip(audio_bytes(sine(1000, 1.0, rate=44100), 44100), CFG, source="cd.wav")
    assert clip.shape == (16000,) and clip.dtype == np.float32
    assert len(notes) == 1 and notes[0].startswith("resampled") and "44100" in notes[0] and "16000" in notes[0]
    spectrum = np.abs(np.fft.rfft(clip))  # 1 Hz per bin for a 1 s clip
    assert spectrum.argmax() == 1000
    assert 0.25 < np.abs(clip[1000:-1000]).max() < 0.35  # the amplitude too


def test_stereo_is_averaged_to_mono_and_noted() -> None:
    left, right = sine(440, 1.0), 0.5 * noisy(1.0, seed=3)
    clip, notes = fit_clip(audio_bytes(np.stack([left, right], axis=1), RATE), CFG, source="st.wav")
    assert notes == ["downmixed: 2 channels to mono"]
    expected = (pcm16(left) + pcm16(right)) / 2
    assert np.abs(clip - expected).max() <= 1e-6
    assert np.abs(clip - pcm16(left)).max() > 0.05  # not just one channel


def test_clipped_audio_is_kept_and_noted() -> None:
    wave = np.clip(sine(200, 1.0, amp=3.0), -1, 1)  # most of the samples sit at full scale
    clip, notes = fit_clip(audio_bytes(wave, RATE), CFG, source="loud.wav")
    assert len(notes) == 1 and notes[0].startswith("clipped")
    assert np.abs(clip - wave).max() <= LSB
    quiet, quiet_notes = fit_clip(audio_bytes(sine(200, 1.0, amp=0.99), RATE), CFG, source="ok.wav")
    assert not any(n.startswith("clipped") for n in quiet_notes)  # a loud clean peak is not clipping


def test_all_changes_are_noted_together() -> None:
    wave = np.stack([noisy(2.0, 44100), noisy(2.0, 44100, seed=1)], axis=1)
    clip, notes = fit_clip(audio_bytes(wave, 44100, "FLAC"), CFG, source="x.flac")
    assert clip.shape == (16000,)
    assert [n.split(":")[0] for n in notes] == ["downmixed", "resampled", "cropped"]


def test_far_longer_than_max_seconds_is_refused() -> None:
    data = audio_bytes(noisy(3.0), RATE)
    with pytest.raises(EncodeError, match="far longer than the window") as info:
        fit_clip(data, ClipConfig(max_seconds=2.5), source="podcast.wav")
    assert info.value.source == "podcast.wav" and str(info.value).startswith("podcast.wav: ")
    clip, notes = fit_clip(data, ClipConfig(max_seconds=3.0), source="podcast.wav")  # at the limit: cropped
    assert notes[0].startswith("cropped")


@pytest.mark.parametrize("data, reason", [
    (b"", "not a readable audio file"),
    (audio_bytes(np.zeros(0), RATE), "empty: zero-length audio"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt not really", "not a readable audio file"),
    (b"shopping list\n" * 20, "not a readable audio file"),
    (audio_bytes(np.array([0.1, np.nan, -0.1] * 200, np.float32), RATE, subtype="FLOAT"), "NaN"),
    (audio_bytes(np.array([0.1, np.inf, -0.1] * 200, np.float32), RATE, subtype="FLOAT"), "infinite"),
], ids=["zero-bytes", "zero-frames", "bad-riff", "text", "nan", "inf"])
def test_unusable_input_is_an_encode_error_naming_the_source(data: bytes, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason) as info:
        fit_clip(data, CFG, source="dir/bad.wav")
    assert info.value.source == "dir/bad.wav" and str(info.value).startswith("dir/bad.wav: ")


def test_clip_config_is_checked() -> None:
    for bad in (dict(sample_rate=800), dict(seconds=0), dict(seconds=2.0, max_seconds=1.0)):
        with pytest.raises(ValueError):
            ClipConfig(**bad)
    assert ClipConfig(sample_rate=8000, seconds=0.5).length == 4000
    with pytest.raises(ValueError):
        MelConfig(win_length=2048)  # longer than n_fft


# ------------------------------------------------------------------------------------------- log_mel
def test_log_mel_shape_dtype_and_floor() -> None:
    mel = log_mel(noisy(1.0).astype(np.float32), MEL)
    assert mel.shape == (128, 128) and mel.dtype == np.float32 and np.isfinite(mel).all()
    silent = log_mel(np.zeros(16000, np.float32), MEL)
    np.testing.assert_allclose(silent, np.log(MEL.log_floor), rtol=1e-6)
    assert mel.min() > silent.max()  # noise lifts every band above the floor


def expected_band(freq: float) -> int:
    """The mel band whose triangular filter weighs the tone's FFT bin most (torchaudio's own filterbank)."""
    fb = AF.melscale_fbanks(MEL.n_fft // 2 + 1, MEL.f_min, MEL.sample_rate / 2, MEL.n_mels, MEL.sample_rate)
    return int(fb[int(round(freq * MEL.n_fft / MEL.sample_rate))].argmax())


@pytest.mark.parametrize("freq", [500.0, 1000.0, 2500.0, 4000.0])
def test_a_tone_lands_in_its_mel_band(freq: float) -> None:
    mel = log_mel(sine(freq, 1.0).astype(np.float32), MEL)
    peak = int(mel[:, 4:-4].mean(axis=1).argmax())  # away from the padded edges
    assert abs(peak - expected_band(freq)) <= 1, (peak, expected_band(freq))


def test_higher_tone_higher_band() -> None:
    peaks = [int(log_mel(sine(f, 1.0).astype(np.float32), MEL).mean(axis=1).argmax()) for f in (300, 900, 3000, 7000)]
    assert peaks == sorted(peaks) and len(set(peaks)) == 4


def test_log_mel_of_a_batch_equals_per_clip() -> None:
    waves = np.stack([noisy(1.0, seed=s) for s in range(3)]).astype(np.float32)
    batch = log_mel(waves, MEL)
    assert batch.shape == (3, 128, 128) and batch.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(batch[i], log_mel(waves[i], MEL), atol=1e-4)
    assert not np.allclose(batch[0], batch[1], atol=1e-2)


def test_log_mel_hop_follows_the_frames() -> None:
    cfg = MelConfig(frames=64, n_mels=40)
    assert cfg.hop_length == 250
    mel = log_mel(noisy(1.0).astype(np.float32), cfg)
    assert mel.shape == (40, 64)


# ------------------------------------------------------------------------------------------- write_pcm16
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_write_pcm16_round_trip(fmt: str) -> None:
    wave = noisy(1.0).astype(np.float32)
    wave[:10] = [1.5, -1.5, 1.0, -1.0, 0, 0, 0, 0, 0, 0]  # out of range: clipped to full scale
    data = write_pcm16(wave, RATE, fmt)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        fmt.upper(), "PCM_16", RATE, 1, 16000)
    back, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE and back.shape == (16000,)
    assert np.abs(back - np.clip(wave, -1, 1)).max() <= LSB
    assert back[0] > 0.999 and back[1] == -1.0
    clip, notes = fit_clip(data, CFG, source=f"x.{fmt}")  # what the mel codec stores reads back as a clip
    assert np.array_equal(clip, back) and notes == []  # 4 samples at full scale: under 0.1 %, not "clipped"
