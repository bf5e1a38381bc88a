"""``mel``: the conventional audio baseline. Shards keep the clip as 16-bit PCM (FLAC or WAV, mono, fixed
length); the loader decodes it and computes the float32 log-mel spectrogram a conventional model takes
(128 x 128 by default, the same settings the ``vq`` codec quantizes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..media.audio import MelConfig, fit_clip, log_mel, read_audio, write_pcm16
from ..errors import DecodeError, EncodeError
from .registry import register_codec
from .base import Codec, Encoded, TensorSpec


@dataclass(frozen=True, kw_only=True)
class MelCodecConfig(MelConfig):
    format: str = "flac"  # "flac" (lossless, ~2x smaller) | "wav"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in ("flac", "wav"):
            raise ValueError("format must be 'flac' or 'wav'")


@dataclass(frozen=True, kw_only=True)
class MelOptions:
    output: str = "mel"  # "mel": log-mel float32 [n_mels, frames]; "wave": the float32 clip [samples]

    def __post_init__(self) -> None:
        if self.output not in ("mel", "wave"):
            raise ValueError("output must be 'mel' or 'wave'")


@register_codec
class Mel(Codec):
    name = "mel"
    no_dali_form = ("its log-mel spectrograms are computed with torchaudio; DALI's audio decoder and mel filter bank "
                    "do not reproduce them exactly")
    Config = MelCodecConfig
    Options = MelOptions

    @property
    def member(self) -> str:  # type: ignore[override]
        return self.config.format

    def encode(self, data: bytes, *, source: str) -> Encoded:
        clip, notes = fit_clip(data, self.config, source=source)
        return Encoded(write_pcm16(clip, self.config.sample_rate, self.config.format), "; ".join(notes) or None)

    def decode(self, payload: bytes) -> np.ndarray:
        """What sample augmentations transform: the log-mel ``[n_mels, frames]``, or the clip (``output="wave"``)."""
        try:
            wave, rate = read_audio(payload, source="member", max_frames=self.config.length)
        except EncodeError as exc:
            raise DecodeError(f"{self.member} member: {exc.reason}") from exc
        if rate != self.config.sample_rate or wave.shape != (1, self.config.length):
            raise DecodeError(f"{self.member} member is {wave.shape[0]} channel(s) x {wave.shape[1]} at {rate} Hz, "
                              f"not the mono {self.config.length} at {self.config.sample_rate} Hz of this index")
        return wave[0] if self.options.output == "wave" else log_mel(wave[0], self.config)

    def finalize(self, sample: np.ndarray) -> dict[str, np.ndarray]:
        return {self.options.output: sample}

    def output_spec(self) -> dict[str, TensorSpec]:
        c = self.config
        if self.options.output == "wave":
            return {"wave": TensorSpec((c.length,), "float32", f"mono clip at {c.sample_rate} Hz")}
        return {"mel": TensorSpec((c.n_mels, c.frames), "float32", "log-mel power (mel bins x frames)")}
