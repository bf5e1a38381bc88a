"""Every registered augmentation has a batch form, and for given parameters it equals the per-sample
operation: ``apply_batch(batch, params)[i] == apply(sample_i, params_i)``; the per-sample call draws one
sample's parameters and applies them the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossyload.augment import create_augment, has_batch_form, list_augments, sample_params
from lossyload.augment.dct_batch import DctBatch, as_batch
from lossyload.media.dct import DctCoefficients

B = 6


def latents(rng: np.random.Generator, planes: int = 2) -> list[np.ndarray]:
    return [rng.standard_normal((3, planes, 4, 6, 6)).astype(np.float32) for _ in range(B)]


def codes(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(-1, 1024, (8, 20)).astype(np.int16) for _ in range(B)]


def log_mels(rng: np.random.Generator) -> list[np.ndarray]:
    return [(3 * rng.standard_normal((16, 20)) - 8 + i).astype(np.float32) for i in range(B)]


def coefficients(rng: np.random.Generator, ragged: bool) -> list[DctCoefficients]:
    out = []
    for i in range(B):
        hm, wm = (2 + i % 3, 3 + i % 2) if ragged else (3, 4)
        y = rng.integers(-300, 300, (16, 2 * hm, 2 * wm)).astype(np.int16)
        c = rng.integers(-300, 300, (2, 8, hm, wm)).astype(np.int16)
        qt = rng.integers(1, 60, (3, 64)).astype(np.uint16)
        out.append(DctCoefficients(y=y, c=c, qt=qt))
    return out


def images(rng: np.random.Generator, ragged: bool) -> list[torch.Tensor]:
    sizes = [(40 + 7 * i, 50 - 3 * i) if ragged else (40, 48) for i in range(B)]
    return [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in sizes]


# name -> (arguments, samples(rng) -> per-sample inputs, batch(samples) -> the batch form's input)
CASES = {
    "latent_random_view": ({}, latents, np.stack),
    "latent_view": ({"index": 2}, latents, np.stack),
    "latent_hflip": ({"p": 0.5}, latents, np.stack),
    "latent_random_crop": ({"size": 4, "padding": 1}, latents, np.stack),
    "latent_center_crop": ({"size": 3}, latents, np.stack),
    "latent_noise": ({"sigma": 0.3}, latents, np.stack),
    "latent_posterior_sample": ({"temperature": 0.7}, latents, np.stack),
    "codes_random_time_crop": ({"frames": 12}, codes, np.stack),
    "codes_center_time_crop": ({"frames": 26}, codes, np.stack),  # longer than the clip: masked padding
    "codes_time_shift": ({"max_shift": 7}, codes, np.stack),
    "codes_time_mask": ({"max_width": 6, "count": 2}, codes, np.stack),
    "codes_freq_mask": ({"max_width": 3, "count": 3}, codes, np.stack),
    "codes_level_dropout": ({"p": 0.7, "min_levels": 2}, codes, np.stack),
    "mel_time_mask": ({"max_width": 6, "count": 2}, log_mels, np.stack),
    "mel_freq_mask": ({"max_width": 5, "count": 2, "value": -13.8}, log_mels, np.stack),
    "dct_hflip": ({"p": 0.5}, lambda r: coefficients(r, False), as_batch),
    "dct_random_crop": ({"size": 48}, lambda r: coefficients(r, True), list),  # 3x3 MCUs: pads some
    "dct_center_crop": ({"size": 48}, lambda r: coefficients(r, True), list),
    "dct_brightness": ({"max_delta": 40.0}, lambda r: coefficients(r, False), as_batch),
    "dct_frequency_mask": ({"max_width": 9}, lambda r: coefficients(r, False), as_batch),
    "dct_coefficient_dropout": ({"p": 0.3}, lambda r: coefficients(r, False), as_batch),
    "rgb_random_resized_crop": ({"size": 24}, lambda r: images(r, True), list),
    "rgb_resize_center_crop": ({"size": 24}, lambda r: images(r, True), list),
    "rgb_hflip": ({"p": 0.5}, lambda r: images(r, False), torch.stack),
}


def test_every_registered_augmentation_is_covered_and_has_a_batch_form() -> None:
    assert set(CASES) == set(list_augments())
    assert all(has_batch_form(create_augment(name, **CASES[name][0])) for name in CASES)


def rows(out) -> list:
    if isinstance(out, DctBatch):
        return [out.sample(i) for i in range(len(out))]
    return list(out)


def assert_same(a, b, what: str) -> None:
    if isinstance(a, DctCoefficients):
        for field in ("y", "c", "qt"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{what}: {field}")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_form_equals_the_per_sample_operation(name: str, seed: int) -> None:
    args, make_samples, to_batch = CASES[name]
    t = create_augment(name, **args)
    samples = make_samples(np.random.default_rng(seed))
    params = t.params(to_batch(samples), np.random.default_rng(seed + 100))
    out = rows(t.apply_batch(to_batch(samples), params))
    assert len(out) == B
    for i, x in enumerate(samples):
        assert_same(out[i], t.apply(x, sample_params(params, i)), f"{name} sample {i}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_sample_call_is_one_draw_then_apply(name: str) -> None:
    """``t(x, rng)`` is ``apply`` with parameters drawn for one sample; inputs are never mutated."""
    args, make_samples, to_batch = CASES[name]
    t = create_augment(name, **args)
    samples = make_samples(np.random.default_rng(3))
    before = [np.array(np.asarray(s.y if isinstance(s, DctCoefficients) else s), copy=True) for s in samples]
    outs = [t(x, np.random.default_rng(i)) for i, x in enumerate(samples)]
    for s, b in zip(samples, before):
        np.testing.assert_array_equal(np.asarray(s.y if isinstance(s, DctCoefficients) else s), b)
    assert len(outs) == B
    batch = to_batch(samples)
    again = rows(t.apply_batch(batch, t.params(batch, np.random.default_rng(9))))
    assert len(again) == B


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if not n.endswith(("center_crop", "center_time_crop", "_view"))])
def test_the_batch_draws_differ_between_samples(name: str) -> None:
    """Parameters are per sample, not one draw for the whole batch."""
    args, make_samples, to_batch = CASES[name]
    t = create_augment(name, **args)
    params = t.params(to_batch(make_samples(np.random.default_rng(0))), np.random.default_rng(1))
    assert params and any(len(np.unique(np.asarray(v).reshape(B, -1), axis=0)) > 1 for v in params.values())
