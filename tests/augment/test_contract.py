"""The contract every registered augmentation keeps (as the codecs keep theirs): its config round-trips
through ``augment_to_dict``/``augment_from_dict`` (and JSON); for one seed it gives the same output twice; it
keeps the sample's type and dtype, and its shape (or the shape its config names); it never mutates its input.
A newly registered augmentation without an entry in ``CASES`` fails ``test_every_augmentation_is_covered``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lossyload.augment import augment_from_dict, augment_to_dict, create_augment, list_augments
from lossyload.media.dct import DctCoefficients


def codes() -> np.ndarray:  # vq code grid / encodec RVQ levels: int16 [rows or levels, frames]
    return np.random.default_rng(0).integers(0, 16, (8, 40)).astype(np.int16)


def dct() -> DctCoefficients:  # 64x48 px: a 8x6 luma block grid, 4x3 chroma
    rng = np.random.default_rng(0)
    return DctCoefficients(y=rng.integers(-60, 60, (64, 8, 6)).astype(np.int16),
                           c=rng.integers(-30, 30, (2, 64, 4, 3)).astype(np.int16),
                           qt=np.full((3, 64), 2, np.uint16))


def latent() -> np.ndarray:  # vae sample [views, planes (mean, std), C, h, w]
    rng = np.random.default_rng(0)
    return np.stack([rng.standard_normal((3, 4, 8, 8)), np.abs(rng.standard_normal((3, 4, 8, 8)))], 1).astype(np.float32)


def log_mel() -> np.ndarray:  # mel sample: float32 log-mel [n_mels, frames]
    return (3 * np.random.default_rng(0).standard_normal((16, 40)) - 8).astype(np.float32)


def rgb() -> torch.Tensor:  # decoded image, uint8 [3, H, W]
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 40, 56)).astype(np.uint8))


# name: (config, sample factory, output shape (None: the input's))
CASES = {
    "codes_center_time_crop": ({"frames": 16}, codes, (8, 16)),
    "codes_random_time_crop": ({"frames": 16}, codes, (8, 16)),
    "codes_freq_mask": ({"max_width": 3, "count": 2}, codes, None),
    "codes_time_mask": ({"max_width": 5, "count": 2}, codes, None),
    "codes_time_shift": ({"max_shift": 6}, codes, None),
    "codes_level_dropout": ({"p": 1.0, "min_levels": 2}, codes, None),
    "dct_brightness": ({"max_delta": 20.0}, dct, None),
    "dct_center_crop": ({"size": 32}, dct, "dct-32"),
    "dct_random_crop": ({"size": 32}, dct, "dct-32"),
    "dct_coefficient_dropout": ({"p": 0.3}, dct, None),
    "dct_frequency_mask": ({"max_width": 8}, dct, None),
    "dct_hflip": ({"p": 0.5}, dct, None),
    "latent_center_crop": ({"size": 6}, latent, (3, 2, 4, 6, 6)),
    "latent_random_crop": ({"size": 6, "padding": 1}, latent, (3, 2, 4, 6, 6)),
    "latent_hflip": ({"p": 0.5}, latent, None),
    "latent_noise": ({"sigma": 0.2}, latent, None),
    "latent_posterior_sample": ({"temperature": 1.0}, latent, None),
    "latent_random_view": ({}, latent, (1, 2, 4, 8, 8)),
    "latent_view": ({"index": 2}, latent, (1, 2, 4, 8, 8)),
    "mel_freq_mask": ({"max_width": 4, "count": 2}, log_mel, None),
    "mel_time_mask": ({"max_width": 6, "count": 2, "value": -13.8}, log_mel, None),
    "rgb_hflip": ({"p": 0.5}, rgb, None),
    "rgb_random_resized_crop": ({"size": 24, "scale": (0.3, 1.0)}, rgb, (3, 24, 24)),
    "rgb_resize_center_crop": ({"size": 24}, rgb, (3, 24, 24)),
}


def arrays(sample) -> dict[str, np.ndarray]:
    if isinstance(sample, DctCoefficients):
        return {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    return {"x": sample.numpy() if isinstance(sample, torch.Tensor) else sample}


def test_every_augmentation_is_covered() -> None:
    assert sorted(CASES) == list_augments()


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trips(name: str) -> None:
    config, _, _ = CASES[name]
    t = create_augment(name, **config)
    stored = json.loads(json.dumps(augment_to_dict(t)))
    assert stored["name"] == name
    assert augment_from_dict(stored) == t


@pytest.mark.parametrize("name", sorted(CASES))
def test_deterministic_for_a_seed_and_keeps_type_dtype_shape(name: str) -> None:
    config, make, shape = CASES[name]
    t, sample = create_augment(name, **config), make()
    before = {k: v.copy() for k, v in arrays(sample).items()}
    outs = [t(make(), np.random.default_rng(seed)) for seed in (7, 7, 8)]
    first, again = arrays(outs[0]), arrays(outs[1])
    assert type(outs[0]) is type(sample)
    for key, value in arrays(sample).items():
        np.testing.assert_array_equal(first[key], again[key], err_msg=f"{name}: {key} differs for one seed")
        assert first[key].dtype == value.dtype, (name, key)
        if key == "qt":
            np.testing.assert_array_equal(first[key], value)
        elif shape is None:
            assert first[key].shape == value.shape, (name, key)
    if shape == "dct-32":  # 32 px: a 4x4 luma block grid, 2x2 chroma
        assert first["y"].shape == (64, 4, 4) and first["c"].shape == (2, 64, 2, 2)
    elif shape is not None:
        assert first["x"].shape == shape, name
    out = t(sample, np.random.default_rng(7))  # on the sample itself: never mutated
    for key, value in arrays(sample).items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{name} mutated its input's {key}")
    assert out is not None
