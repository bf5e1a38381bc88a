"""Offline ``keywords`` dataset: a small Speech-Commands-like keyword-spotting set synthesised with espeak-ng.

Each class is one spoken word, each sample one voice saying it; splits are by voice. The full description is
``TASK`` (also written to README.txt). :func:`lossyload.datasets.speech_commands.import_speech_commands` lays out the real Speech Commands alike.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lossyload.media.audio import write_pcm16
from lossyload.errors import LossyloadError, MissingDependencyError

from .speech_commands import WORDS
from .layout import SPLITS, cached_summary, count_by_split, finish, prepare, write_split_files

TASK = """\
Task "keyword spotting": each class is one spoken English word; a sample is `seconds` of mono 16-bit PCM
audio at `sample_rate` Hz holding that word said once by one espeak-ng voice (dialect+variant, e.g.
en-us+f3). Splits are BY VOICE: every clip of a voice is in one split, so validation and test voices are
never heard in training. Per clip (voice x word): espeak-ng pitch (-p) and speed (-s, words per minute)
drawn from `pitch` and `speed`; sox resamples to `sample_rate` and, with probability `reverb`, adds sox
`reverb` with reverberance 20-80% and room scale 20-100%; leading/trailing silence (below -40 dB of the
peak) is trimmed, the word placed at a random offset in the window (centre-cropped if longer); background
noise is added at an SNR drawn from `snr_db`, measured against the power of the word's samples. Noise
kinds, equally likely: white, pink (1/f), brown (1/f^2) Gaussian noise, or mains hum (50 or 60 Hz with 4
decaying harmonics plus white noise 20 dB below). Finally the clip is peak-normalised to -1 dBFS.
Caveats: synthetic speech is far cleaner and more regular than real speech; this is a pipeline smoke test
and a small benchmark, not a substitute for Speech Commands (use `--speech-commands PATH` for the real one).
Every random choice comes from numpy Generators seeded by (seed, voice index, word index), so the same
config gives byte-identical files (given the same espeak-ng, sox and libsndfile builds), whatever the
number of workers.
"""
DIALECTS: tuple[str, ...] = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                             "en-gb-x-gbcwmd", "en-029")
NOISE_KINDS = ("white", "pink", "brown", "hum")
REVERBERANCE = (20, 80)  # sox reverb reverberance %, inclusive
ROOM_SCALE = (20, 100)  # sox reverb room-scale %, inclusive
PEAK = 10 ** (-1 / 20)  # -1 dBFS
TRIM_DB = -40.0
INSTALL = "apt-get install espeak-ng sox"
_SUBSET_STREAM, _SPLIT_STREAM, _NOISE_STREAM = 1_000_001, 1_000_002, 1
_SAFE = re.compile(r"[^A-Za-z0-9-]")
_WORD = re.compile(r"^[a-z]+$")


@dataclass(frozen=True, kw_only=True)
class KeywordsConfig:
    """What to build. Changing any field changes the output (and invalidates a cached build)."""

    words: tuple[str, ...] = WORDS
    dialects: tuple[str, ...] = DIALECTS
    variants: tuple[str, ...] | None = None  # None: every `espeak-ng --voices=variant`, sorted
    max_voices: int | None = None  # a seed-chosen subset of the dialect x variant voices
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    sample_rate: int = 16000
    seconds: float = 1.0
    pitch: tuple[int, int] = (20, 80)
    speed: tuple[int, int] = (120, 220)
    snr_db: tuple[float, float] = (5.0, 30.0)
    reverb: float = 0.5
    format: str = "wav"
    tars: bool = False

    def __post_init__(self) -> None:
        for name in ("words", "dialects", "variants", "split", "pitch", "speed", "snr_db"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else tuple(value))
        for name in ("words", "dialects", "variants"):
            names = getattr(self, name)
            if names is not None and (not names or len(set(names)) != len(names)):
                raise ValueError(f"KeywordsConfig: {name} must be non-empty and unique, got {names}")
        if not all(_WORD.match(w) for w in self.words):
            raise ValueError(f"KeywordsConfig: words must be lower-case letters, got {self.words}")
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"KeywordsConfig: split must be 3 positive fractions summing to 1, got {self.split}")
        if self.seed < 0 or (self.max_voices is not None and self.max_voices < 3):
            raise ValueError("KeywordsConfig: need seed >= 0 and max_voices None or >= 3")
        if not 8000 <= self.sample_rate <= 48000 or not 0.1 <= self.seconds <= 10:
            raise ValueError("KeywordsConfig: need 8000 <= sample_rate <= 48000 and 0.1 <= seconds <= 10")
        for name, lo_ok, hi_ok in (("pitch", 0, 99), ("speed", 80, 450), ("snr_db", -20, 100)):
            lo, hi = getattr(self, name)
            if not lo_ok <= lo <= hi <= hi_ok:
                raise ValueError(f"KeywordsConfig: {name} must satisfy {lo_ok} <= min <= max <= {hi_ok}")
        if not 0 <= self.reverb <= 1 or self.format not in ("wav", "flac"):
            raise ValueError("KeywordsConfig: need 0 <= reverb <= 1 and format 'wav' or 'flac'")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists


@dataclass(frozen=True, kw_only=True)
class ClipPlan:
    """Everything needed to render one clip; ``voice`` is the espeak-ng ``-v`` argument."""

    split: str
    word: str
    label: int
    voice: str
    pitch: int
    speed: int
    reverb: tuple[int, int] | None  # (reverberance %, room scale %)
    offset: float  # fraction of the free room placed before the word
    noise: str
    snr_db: float
    noise_seed: tuple[int, ...]
    sample_rate: int
    frames: int
    format: str

    @property
    def key(self) -> str:
        return f"{self.word}/{voice_name(self.voice)}"

    @property
    def path(self) -> str:
        return f"{self.split}/{self.key}.{self.format}"


def voice_name(voice: str) -> str:
    """A filesystem- and WebDataset-safe name for an espeak-ng voice: ``en-us+f3`` -> ``en-us_f3``."""
    return "_".join(_SAFE.sub("-", part) for part in voice.split("+"))


def check_tools() -> None:
    """Raise :class:`MissingDependencyError` unless espeak-ng and sox are on PATH."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise MissingDependencyError(f"{' and '.join(missing)} not found on PATH: {INSTALL}")


def _call(argv: list[str], what: str, data: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(argv, input=data, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise MissingDependencyError(f"{argv[0]} not found: {INSTALL}") from exc
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        raise LossyloadError(f"{what}: {argv[0]} failed ({done.returncode}): {stderr}")
    return done.stdout


def espeak_variants() -> tuple[str, ...]:
    """Every voice variant espeak-ng lists (the name after ``+``), sorted case-insensitively."""
    out = _call(["espeak-ng", "--voices=variant"], "listing espeak-ng variants").decode()
    files = [line.split()[4] for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return tuple(sorted((f.removeprefix("!v/") for f in files), key=lambda v: (v.lower(), v)))


def split_sizes(config: KeywordsConfig, n: int) -> tuple[int, int, int]:
    """Voices per split: at least one each (``n >= 3``), validation and test rounded, train the rest."""
    if n < 3:
        raise ValueError(f"keywords: need at least 3 voices for 3 splits, got {n}")
    val, test = (max(1, round(n * f)) for f in config.split[1:])
    while n - val - test < 1:
        val, test = (val - 1, test) if val >= test else (val, test - 1)
    return n - val - test, val, test


def assign_voices(config: KeywordsConfig, variants: tuple[str, ...]) -> dict[str, list[tuple[int, str]]]:
    """``{split: [(voice index, voice)]}``; the index is the voice's place in dialect x variant order."""
    voices = [f"{d}+{v}" for d in config.dialects for v in variants]
    chosen = list(range(len(voices)))
    if config.max_voices is not None and config.max_voices < len(voices):
        rng = np.random.default_rng([config.seed, _SUBSET_STREAM])
        picked = rng.choice(len(voices), config.max_voices, replace=False)
        chosen = sorted(int(i) for i in picked)
    order = np.random.default_rng([config.seed, _SPLIT_STREAM]).permutation(chosen)
    sizes, start, splits = split_sizes(config, len(chosen)), 0, {}
    for split, size in zip(SPLITS, sizes):
        splits[split] = [(int(i), voices[int(i)]) for i in sorted(order[start:start + size])]
        start += size
    return splits


def plan_clip(config: KeywordsConfig, split: str, voice_index: int, voice: str, word_index: int) -> ClipPlan:
    """Draw the parameters of one clip; pure and deterministic."""
    rng = np.random.default_rng([config.seed, voice_index, word_index])
    word = config.words[word_index]
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    speed = int(rng.integers(config.speed[0], config.speed[1] + 1))
    reverb = (int(rng.integers(REVERBERANCE[0], REVERBERANCE[1] + 1)),
              int(rng.integers(ROOM_SCALE[0], ROOM_SCALE[1] + 1)))
    return ClipPlan(
        split=split, word=word, label=sorted(config.words).index(word), voice=voice, pitch=pitch, speed=speed,
        reverb=reverb if rng.random() < config.reverb else None, offset=float(rng.random()),
        noise=str(rng.choice(NOISE_KINDS)), snr_db=float(rng.uniform(*config.snr_db)),
        noise_seed=(config.seed, voice_index, word_index, _NOISE_STREAM), sample_rate=config.sample_rate,
        frames=round(config.seconds * config.sample_rate), format=config.format,
    )


def plan_clips(config: KeywordsConfig, variants: tuple[str, ...]) -> list[ClipPlan]:
    """All clips, sorted by split and then key (the tar member order)."""
    plans = [plan_clip(config, split, vi, voice, wi)
             for split, voices in assign_voices(config, variants).items()
             for vi, voice in voices for wi in range(len(config.words))]
    return sorted(plans, key=lambda p: (SPLITS.index(p.split), p.key))


def synthesize(plan: ClipPlan) -> np.ndarray:
    """espeak-ng, then sox (resample, optional reverb) -> float32 mono at ``plan.sample_rate``."""
    what = f"voice {plan.voice}, word {plan.word!r}"
    espeak = ["espeak-ng", "-v", plan.voice, "-p", str(plan.pitch), "-s", str(plan.speed), "--stdout", plan.word]
    wav = _call(espeak, what)
    effects = ["rate", str(plan.sample_rate)]
    if plan.reverb is not None:
        effects += ["reverb", str(plan.reverb[0]), "50", str(plan.reverb[1])]
    raw = _call(["sox", "-R", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1", "-",
                 *effects], what, wav)
    audio = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if audio.size == 0 or not np.any(audio):
        raise LossyloadError(f"{what}: espeak-ng produced silence")
    return audio


def trim_silence(x: np.ndarray, db: float = TRIM_DB) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``db`` below the peak."""
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (db / 20))
    return x[loud[0]:loud[-1] + 1]


def fit_length(x: np.ndarray, frames: int, offset: float) -> tuple[np.ndarray, slice]:
    """Pad ``x`` to ``frames`` with the word at ``offset`` (fraction of free room) or centre-crop it;
    returns the clip and where the word lies in it."""
    if len(x) >= frames:
        start = (len(x) - frames) // 2
        return x[start:start + frames].copy(), slice(0, frames)
    start = min(int(offset * (frames - len(x) + 1)), frames - len(x))
    out = np.zeros(frames)
    out[start:start + len(x)] = x
    return out, slice(start, start + len(x))


def make_noise(rng: np.random.Generator, kind: str, frames: int, sample_rate: int) -> np.ndarray:
    """Unit-variance background noise: white, pink (1/f), brown (1/f^2) Gaussian, or 50/60 Hz mains hum."""
    if kind == "hum":
        t = np.arange(frames) / sample_rate
        base, phases = (50.0, 60.0)[int(rng.integers(2))], rng.uniform(0, 2 * np.pi, 5)
        x = sum(0.6**h * np.sin(2 * np.pi * base * (h + 1) * t + phases[h]) for h in range(5))
        x = x / np.sqrt(np.mean(x**2)) + 0.1 * rng.standard_normal(frames)
    else:
        alpha = NOISE_KINDS.index(kind)  # power spectrum ~ 1/f**alpha
        spectrum = np.fft.rfft(rng.standard_normal(frames))
        f = np.fft.rfftfreq(frames)
        f[0] = f[1]
        x = np.fft.irfft(spectrum / f ** (alpha / 2), n=frames)
    x = x - x.mean()
    return x / np.sqrt(np.mean(x**2))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_power: float | None = None) -> np.ndarray:
    """``speech + g * noise`` with ``g`` chosen so that ``10 log10(speech_power / mean((g * noise)**2))`` is
    ``snr_db``; ``speech_power`` defaults to ``mean(speech**2)``."""
    power = float(np.mean(speech**2)) if speech_power is None else speech_power
    gain = np.sqrt(power / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return speech + gain * noise


def encode(x: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Peak-normalise to -1 dBFS and write 16-bit PCM WAV or FLAC."""
    return write_pcm16(x * (PEAK / np.abs(x).max()), sample_rate, fmt)


def render_clip(plan: ClipPlan) -> bytes:
    """Synthesise, place, add noise to and encode one clip as ``plan`` says."""
    word = trim_silence(synthesize(plan))
    clip, where = fit_length(word, plan.frames, plan.offset)
    noise = make_noise(np.random.default_rng(list(plan.noise_seed)), plan.noise, plan.frames, plan.sample_rate)
    mixed = mix_at_snr(clip, noise, plan.snr_db, speech_power=float(np.mean(clip[where] ** 2)))
    return encode(mixed, plan.sample_rate, plan.format)


def _render_item(plan: ClipPlan) -> tuple[str, str, int, str, bytes]:
    return plan.split, plan.key, plan.label, plan.format, render_clip(plan)


def _rendered(plans: list[ClipPlan], workers: int, progress: bool) -> Iterator[tuple[str, str, int, str, bytes]]:
    bar = tqdm(total=len(plans), desc="make-keywords", unit="clip", disable=not progress)
    if workers <= 1:
        for plan in plans:
            yield _render_item(plan)
            bar.update()
    else:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for item in pool.imap(_render_item, plans, chunksize=4):
                yield item
                bar.update()
    bar.close()


def build_keywords(dest: str | os.PathLike[str], config: KeywordsConfig = KeywordsConfig(), *,
                   workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Write ``dest/{train,validation,test}/<word>/<voice>.<ext>`` (or ``dest/{split}.tar`` with
    ``config.tars``) plus README.txt; return the summary. A complete build of the same config
    (``dest/keywords.json``, written last) is reused as is."""
    dest = Path(dest)
    cached = cached_summary(dest, config.to_json())
    if cached is not None:
        return cached
    check_tools()
    known = espeak_variants()
    if set(config.variants or ()) - set(known):  # espeak-ng silently ignores an unknown variant
        raise ValueError(f"keywords: unknown espeak-ng variants {sorted(set(config.variants) - set(known))}")
    variants = config.variants or known
    plans = plan_clips(config, variants)
    prepare(dest)
    nbytes = write_split_files(dest, config.tars, _rendered(plans, workers or os.cpu_count() or 1, progress))
    voices = {s: sorted({voice_name(p.voice) for p in plans if p.split == s}) for s in SPLITS}
    counts = count_by_split((p.split, p.word) for p in plans)
    summary = {"task": "keyword-spotting", "source": "espeak-ng", "labels": sorted(config.words), "counts": counts,
               "totals": {s: sum(c.values()) for s, c in counts.items()}, "voices": voices,
               "format": config.format, "tars": config.tars, "bytes": nbytes}
    header = ["keywords: keyword spotting, built offline by lossyload.datasets.keywords", "", *TASK.splitlines(),
              "", f"variants: {' '.join(variants)}", *(f"{s} voices: {' '.join(v)}" for s, v in voices.items())]
    return finish(dest, config.to_json(), summary, header)
