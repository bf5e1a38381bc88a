"""Tests of the DCT-domain augmentations: registry, contracts, and each against its pixel operation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossyload.augment import (
    augment_from_dict,
    augment_to_dict,
    create_augment,
    list_augments,
)
from lossyload.augment import dct as augment_dct
from lossyload.augment.dct import (
    Brightness,
    CoefficientDropout,
    FrequencyMask,
    RandomCrop,
    brightness,
    crop,
    hflip,
    mask_frequencies,
)
from lossyload.media.dct import DctCoefficients, from_pixels, to_pixels
from lossyload.errors import CodecError

# Arguments for every DCT-domain augmentation; test_every_dct_augment_is_covered keeps it complete.
KWARGS: dict[str, dict[str, Any]] = {
    "dct_hflip": {"p": 0.5},
    "dct_random_crop": {"size": 64},
    "dct_center_crop": {"size": 64},
    "dct_brightness": {"max_delta": 20.0},
    "dct_frequency_mask": {"max_width": 16},
    "dct_coefficient_dropout": {"p": 0.3},
}
CROPS = {"dct_random_crop", "dct_center_crop"}
DETERMINISTIC = {"dct_center_crop"}

# JPEG Annex K tables at about quality 75 (natural order); luma DC step 8 -> 1 grey level.
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
         69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
         81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
_CHROMA += [47, 66] + [99] * 6 + [99] * 32
QT75 = np.maximum(np.array([_LUMA, _CHROMA, _CHROMA]) // 2, 1).astype(np.uint16)


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB with detailed luma and smooth chroma, not left-right symmetric, away from clipping."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    luma = 128 + 45 * np.sin(xx / 5 + yy / 7) + 15 * np.cos(yy / 3) + 0.15 * (xx - w / 2)
    luma += np.random.default_rng(seed).normal(0.0, 3.0, luma.shape)
    cb, cr = 30 * np.sin(xx / 40 + yy / 60), 30 * np.cos(yy / 30 - xx / 50)
    rgb = np.stack([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb], -1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def random_coefs(seed: int, mcus: tuple[int, int] = (4, 5), keep: tuple[int, int] = (64, 64)) -> DctCoefficients:
    """Random coefficients with no zero entries (so zeroing is observable)."""
    rng = np.random.default_rng(seed)
    hb, wb = 2 * mcus[0], 2 * mcus[1]

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return (rng.integers(1, 40, shape) * rng.choice([-1, 1], shape)).astype(np.int16)

    c = draw((2, keep[1], hb // 2, wb // 2))
    return DctCoefficients(y=draw((keep[0], hb, wb)), c=c, qt=QT75.copy())


def luma_of(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return photo_like(96, 128)  # 6 x 8 MCUs


@pytest.fixture(scope="module")
def coefs(image: np.ndarray) -> DctCoefficients:
    return from_pixels(image, QT75)


@pytest.fixture(params=[(64, 64), (16, 6)], ids=["keep64", "keep16"])
def any_coefs(request: pytest.FixtureRequest, image: np.ndarray) -> DctCoefficients:
    return from_pixels(image, QT75, keep=request.param)


def snapshot(d: DctCoefficients) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return d.y.copy(), d.c.copy(), np.array(d.qt, copy=True)


def assert_same(a: DctCoefficients, b: DctCoefficients) -> None:
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.c, b.c)
    np.testing.assert_array_equal(a.qt, b.qt)


# ------------------------------------------------------------------------------------------- registry


def test_every_dct_augment_is_covered() -> None:
    defined = {v.name for v in vars(augment_dct).values() if isinstance(v, type) and hasattr(v, "name")}
    assert defined == set(KWARGS)
    assert defined <= set(list_augments())


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_round_trips_through_dict(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    d = augment_to_dict(t)
    assert d["name"] == name == type(t).name
    assert augment_from_dict(json.loads(json.dumps(d))) == t
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(t, next(iter(KWARGS[name])), 1)


def test_registry_errors() -> None:
    with pytest.raises(CodecError, match="dct_hflip"):
        create_augment("no_such_augment")
    with pytest.raises(CodecError):
        create_augment("dct_hflip", probability=0.5)
    with pytest.raises(CodecError):
        augment_from_dict({"p": 0.5})


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("dct_hflip", {"p": 1.5}),
        ("dct_random_crop", {"size": 100}),
        ("dct_random_crop", {"size": 0}),
        ("dct_center_crop", {"size": 230}),
        ("dct_brightness", {"max_delta": -1.0}),
        ("dct_frequency_mask", {"max_width": 64}),
        ("dct_coefficient_dropout", {"p": -0.1}),
    ],
)
def test_invalid_parameters_raise_value_error(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        create_augment(name, **kwargs)


# ------------------------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_contract(name: str, any_coefs: DctCoefficients) -> None:
    t = create_augment(name, **KWARGS[name])
    before = snapshot(any_coefs)
    out = t(any_coefs, np.random.default_rng(7))
    assert_same(any_coefs, DctCoefficients(*before))  # input not mutated
    out.validate()
    assert out.y.dtype == out.c.dtype == np.int16
    assert out.keep == any_coefs.keep
    np.testing.assert_array_equal(out.qt, any_coefs.qt)
    expected = (8, 8) if name in CROPS else any_coefs.blocks
    assert out.blocks == expected
    for a in (out.y, out.c, out.qt):
        for b in (any_coefs.y, any_coefs.c, any_coefs.qt):
            assert not np.shares_memory(a, b)
    assert_same(out, t(any_coefs, np.random.default_rng(7)))  # deterministic for a seed


@pytest.mark.parametrize("name", sorted(set(KWARGS) - DETERMINISTIC))
def test_depends_on_rng(name: str, coefs: DctCoefficients) -> None:
    t = create_augment(name, **KWARGS[name])
    outs = [t(coefs, np.random.default_rng(seed)) for seed in range(10)]
    assert any(not np.array_equal(o.y, outs[0].y) for o in outs[1:])


# ------------------------------------------------------------------------------------------- hflip


def test_hflip_matches_pixel_flip(coefs: DctCoefficients, image: np.ndarray) -> None:
    ref = np.fliplr(to_pixels(coefs)).astype(np.int32)
    assert not np.array_equal(ref, to_pixels(coefs))  # the image is not symmetric
    err = np.abs(to_pixels(hflip(coefs)).astype(np.int32) - ref)
    # Exact in real arithmetic; float32 IDCT rounding may flip a .5 case by one level.
    assert err.max() <= 1
    assert (err > 0).mean() < 0.01


def test_hflip_is_an_involution_and_transform_respects_p(coefs: DctCoefficients) -> None:
    assert_same(hflip(hflip(coefs)), coefs)
    rng = np.random.default_rng(0)
    assert_same(create_augment("dct_hflip", p=0.0)(coefs, rng), coefs)
    assert_same(create_augment("dct_hflip", p=1.0)(coefs, rng), hflip(coefs))


# ------------------------------------------------------------------------------------------- crops


def padded_pixels(d: DctCoefficients, pad: int) -> np.ndarray:
    """Pixels with ``pad`` px of grey (level 128, what zero coefficients decode to) on every side."""
    return np.pad(to_pixels(d), ((pad, pad), (pad, pad), (0, 0)), constant_values=128)


@settings(max_examples=60, deadline=None)
@given(
    top=st.integers(-4, 7),
    left=st.integers(-4, 9),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
)
def test_crop_matches_pixel_slicing(top: int, left: int, height: int, width: int) -> None:
    d = from_pixels(photo_like(96, 128), QT75)
    ref = padded_pixels(d, 128)[128 + 16 * top :, 128 + 16 * left :][: 16 * height, : 16 * width]
    got = to_pixels(crop(d, top, left, height, width))
    assert got.shape == ref.shape
    # the decoder's chroma upsampling reads the neighbouring blocks, which a window replaces at its edges: a
    # few edge values round one level apart (11 of the 4,200 windows this strategy spans, at most 1 level);
    # a misplaced window differs by far more
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_crop_rejects_empty_window(coefs: DctCoefficients) -> None:
    with pytest.raises(ValueError):
        crop(coefs, 0, 0, 0, 2)


def find_offsets(haystack: np.ndarray, needle: np.ndarray) -> list[tuple[int, int]]:
    """All 16-px aligned positions where ``needle`` appears in ``haystack``."""
    h, w = needle.shape[:2]
    return [
        (i, j)
        for i in range(0, haystack.shape[0] - h + 1, 16)
        for j in range(0, haystack.shape[1] - w + 1, 16)
        if np.array_equal(haystack[i : i + h, j : j + w], needle)
    ]


@pytest.mark.parametrize("size", [48, 160])  # inside the 96 x 128 image / larger: padded
def test_random_crop_is_an_aligned_pixel_window(coefs: DctCoefficients, size: int) -> None:
    t = RandomCrop(size=size)
    pad = max(size - 96, 0)
    reference = padded_pixels(coefs, pad)
    positions = set()
    for seed in range(12):
        out = to_pixels(t(coefs, np.random.default_rng(seed)))
        assert out.shape == (size, size, 3)
        found = find_offsets(reference, out)
        assert found, f"seed {seed}: crop is not a window of the (padded) image"
        positions.add(found[0])
    assert len(positions) > 1  # the position is random


def test_random_crop_without_padding_rejects_small_images(coefs: DctCoefficients) -> None:
    with pytest.raises(ValueError):
        RandomCrop(size=112, pad_if_needed=False)(coefs, np.random.default_rng(0))


def test_center_crop_matches_pixel_center(coefs: DctCoefficients) -> None:
    out = create_augment("dct_center_crop", size=64)(coefs, np.random.default_rng(0))
    np.testing.assert_array_equal(to_pixels(out), to_pixels(coefs)[16:80, 32:96])


# ------------------------------------------------------------------------------------------- brightness


@pytest.mark.parametrize("delta", [13.3, -7.6, 0.4])
@pytest.mark.parametrize("dc_step", [8, 24])
def test_brightness_matches_adding_to_luma(image: np.ndarray, delta: float, dc_step: int) -> None:
    qt = QT75.copy()
    qt[0, 0] = dc_step  # a luma DC step of dc_step / 8 grey levels
    d = from_pixels(image, qt)
    before = to_pixels(d).astype(np.float64)
    out = to_pixels(brightness(d, delta)).astype(np.float64)
    ref = before + delta  # +delta on Y is +delta on each of R, G, B
    # delta is realised to the nearest DC step (error <= half a step = dc_step / 16 levels), plus
    # output rounding (<= 0.5) and rounding of the reference image (<= 0.5).
    tol = dc_step / 16 + 1.0
    unclipped = np.all((before > 0) & (before < 255) & (ref > 1) & (ref < 254), axis=-1)
    assert unclipped.mean() > 0.9
    err = np.abs(out - ref)[unclipped]
    assert err.max() <= tol


def test_brightness_shifts_dc_only(coefs: DctCoefficients) -> None:
    out = brightness(coefs, 5.0)
    assert coefs.qt[0, 0] == 8  # so +5 levels is +5 DC steps
    np.testing.assert_array_equal(out.y[0].astype(np.int32) - coefs.y[0], 5)
    np.testing.assert_array_equal(out.y[1:], coefs.y[1:])
    np.testing.assert_array_equal(out.c, coefs.c)


def test_brightness_transform_stays_in_range(coefs: DctCoefficients) -> None:
    t = Brightness(max_delta=3.0)
    for seed in range(20):
        shift = t(coefs, np.random.default_rng(seed)).y[0].astype(np.int32) - coefs.y[0]
        assert np.unique(shift).size == 1
        assert abs(int(shift.flat[0])) * float(coefs.qt[0, 0]) / 8 <= 3.0 + coefs.qt[0, 0] / 16


# ------------------------------------------------------------------------------------------- frequencies


def test_masking_all_ac_is_block_mean_pooling_of_luma(any_coefs: DctCoefficients) -> None:
    luma = luma_of(to_pixels(any_coefs))
    h, w = luma.shape
    pooled = luma.reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))
    ref = np.repeat(np.repeat(pooled, 8, axis=0), 8, axis=1)
    out = luma_of(to_pixels(mask_frequencies(any_coefs, 1, 64)))
    # Both sides are computed from RGB rounded to integers (<= 0.5 level each); no clipping here.
    assert np.abs(out - ref).max() <= 1.0
    assert np.abs(out - ref).mean() < 0.3
    assert np.abs(luma - ref).mean() > 5  # the pooling really changed the image


def test_mask_frequencies_zeroes_exactly_the_band() -> None:
    d = random_coefs(0, keep=(20, 6))
    out = mask_frequencies(d, 4, 12)
    assert not out.y[4:12].any() and not out.c[:, 4:].any()
    np.testing.assert_array_equal(out.y[:4], d.y[:4])
    np.testing.assert_array_equal(out.y[12:], d.y[12:])
    np.testing.assert_array_equal(out.c[:, :4], d.c[:, :4])
    with pytest.raises(ValueError):
        mask_frequencies(d, 5, 4)
    with pytest.raises(ValueError):
        mask_frequencies(d, 0, 65)


@pytest.mark.parametrize("keep", [(64, 64), (12, 4)])
def test_frequency_mask_is_one_ac_band(keep: tuple[int, int]) -> None:
    d = random_coefs(1, keep=keep)
    t = FrequencyMask(max_width=8)
    widths = set()
    for seed in range(40):
        out = t(d, np.random.default_rng(seed))
        zeroed = np.flatnonzero(~out.y.any(axis=(1, 2)))
        np.testing.assert_array_equal(out.y[0], d.y[0])  # DC is never masked
        if zeroed.size:
            assert zeroed[0] >= 1 and zeroed.size <= 8
            np.testing.assert_array_equal(zeroed, np.arange(zeroed[0], zeroed[-1] + 1))
        kept = np.setdiff1d(np.arange(keep[0]), zeroed)
        np.testing.assert_array_equal(out.y[kept], d.y[kept])
        c_zeroed = np.flatnonzero(~out.c.any(axis=(0, 2, 3)))
        np.testing.assert_array_equal(c_zeroed, zeroed[zeroed < keep[1]])
        widths.add(zeroed.size)
    assert len(widths) > 2


def test_coefficient_dropout_rate_and_dc() -> None:
    d = random_coefs(2, mcus=(6, 6))
    out = CoefficientDropout(p=0.3)(d, np.random.default_rng(0))
    np.testing.assert_array_equal(out.y[0], d.y[0])
    np.testing.assert_array_equal(out.c[:, 0], d.c[:, 0])
    dropped_y = out.y[1:] == 0
    assert abs(dropped_y.mean() - 0.3) < 0.02  # 9072 entries: std of the rate is 0.005
    assert abs((out.c[:, 1:] == 0).mean() - 0.3) < 0.03
    np.testing.assert_array_equal(out.y[1:][~dropped_y], d.y[1:][~dropped_y])
    rng = np.random.default_rng(0)
    assert_same(CoefficientDropout(p=0.0)(d, rng), d)
    everything = CoefficientDropout(p=1.0)(d, rng)
    assert not everything.y[1:].any() and not everything.c[:, 1:].any()
    np.testing.assert_array_equal(everything.y[0], d.y[0])
