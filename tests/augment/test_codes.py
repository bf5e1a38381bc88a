"""Code-domain augmentations of audio code grids (``vq`` and ``encodec`` canonical samples): each against
known grids, the transform contracts (no mutation, seeded, registered, serialisable) and bad parameters."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from lossyload.augment import augment_from_dict, augment_to_dict, create_augment, list_augments
from lossyload.augment import codes as augment_codes
from lossyload.augment.codes import (
    MASK,
    CenterTimeCrop,
    FreqMask,
    LevelDropout,
    RandomTimeCrop,
    TimeMask,
    TimeShift,
    drop_levels,
    mask_rows,
    mask_time,
    shift_time,
    time_crop,
)

# Arguments for every code-domain augmentation; test_every_codes_augment_is_covered keeps it complete.
KWARGS: dict[str, dict[str, Any]] = {
    "codes_random_time_crop": {"frames": 5},
    "codes_center_time_crop": {"frames": 5},
    "codes_time_shift": {"max_shift": 3},
    "codes_time_mask": {"max_width": 4, "count": 2},
    "codes_freq_mask": {"max_width": 2, "count": 1},
    "codes_level_dropout": {"p": 0.7, "min_levels": 1},
}
DETERMINISTIC = {"codes_center_time_crop"}


def grid(rows: int = 6, frames: int = 12) -> np.ndarray:
    """Distinct non-negative int16 codes: value = row * 100 + frame."""
    return (np.arange(rows)[:, None] * 100 + np.arange(frames)[None, :]).astype(np.int16)


def frames_of(out: np.ndarray) -> list[int]:
    """The source frame each output column shows (MASK for a masked column); the grid's values say it."""
    return [int(out[0, j]) % 100 if out[0, j] != MASK else MASK for j in range(out.shape[1])]


# ------------------------------------------------------------------------------------------- registry
def test_every_codes_augment_is_covered() -> None:
    defined = {v.name for v in vars(augment_codes).values() if isinstance(v, type) and hasattr(v, "name")}
    assert defined == set(KWARGS)
    assert defined <= set(list_augments())


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_round_trips_through_dict(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    d = augment_to_dict(t)
    assert d == {"name": name, **KWARGS[name]}
    assert type(t).name == name
    assert augment_from_dict(json.loads(json.dumps(d))) == t
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(t, next(iter(KWARGS[name])), 1)


@pytest.mark.parametrize("name, kwargs", [
    ("codes_random_time_crop", {"frames": 0}),
    ("codes_center_time_crop", {"frames": -3}),
    ("codes_time_shift", {"max_shift": -1}),
    ("codes_time_mask", {"max_width": -1}),
    ("codes_time_mask", {"max_width": 3, "count": -1}),
    ("codes_freq_mask", {"max_width": -2}),
    ("codes_freq_mask", {"max_width": 2, "count": -1}),
    ("codes_level_dropout", {"p": 1.5}),
    ("codes_level_dropout", {"p": -0.1}),
    ("codes_level_dropout", {"min_levels": 0}),
])
def test_invalid_parameters_raise_value_error(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        create_augment(name, **kwargs)


def test_time_crop_of_no_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="frames must be positive"):
        time_crop(grid(), 0, 0)


# ------------------------------------------------------------------------------------------- contracts
SHAPES = [(6, 12), (8, 75), (64, 4), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{f}" for r, f in SHAPES])
@pytest.mark.parametrize("name", sorted(KWARGS))
def test_contract(name: str, shape: tuple[int, int]) -> None:
    t = create_augment(name, **KWARGS[name])
    codes = grid(*shape)
    before = codes.copy()
    for seed in range(5):
        out = t(codes, np.random.default_rng(seed))
        np.testing.assert_array_equal(codes, before)  # input not mutated
        assert out.dtype == np.int16 and out.ndim == 2
        assert not np.shares_memory(out, codes)
        expected_frames = KWARGS[name]["frames"] if "frames" in KWARGS[name] else shape[1]
        assert out.shape == (shape[0], expected_frames)
        assert set(np.unique(out)) <= set(np.unique(codes)) | {MASK}  # codes move or are masked, never made up
        np.testing.assert_array_equal(out, t(codes, np.random.default_rng(seed)))  # deterministic for a seed


@pytest.mark.parametrize("name", sorted(set(KWARGS) - DETERMINISTIC))
def test_depends_on_rng(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    codes = grid(8, 40)
    outs = [t(codes, np.random.default_rng(seed)) for seed in range(12)]
    assert any(not np.array_equal(o, outs[0]) for o in outs[1:])


def test_no_op_settings_return_a_copy() -> None:
    """Settings that change nothing still return a new array (a caller may write into the sample)."""
    codes = grid()
    rng = np.random.default_rng(0)
    for t in (LevelDropout(p=0.0), TimeShift(max_shift=0), TimeMask(max_width=0), FreqMask(max_width=0),
              CenterTimeCrop(frames=12)):
        out = t(codes, rng)
        np.testing.assert_array_equal(out, codes)
        assert not np.shares_memory(out, codes), t


@pytest.mark.parametrize("t", [TimeMask(max_width=3, count=0), FreqMask(max_width=3, count=0)], ids=["time", "freq"])
def test_zero_count_masks_return_a_copy(t) -> None:
    codes = grid()
    assert not np.shares_memory(t(codes, np.random.default_rng(0)), codes)


# ------------------------------------------------------------------------------------------- pure functions
def test_time_crop_inside() -> None:
    codes = grid()
    np.testing.assert_array_equal(time_crop(codes, 3, 5), codes[:, 3:8])
    np.testing.assert_array_equal(time_crop(codes, 0, 12), codes)


def test_time_crop_past_either_end_pads_with_mask() -> None:
    codes = grid(3, 6)
    assert frames_of(time_crop(codes, -2, 5)) == [MASK, MASK, 0, 1, 2]
    assert frames_of(time_crop(codes, 4, 5)) == [4, 5, MASK, MASK, MASK]
    assert frames_of(time_crop(codes, -2, 10)) == [MASK, MASK, 0, 1, 2, 3, 4, 5, MASK, MASK]
    assert frames_of(time_crop(codes, 7, 3)) == [MASK] * 3  # entirely outside
    assert frames_of(time_crop(codes, -9, 3)) == [MASK] * 3
    out = time_crop(codes, -1, 3)
    assert out.dtype == np.int16 and np.all(out[:, 0] == MASK)
    np.testing.assert_array_equal(out[:, 1:], codes[:, :2])  # every row moves together


@pytest.mark.parametrize("shift, expected", [
    (2, [MASK, MASK, 0, 1, 2, 3]),
    (-2, [2, 3, 4, 5, MASK, MASK]),
    (0, [0, 1, 2, 3, 4, 5]),
    (6, [MASK] * 6),
    (-7, [MASK] * 6),
])
def test_shift_time(shift: int, expected: list[int]) -> None:
    out = shift_time(grid(4, 6), shift)
    assert out.shape == (4, 6) and frames_of(out) == expected
    for row in range(4):  # whole columns move
        assert all(out[row, j] == (MASK if f == MASK else row * 100 + f) for j, f in enumerate(expected))


def test_mask_time_exact_cells() -> None:
    codes = grid(3, 8)
    out = mask_time(codes, 2, 3)
    expected = codes.copy()
    expected[:, 2:5] = MASK
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(mask_time(codes, 6, 5)[:, 6:], MASK)  # clipped at the end
    np.testing.assert_array_equal(mask_time(codes, 6, 5)[:, :6], codes[:, :6])
    np.testing.assert_array_equal(mask_time(codes, -2, 3), np.where(np.arange(8) < 1, MASK, codes))
    np.testing.assert_array_equal(mask_time(codes, 3, 0), codes)


def test_mask_rows_exact_cells() -> None:
    codes = grid(6, 4)
    expected = codes.copy()
    expected[1:3] = MASK
    np.testing.assert_array_equal(mask_rows(codes, 1, 2), expected)
    np.testing.assert_array_equal(mask_rows(codes, 4, 9)[4:], MASK)
    np.testing.assert_array_equal(mask_rows(codes, 4, 9)[:4], codes[:4])
    np.testing.assert_array_equal(mask_rows(codes, 2, 0), codes)


@pytest.mark.parametrize("keep", [0, 1, 3, 8, 10])
def test_drop_levels_keeps_the_first_k(keep: int) -> None:
    codes = grid(8, 5)
    out = drop_levels(codes, keep)
    np.testing.assert_array_equal(out[:keep], codes[:keep])
    assert np.all(out[keep:] == MASK)


# ------------------------------------------------------------------------------------------- transforms
def test_random_time_crop_windows_are_contiguous_and_vary() -> None:
    codes = grid(4, 20)
    starts = set()
    for seed in range(200):
        out = RandomTimeCrop(frames=6)(codes, np.random.default_rng(seed))
        start = int(out[0, 0])
        assert 0 <= start <= 14
        np.testing.assert_array_equal(out, codes[:, start : start + 6])
        starts.add(start)
    assert starts == set(range(15))  # every window, both ends included


def test_random_time_crop_of_a_short_or_exact_clip_is_centred_padding() -> None:
    codes = grid(3, 4)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        assert frames_of(RandomTimeCrop(frames=4)(codes, rng)) == [0, 1, 2, 3]
        assert frames_of(RandomTimeCrop(frames=8)(codes, rng)) == [MASK, MASK, 0, 1, 2, 3, MASK, MASK]


def test_center_time_crop() -> None:
    codes = grid(2, 10)
    rng = np.random.default_rng(0)
    assert frames_of(CenterTimeCrop(frames=4)(codes, rng)) == [3, 4, 5, 6]
    assert frames_of(CenterTimeCrop(frames=5)(codes, rng)) == [2, 3, 4, 5, 6]
    assert frames_of(CenterTimeCrop(frames=14)(codes, rng)) == [MASK, MASK] + list(range(10)) + [MASK, MASK]
    np.testing.assert_array_equal(CenterTimeCrop(frames=64)(grid(64, 64), rng), grid(64, 64))


def test_time_shift_stays_within_max_shift() -> None:
    codes = grid(3, 30)
    shifts = set()
    for seed in range(80):
        out = TimeShift(max_shift=4)(codes, np.random.default_rng(seed))
        kept = [j for j, f in enumerate(frames_of(out)) if f != MASK]
        shift = kept[0] - frames_of(out)[kept[0]]
        assert abs(shift) <= 4
        np.testing.assert_array_equal(out, shift_time(codes, shift))
        shifts.add(shift)
    assert shifts == set(range(-4, 5))


def test_time_mask_masks_whole_columns_in_count_bands() -> None:
    codes = grid(5, 40)
    widths = set()
    for seed in range(60):
        out = TimeMask(max_width=6, count=2)(codes, np.random.default_rng(seed))
        masked = out == MASK
        columns = masked.all(axis=0)
        np.testing.assert_array_equal(masked, np.broadcast_to(columns, masked.shape))  # whole columns only
        np.testing.assert_array_equal(out[:, ~columns], codes[:, ~columns])
        bands = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int), [0]])) == 1)
        assert len(bands) <= 2 and columns.sum() <= 12
        if len(bands) == 1 and columns.sum():
            widths.add(int(columns.sum()))
    assert widths and max(widths) <= 12
    single = [int((TimeMask(max_width=6)(codes, np.random.default_rng(s)) == MASK).all(axis=0).sum())
              for s in range(60)]
    assert max(single) == 6 and min(single) == 0  # one band: 0..max_width frames


def test_time_mask_wider_than_the_clip_masks_at_most_everything() -> None:
    codes = grid(2, 3)
    for seed in range(10):
        out = TimeMask(max_width=10)(codes, np.random.default_rng(seed))
        cols = (out == MASK).all(axis=0)
        np.testing.assert_array_equal(out[:, ~cols], codes[:, ~cols])


def test_freq_mask_masks_whole_rows() -> None:
    codes = grid(16, 10)
    heights = set()
    for seed in range(60):
        out = FreqMask(max_width=3)(codes, np.random.default_rng(seed))
        rows = (out == MASK).all(axis=1)
        np.testing.assert_array_equal(out == MASK, np.broadcast_to(rows[:, None], out.shape))  # whole rows only
        np.testing.assert_array_equal(out[~rows], codes[~rows])
        idx = np.flatnonzero(rows)
        if len(idx):
            assert np.array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # one band
        heights.add(len(idx))
    assert heights == {0, 1, 2, 3}


def test_level_dropout_p1_keeps_a_prefix_and_masks_the_rest() -> None:
    codes = grid(8, 6)
    kept = set()
    for seed in range(80):
        out = LevelDropout(p=1.0, min_levels=2)(codes, np.random.default_rng(seed))
        rows = (out == MASK).all(axis=1)
        k = int(np.argmax(rows))  # first dropped level
        assert rows[k:].all() and not rows[:k].any()  # a suffix is dropped
        np.testing.assert_array_equal(out[:k], codes[:k])
        kept.add(k)
    assert kept == set(range(2, 8))  # k uniform in [min_levels, levels - 1]


def test_level_dropout_p0_and_too_few_levels_never_change() -> None:
    codes = grid(8, 6)
    for seed in range(20):
        np.testing.assert_array_equal(LevelDropout(p=0.0)(codes, np.random.default_rng(seed)), codes)
        two = grid(2, 6)
        np.testing.assert_array_equal(LevelDropout(p=1.0, min_levels=2)(two, np.random.default_rng(seed)), two)


def test_level_dropout_rate_follows_p() -> None:
    codes = grid(8, 6)
    dropped = sum((LevelDropout(p=0.3)(codes, np.random.default_rng(s)) == MASK).any() for s in range(400))
    assert 80 < dropped < 160
