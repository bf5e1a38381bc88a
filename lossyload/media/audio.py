"""Audio helpers shared by the audio codecs: read any audio file into a fixed-length mono clip (saying what
was changed), write 16-bit PCM, and the log-mel spectrogram.

Reading uses libsndfile (``soundfile``: WAV, FLAC, OGG/Vorbis, MP3); resampling and the mel filterbank use
torchaudio. Both are imported lazily (extra ``audio``).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np

from ..errors import EncodeError, require

AUDIO_EXTS = ("wav", "flac", "ogg", "mp3", "opus")
CLIPPED_FRACTION = 0.001  # more samples than this at full scale: noted as clipped


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    """How a source file becomes one clip: mono at ``sample_rate``, exactly ``seconds`` long (shorter files
    are zero-padded at the end, longer ones centre-cropped and noted; longer than ``max_seconds``: skipped)."""

    sample_rate: int = 16000
    seconds: float = 1.0
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.sample_rate < 1000 or self.seconds <= 0 or self.max_seconds < self.seconds:
            raise ValueError("need sample_rate >= 1000, seconds > 0 and max_seconds >= seconds")

    @property
    def length(self) -> int:
        return int(round(self.sample_rate * self.seconds))


@dataclass(frozen=True, kw_only=True)
class MelConfig(ClipConfig):
    """Log-mel spectrogram of a clip: ``n_mels`` x ``frames``, hop = clip length / frames."""

    n_mels: int = 128
    frames: int = 128
    n_fft: int = 1024
    win_length: int = 400  # 25 ms at 16 kHz
    f_min: float = 20.0
    f_max: float | None = None  # None: sample_rate / 2
    log_floor: float = 1e-6  # log(mel power + floor)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_mels < 1 or self.frames < 1 or self.hop_length < 1 or self.win_length > self.n_fft:
            raise ValueError("need n_mels, frames >= 1, frames <= clip samples and win_length <= n_fft")

    @property
    def hop_length(self) -> int:
        return self.length // self.frames


def read_audio(data: bytes, *, source: str, max_frames: int | None = None) -> tuple[np.ndarray, int]:
    """``(float32 [channels, frames], sample rate)``; :class:`EncodeError` for what is not usable audio, or (before
    anything is allocated) for a file stating more than ``max_frames`` frames."""
    sf = require("soundfile", "audio")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if max_frames is not None and f.frames > max_frames:
                raise EncodeError(f"states {f.frames} frames, more than the {max_frames} expected", source=source)
            wave, rate = f.read(dtype="float32", always_2d=True), f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        why = getattr(exc, "error_string", None) or str(exc).strip() or type(exc).__name__
        raise EncodeError(f"not a readable audio file ({why})", source=source) from exc
    if wave.shape[0] == 0:
        raise EncodeError("empty: zero-length audio", source=source)
    if not np.isfinite(wave).all():
        raise EncodeError("contains NaN or infinite samples", source=source)
    return np.ascontiguousarray(wave.T), int(rate)


def fit_clip(data: bytes, cfg: ClipConfig, *, source: str) -> tuple[np.ndarray, list[str]]:
    """Read ``data`` and bring it to ``cfg``: float32 ``[cfg.length]`` plus notes on what was changed."""
    wave, rate = read_audio(data, source=source)
    notes = []
    seconds = wave.shape[1] / rate
    if seconds > cfg.max_seconds:
        raise EncodeError(f"far longer than the window: {seconds:.1f} s > max_seconds {cfg.max_seconds:g}", source=source)
    if wave.shape[0] > 1:
        notes.append(f"downmixed: {wave.shape[0]} channels to mono")
    mono = wave.mean(axis=0)
    clipped = float(np.mean(np.abs(mono) >= 0.999))
    if clipped > CLIPPED_FRACTION:
        notes.append(f"clipped: {100 * clipped:.1f}% of samples at full scale (kept)")
    if rate != cfg.sample_rate:
        mono = resample(mono, rate, cfg.sample_rate)
        notes.append(f"resampled: {rate} Hz to {cfg.sample_rate} Hz")
    n = cfg.length
    if mono.shape[0] > n:
        start = (mono.shape[0] - n) // 2
        notes.append(f"cropped: {seconds:.2f} s to the centre {cfg.seconds:g} s")
        mono = mono[start : start + n]
    elif mono.shape[0] < n:
        mono = np.pad(mono, (0, n - mono.shape[0]))
    return np.ascontiguousarray(mono, np.float32), notes


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    torch = require("torch", "audio")
    F = require("torchaudio.functional", "audio")
    with torch.inference_mode():
        return F.resample(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), rate, target).numpy()


def write_pcm16(wave: np.ndarray, rate: int, fmt: str) -> bytes:
    """16-bit PCM ``fmt`` ("wav" | "flac") bytes of a float clip in [-1, 1]."""
    sf = require("soundfile", "audio")
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


@functools.lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, n_fft: int, win_length: int, hop_length: int, f_min: float,
                   f_max: float | None, n_mels: int):
    T = require("torchaudio.transforms", "audio")
    return T.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                            f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0, center=True)


def log_mel(wave: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """float32 ``[..., n_mels, frames]`` log-mel power of clips ``[..., cfg.length]``."""
    torch = require("torch", "audio")
    with torch.inference_mode():
        transform = _mel_transform(cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.f_min, cfg.f_max,
                                   cfg.n_mels)
        mel = transform(torch.from_numpy(np.ascontiguousarray(wave, np.float32)))
        return torch.log(mel[..., : cfg.frames] + cfg.log_floor).numpy()
