"""SpecAugment for the ``mel`` codec: the masks against known spectrograms, the transform contracts (no
mutation, seeded, registered, serialisable), bad parameters, the batch form, and ``make_loader`` over real
``mel`` shards made from synthesized audio."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lossyload import make_loader
from lossyload.augment import augment_from_dict, augment_to_dict, create_augment, list_augments, sample_params
from lossyload.augment import mel as augment_mel
from lossyload.augment.mel import FreqMask, TimeMask, mel_freq_mask, mel_time_mask
from lossyload.errors import ShardError
from lossyload.shard import ShardJob, run_job

from ..conftest import audio_bytes, write

# Arguments for every mel augmentation; test_every_mel_augment_is_covered keeps it complete.
KWARGS: dict[str, dict[str, Any]] = {
    "mel_time_mask": {"max_width": 6, "count": 2, "value": None},
    "mel_freq_mask": {"max_width": 4, "count": 1, "value": -13.8},
}


def spectrogram(mels: int = 16, frames: int = 40, seed: int = 0) -> np.ndarray:
    """A float32 log-mel-like array (values around -8); no entry equals its mean."""
    return (3 * np.random.default_rng(seed).standard_normal((mels, frames)) - 8).astype(np.float32)


def mean_of(x: np.ndarray) -> np.float32:
    return np.float32(x.mean(dtype=np.float64))


def bands(flags: np.ndarray) -> int:
    """How many runs of True ``flags`` holds."""
    return int(np.sum(np.diff(np.concatenate([[0], flags.astype(int), [0]])) == 1))


# ------------------------------------------------------------------------------------------- registry
def test_every_mel_augment_is_covered() -> None:
    defined = {v.name for v in vars(augment_mel).values() if isinstance(v, type) and hasattr(v, "name")}
    assert defined == set(KWARGS)
    assert defined <= set(list_augments())
    assert TimeMask(max_width=24, count=2) == augment_mel.TimeMask(max_width=24, count=2)


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_round_trips_through_dict(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    d = augment_to_dict(t)
    assert d == {"name": name, **KWARGS[name]}
    assert type(t).name == name
    assert augment_from_dict(json.loads(json.dumps(d))) == t
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(t, "max_width", 1)


@pytest.mark.parametrize("name", sorted(KWARGS))
@pytest.mark.parametrize("kwargs", [{"max_width": -1}, {"max_width": 3, "count": -1}, {"max_width": 2.5},
                                    {"max_width": 3, "value": float("nan")}, {"max_width": 3, "value": float("inf")},
                                    {"max_width": 3, "value": "mean"}])
def test_invalid_parameters_raise_value_error(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        create_augment(name, **kwargs)


@pytest.mark.parametrize("t", [TimeMask(max_width=3), FreqMask(max_width=3)], ids=["time", "freq"])
@pytest.mark.parametrize("bad", [np.zeros(16000, np.float32), np.zeros((4, 8), np.int16),
                                 np.zeros((2, 4, 8), np.float32)],
                         ids=["clip", "int", "3d"])
def test_a_sample_that_is_not_a_log_mel_is_refused(t, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=rf"{type(t).__name__} needs a log-mel \[n_mels, frames\] of floats, got"):
        t(bad, np.random.default_rng(0))
    if bad.ndim == 1:
        with pytest.raises(ValueError, match="a 1-D array is an audio clip, not its log-mel"):
            t(bad, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- contracts
SHAPES = [(16, 40), (128, 128), (4, 3), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{f}" for m, f in SHAPES])
@pytest.mark.parametrize("name", sorted(KWARGS))
def test_contract(name: str, shape: tuple[int, int]) -> None:
    t = create_augment(name, **KWARGS[name])
    mel = spectrogram(*shape)
    before = mel.copy()
    for seed in range(5):
        out = t(mel, np.random.default_rng(seed))
        np.testing.assert_array_equal(mel, before)  # input not mutated
        assert out.dtype == np.float32 and out.shape == shape
        assert not np.shares_memory(out, mel)
        np.testing.assert_array_equal(out, t(mel, np.random.default_rng(seed)))  # deterministic for a seed


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_depends_on_rng(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    mel = spectrogram()
    outs = [t(mel, np.random.default_rng(seed)) for seed in range(12)]
    assert any(not np.array_equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize("t", [TimeMask(max_width=0, count=3), FreqMask(max_width=0, count=3),
                               TimeMask(max_width=5, count=0), FreqMask(max_width=5, count=0)],
                         ids=["time-width-0", "freq-width-0", "time-count-0", "freq-count-0"])
def test_no_op_settings_return_a_copy(t) -> None:
    """Settings that change nothing still return a new array (a caller may write into the sample)."""
    mel = spectrogram()
    for seed in range(5):
        out = t(mel, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, mel)
        assert not np.shares_memory(out, mel)


# ------------------------------------------------------------------------------------------- pure functions
def test_mel_time_mask_exact_cells() -> None:
    mel = spectrogram(4, 10)
    expected = mel.copy()
    expected[:, 2:5] = mean_of(mel)
    np.testing.assert_array_equal(mel_time_mask(mel, 2, 3), expected)
    np.testing.assert_array_equal(mel_time_mask(mel, 8, 5)[:, 8:], mean_of(mel))  # clipped at the end
    np.testing.assert_array_equal(mel_time_mask(mel, 8, 5)[:, :8], mel[:, :8])
    np.testing.assert_array_equal(mel_time_mask(mel, -2, 3)[:, 1:], mel[:, 1:])  # clipped at the start
    np.testing.assert_array_equal(mel_time_mask(mel, -2, 3)[:, 0], mean_of(mel))
    np.testing.assert_array_equal(mel_time_mask(mel, 3, 0), mel)
    np.testing.assert_array_equal(mel_time_mask(mel, 0, 2, value=-20.0)[:, :2], -20.0)


def test_mel_freq_mask_exact_cells() -> None:
    mel = spectrogram(8, 5)
    expected = mel.copy()
    expected[1:4] = mean_of(mel)
    np.testing.assert_array_equal(mel_freq_mask(mel, 1, 3), expected)
    np.testing.assert_array_equal(mel_freq_mask(mel, 6, 9)[6:], mean_of(mel))
    np.testing.assert_array_equal(mel_freq_mask(mel, 6, 9)[:6], mel[:6])
    np.testing.assert_array_equal(mel_freq_mask(mel, 2, 0), mel)
    out = mel_freq_mask(mel, 0, 1, value=0)
    assert out.dtype == np.float32 and np.all(out[0] == 0) and not np.shares_memory(out, mel)


# ------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("count", [1, 2, 3])
def test_time_mask_covers_at_most_max_width_times_count_frames(count: int) -> None:
    mel = spectrogram(8, 60)
    widths = set()
    for seed in range(80):
        out = TimeMask(max_width=7, count=count)(mel, np.random.default_rng(seed))
        changed = out != mel
        columns = changed.all(axis=0)
        np.testing.assert_array_equal(changed, np.broadcast_to(columns, changed.shape))  # whole frames only
        assert np.all(out[:, columns] == mean_of(mel))  # every band: the mean of the sample as it came in
        assert columns.sum() <= 7 * count and bands(columns) <= count
        widths.add(int(columns.sum()))
    assert 0 in widths and max(widths) > 7 * (count - 1)
    if count == 1:
        assert widths == set(range(8))  # one band: 0..max_width frames, both ends


@pytest.mark.parametrize("count", [1, 2])
def test_freq_mask_covers_at_most_max_width_times_count_mel_bins(count: int) -> None:
    mel = spectrogram(32, 10)
    heights = set()
    for seed in range(80):
        out = FreqMask(max_width=5, count=count)(mel, np.random.default_rng(seed))
        changed = out != mel
        rows = changed.all(axis=1)
        np.testing.assert_array_equal(changed, np.broadcast_to(rows[:, None], changed.shape))  # whole bins only
        assert np.all(out[rows] == mean_of(mel))
        assert rows.sum() <= 5 * count and bands(rows) <= count
        heights.add(int(rows.sum()))
    assert 0 in heights and max(heights) > 5 * (count - 1)


def test_a_mask_wider_than_the_spectrogram_masks_at_most_everything() -> None:
    mel = spectrogram(3, 4)
    for seed in range(10):
        out = TimeMask(max_width=10)(mel, np.random.default_rng(seed))
        cols = (out != mel).all(axis=0)
        np.testing.assert_array_equal(out[:, ~cols], mel[:, ~cols])
        assert np.all(out[:, cols] == mean_of(mel))


@pytest.mark.parametrize("t", [TimeMask(max_width=6, count=2, value=-13.5),
                               FreqMask(max_width=4, count=2, value=-13.5)],
                         ids=["time", "freq"])
def test_a_given_value_fills_the_bands(t) -> None:
    mel = spectrogram()
    for seed in range(10):
        out = t(mel, np.random.default_rng(seed))
        changed = out != mel
        assert np.all(out[changed] == np.float32(-13.5))


def test_the_second_mask_fills_with_the_mean_it_is_given() -> None:
    """Chained (as the loader applies them), the frequency mask's mean is that of the time-masked sample."""
    mel = spectrogram(16, 30)
    timed = mel_time_mask(mel, 3, 10)
    out = FreqMask(max_width=4).apply(timed, {"start": np.array([2]), "width": np.array([4])})
    np.testing.assert_array_equal(out[2:6], mean_of(timed))
    assert mean_of(timed) != mean_of(mel)


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_batch_form_is_each_sample_with_its_own_mean(name: str) -> None:
    t = create_augment(name, **{**KWARGS[name], "value": None})
    samples = [spectrogram(16, 40, seed) + seed for seed in range(6)]  # distinct means
    batch = np.stack(samples)
    params = t.params(batch, np.random.default_rng(4))
    out = t.apply_batch(batch, params)
    assert out.dtype == np.float32 and out.shape == batch.shape and not np.shares_memory(out, batch)
    for i, x in enumerate(samples):
        np.testing.assert_array_equal(out[i], t.apply(x, sample_params(params, i)))
    with pytest.raises(ValueError, match="needs a batch of log-mels"):
        t.params(samples[0], np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- loader
CONFIG = {"sample_rate": 8000, "seconds": 0.5, "n_mels": 32, "frames": 40}  # small spectrograms: quick


@pytest.fixture(scope="module")
def mel_shards(tmp_path_factory, one_thread) -> Path:
    """Two classes of synthesized tones in noise, 6 clips each, as ``mel`` shards of 5 samples."""
    root = tmp_path_factory.mktemp("mel")
    t = np.arange(4000) / 8000
    for c, cls in enumerate(("low", "high")):
        for i in range(6):
            rng = np.random.default_rng(100 * c + i)
            wave = 0.3 * np.sin(2 * np.pi * (200 + 1500 * c + 40 * i) * t) + 0.05 * rng.standard_normal(t.shape)
            write(root / "src" / cls / f"clip_{i}.wav", audio_bytes(wave, rate=8000))
    run_job(ShardJob(src=str(root / "src"), dest=str(root / "mel"), codec="mel", config=CONFIG, maxcount=5,
                     progress=False))
    return root / "mel"


def epoch(url: Path, transforms: list, **kw) -> tuple[torch.Tensor, list[str]]:
    loader = make_loader(str(url), codec="mel", transforms=transforms, batch_size=4, train=False, return_keys=True,
                         **kw)
    xs, keys = zip(*((x, k) for x, _, k in loader))
    return torch.cat(xs), [k for ks in keys for k in ks]


@pytest.mark.parametrize("batch_path", [True, False], ids=["batch_path=True", "batch_path=False"])
def test_make_loader_masks_mel_batches(mel_shards: Path, batch_path: bool) -> None:
    """Each sample: whole frames set to its log-mel's mean, then whole mel bins to the mean of that; at most
    ``max_width * count`` of each; the same seed gives the same masks. (``batch_path=True`` takes the batch
    path only where the codec decodes whole batches.)"""
    plain, keys = epoch(mel_shards, [])
    masks = [augment_mel.TimeMask(max_width=6, count=2), augment_mel.FreqMask(max_width=5, count=2)]
    masked, masked_keys = epoch(mel_shards, masks, seed=3, batch_path=batch_path)
    assert masked_keys == keys and masked.dtype == torch.float32 and masked.shape == plain.shape == (12, 32, 40)
    again, _ = epoch(mel_shards, masks, seed=3, batch_path=batch_path)
    torch.testing.assert_close(again, masked, rtol=0, atol=0)  # the same seed: the same masks
    other, _ = epoch(mel_shards, masks, seed=4, batch_path=batch_path)
    assert any(not torch.equal(a, b) for a, b in zip(other, masked))
    hits = 0
    for x, ref in zip(masked.numpy(), plain.numpy()):
        changed = x != ref
        cols, rows = changed.all(axis=0), changed.all(axis=1)  # the masked frames and mel bins
        assert cols.sum() <= 12 and rows.sum() <= 10 and bands(cols) <= 2 and bands(rows) <= 2
        timed = ref.copy()
        timed[:, cols] = mean_of(ref)  # the time mask first, with the mean of the log-mel
        expected = timed.copy()
        expected[rows] = mean_of(timed)  # then the frequency mask, with the mean of what it is given
        np.testing.assert_array_equal(x, expected)
        hits += int(changed.any())
    assert hits >= 11  # nearly every sample is masked somewhere


def test_mel_masks_refuse_the_clip_output(mel_shards: Path) -> None:
    with pytest.raises(ShardError, match=r"\[(low|high)/clip_\d\]: ValueError: TimeMask needs a log-mel"):
        epoch(mel_shards, [augment_mel.TimeMask(max_width=6)], options={"output": "wave"})
