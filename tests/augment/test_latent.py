"""Latent-space augmentations of ``vae`` samples (float32 ``[views, planes, C, h, w]``): each transform's exact
semantics on hand-made arrays whose values say where they came from, the transform contracts (no mutation,
seeded, registered, serialisable, rank checked) and batch-level mixup."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from lossyload.augment import augment_from_dict, augment_to_dict, create_augment, list_augments
from lossyload.augment import latent as augment_latent
from lossyload.augment.latent import (CenterCrop, GaussianNoise, HFlip, PosteriorSample, RandomCrop, RandomView,
                                      View, mixup)
from lossyload.errors import CodecError

pytestmark = pytest.mark.usefixtures("one_thread")

# Arguments for every latent augmentation; test_every_latent_augment_is_covered keeps it complete.
KWARGS: dict[str, dict[str, Any]] = {
    "latent_random_view": {},
    "latent_view": {"index": 1},
    "latent_hflip": {"p": 0.5},
    "latent_random_crop": {"size": 4, "padding": 1},
    "latent_center_crop": {"size": 4},
    "latent_noise": {"sigma": 0.3},
    "latent_posterior_sample": {"temperature": 0.5},
}
DETERMINISTIC = {"latent_view", "latent_center_crop"}


def sample(views: int = 3, planes: int = 2, c: int = 4, h: int = 6, w: int = 6) -> np.ndarray:
    """Distinct float32 values (all positive, so plane 1 is a valid std): value = 1 + flat position."""
    return (1.0 + np.arange(views * planes * c * h * w, dtype=np.float32)).reshape(views, planes, c, h, w)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------- registry
def test_every_latent_augment_is_covered() -> None:
    defined = {v.name for v in vars(augment_latent).values() if isinstance(v, type) and hasattr(v, "name")}
    assert defined == set(KWARGS)
    assert defined <= set(list_augments())


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_round_trips_through_dict(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    d = augment_to_dict(t)
    assert d["name"] == name and all(d[k] == v for k, v in KWARGS[name].items())
    back = augment_from_dict(json.loads(json.dumps(d)))
    assert back == t and type(back) is type(t)


# ------------------------------------------------------------------------------------------- contracts
@pytest.mark.parametrize("name", sorted(KWARGS))
def test_never_mutates_its_input(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    x = sample()
    before = x.copy()
    for seed in range(10):
        out = t(x, rng(seed))
        assert out.dtype == np.float32 and out.ndim == 5
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_same_seed_same_output(name: str) -> None:
    t = create_augment(name, **KWARGS[name])
    x = sample()
    outs = [t(x, rng(seed)) for seed in range(12)]
    for seed, out in enumerate(outs):
        np.testing.assert_array_equal(t(x, rng(seed)), out)
    distinct = {o.tobytes() for o in outs}
    assert len(distinct) == 1 if name in DETERMINISTIC else len(distinct) > 1


@pytest.mark.parametrize("name", sorted(KWARGS))
@pytest.mark.parametrize("shape", [(2, 4, 6, 6), (1, 1, 2, 4, 6, 6), (6, 6)])
def test_wrong_rank_is_a_codec_error(name: str, shape: tuple[int, ...]) -> None:
    t = create_augment(name, **KWARGS[name])
    with pytest.raises(CodecError, match="views, planes, C, h, w"):
        t(np.ones(shape, np.float32), rng())


# ------------------------------------------------------------------------------------------- views
def test_random_view_picks_every_view_uniformly() -> None:
    x = sample(views=3)
    picks = []
    for seed in range(300):
        out = RandomView()(x, rng(seed))
        assert out.shape == (1, *x.shape[1:])
        matches = [v for v in range(3) if np.array_equal(out[0], x[v])]
        assert len(matches) == 1
        picks.append(matches[0])
    counts = np.bincount(picks, minlength=3)
    assert counts.min() > 70, counts  # 100 each expected


def test_random_view_of_a_single_view_is_that_view() -> None:
    x = sample(views=1)
    np.testing.assert_array_equal(RandomView()(x, rng(5)), x)


def test_view_picks_the_given_index() -> None:
    x = sample(views=3)
    for i in range(3):
        out = View(index=i)(x, rng())
        assert out.shape == (1, *x.shape[1:])
        np.testing.assert_array_equal(out[0], x[i])
    np.testing.assert_array_equal(View()(x, rng())[0], x[0])  # default: the centre crop


@pytest.mark.parametrize("index", [3, 7, -1])
def test_view_out_of_range_is_an_error(index: int) -> None:
    with pytest.raises(CodecError, match=f"view {index} asked, the shards hold 3"):
        View(index=index)(sample(views=3), rng())


# ------------------------------------------------------------------------------------------- flips and crops
def test_hflip_reverses_the_last_axis_only() -> None:
    x = sample(h=3, w=5)
    out = HFlip(p=1.0)(x, rng())
    assert out.shape == x.shape
    for j in range(5):
        np.testing.assert_array_equal(out[..., j], x[..., 4 - j])
    np.testing.assert_array_equal(HFlip(p=0.0)(x, rng()), x)


def test_hflip_flips_about_p_of_the_time() -> None:
    x = sample()
    flipped = sum(not np.array_equal(HFlip(p=0.3)(x, rng(s)), x) for s in range(400))
    assert 80 <= flipped <= 160  # 120 expected


def padded_reference(x: np.ndarray, p: int) -> np.ndarray:
    """Edge replication written out by index clipping (independent of np.pad)."""
    h, w = x.shape[-2:]
    rows = np.clip(np.arange(-p, h + p), 0, h - 1)
    cols = np.clip(np.arange(-p, w + p), 0, w - 1)
    return x[..., rows[:, None], cols[None, :]]


def windows(x: np.ndarray, size: int) -> dict[tuple[int, int], np.ndarray]:
    h, w = x.shape[-2:]
    return {(t, l): x[..., t:t + size, l:l + size] for t in range(h - size + 1) for l in range(w - size + 1)}


@pytest.mark.parametrize("h, w, size", [(6, 6, 4), (5, 7, 3), (4, 4, 4), (6, 6, 1)])
def test_random_crop_is_a_window_and_visits_all(h: int, w: int, size: int) -> None:
    x = sample(views=2, h=h, w=w)
    all_windows = windows(x, size)
    seen = set()
    for seed in range(200):
        out = RandomCrop(size=size)(x, rng(seed))
        assert out.shape == (*x.shape[:3], size, size)
        where = [k for k, win in all_windows.items() if np.array_equal(out, win)]
        assert len(where) == 1, "the output is not one window of the input"
        seen.add(where[0])
    assert seen == set(all_windows)


def test_random_crop_with_padding_replicates_edges_and_keeps_size() -> None:
    x = sample(views=1, planes=1, c=2, h=4, w=4)
    ref = padded_reference(x, 2)
    assert ref.shape[-2:] == (8, 8)
    all_windows = windows(ref, 4)
    seen = set()
    for seed in range(300):
        out = RandomCrop(size=4, padding=2)(x, rng(seed))
        assert out.shape == x.shape  # size = grid: a random translation
        where = [k for k, win in all_windows.items() if np.array_equal(out, win)]
        assert where, "the output is not a window of the edge-replicated grid"
        seen.update(where)
    assert seen == set(all_windows)
    # the extreme translation: top-left window = the first row/column repeated twice, then the grid
    corner = all_windows[(0, 0)]
    np.testing.assert_array_equal(corner[..., :3, :3], np.broadcast_to(x[..., :1, :1], (1, 1, 2, 3, 3)))
    np.testing.assert_array_equal(corner[..., 2:, 2:], x[..., :2, :2])


def test_random_crop_larger_than_the_grid_is_an_error() -> None:
    with pytest.raises(CodecError, match="exceeds the latent grid 6x6"):
        RandomCrop(size=7)(sample(), rng())
    with pytest.raises(CodecError, match="exceeds the latent grid 8x8"):
        RandomCrop(size=9, padding=1)(sample(), rng())
    assert RandomCrop(size=8, padding=1)(sample(), rng()).shape[-2:] == (8, 8)


@pytest.mark.parametrize("h, w, size, top, left", [(6, 6, 4, 1, 1), (5, 7, 3, 1, 2), (6, 6, 6, 0, 0), (7, 6, 2, 2, 2)])
def test_center_crop_position(h: int, w: int, size: int, top: int, left: int) -> None:
    x = sample(h=h, w=w)
    np.testing.assert_array_equal(CenterCrop(size=size)(x, rng()), x[..., top:top + size, left:left + size])


def test_center_crop_larger_than_the_grid_is_an_error() -> None:
    with pytest.raises(CodecError, match="exceeds the latent grid 5x7"):
        CenterCrop(size=6)(sample(h=5, w=7), rng())


# ------------------------------------------------------------------------------------------- noise
def test_noise_touches_only_the_mean_with_the_right_std() -> None:
    x = sample(views=2, planes=2, c=4, h=64, w=64)
    out = GaussianNoise(sigma=0.25)(x, rng(3))
    assert out.dtype == np.float32 and not np.shares_memory(out, x)
    np.testing.assert_array_equal(out[:, 1], x[:, 1])
    diff = (out[:, 0] - x[:, 0]).astype(np.float64)
    assert abs(diff.mean()) < 0.01
    assert diff.std() == pytest.approx(0.25, rel=0.03)
    assert (diff != 0).mean() > 0.99  # every cell of every view gets its own draw
    assert not np.allclose(diff[0], diff[1], atol=0.05)


def test_noise_with_zero_sigma_is_the_identity() -> None:
    x = sample()
    np.testing.assert_array_equal(GaussianNoise(sigma=0.0)(x, rng()), x)


def test_posterior_sample_is_mean_plus_temperature_std_eps() -> None:
    x = sample(views=2, planes=2, c=4, h=8, w=8)
    x[:, 1] = np.linspace(0.01, 2.0, x[:, 1].size, dtype=np.float32).reshape(x[:, 1].shape)
    out = PosteriorSample(temperature=0.7)(x, rng(11))
    eps = rng(11).standard_normal(x[:, 1].shape, dtype=np.float32)
    np.testing.assert_allclose(out[:, 0], x[:, 0] + np.float32(0.7) * x[:, 1] * eps, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[:, 1], x[:, 1])


def test_posterior_sample_statistics() -> None:
    x = sample(views=1, planes=2, c=4, h=64, w=64)
    x[:, 1] = rng(1).uniform(0.5, 3.0, x[:, 1].shape).astype(np.float32)
    z = (PosteriorSample(temperature=1.5)(x, rng(2))[:, 0] - x[:, 0]) / x[:, 1]
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.5, rel=0.03)
    np.testing.assert_array_equal(PosteriorSample(temperature=0.0)(x, rng(2)), x)


def test_posterior_sample_needs_the_std_plane() -> None:
    with pytest.raises(CodecError, match="store_std"):
        PosteriorSample()(sample(planes=1), rng())


# ------------------------------------------------------------------------------------------- mixup
def embedded(b: int) -> torch.Tensor:
    """x[i] = e_i: a mixed row says its partner and lam."""
    return torch.eye(b, dtype=torch.float32)


def partner_and_lam(mixed: torch.Tensor) -> tuple[list[int], list[float]]:
    """For each row i of lam * e_i + (1 - lam) * e_perm[i]: (perm[i], lam) where perm[i] != i can be told."""
    partners, lams = [], []
    for i, row in enumerate(mixed):
        others = [j for j in range(len(row)) if j != i and row[j] != 0]
        assert len(others) <= 1
        partners.append(others[0] if others else i)
        if others:
            lams.append(float(row[i]))
    return partners, lams


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_mixup_mixes_x_and_targets_consistently(alpha: float) -> None:
    b, classes = 12, 5
    found = 0
    for seed in range(6):
        y = torch.randint(0, classes, (b,), generator=torch.Generator().manual_seed(100 + seed))
        x_mixed, targets = mixup(embedded(b), y, alpha=alpha, classes=classes,
                                 generator=torch.Generator().manual_seed(seed))
        assert targets.shape == (b, classes) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(b))
        assert (targets >= 0).all()
        partners, lams = partner_and_lam(x_mixed)
        assert sorted(partners) == list(range(b)), "the partners are not a permutation"
        if not lams:
            continue
        lam = lams[0]
        assert 0.0 <= lam <= 1.0 and np.allclose(lams, lam, atol=1e-6), "one lam per batch"
        found += 1
        onehot = torch.nn.functional.one_hot(y, classes).float()
        expect = lam * onehot + (1 - lam) * onehot[partners]
        torch.testing.assert_close(targets, expect, atol=1e-6, rtol=0)
        # the label weight of a row whose partner has another class is lam itself
        for i, j in enumerate(partners):
            if y[i] != y[j]:
                assert float(targets[i, y[i]]) == pytest.approx(lam, abs=1e-6)
    assert found >= 5


def test_mixup_on_latent_batches() -> None:
    """The draws do not depend on x: the same generator seed mixes a latent batch with the lam and partners
    that an embedded batch reveals."""
    b = 6
    x = torch.randn(b, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, targets = mixup(x, y, alpha=1.0, classes=3, generator=torch.Generator().manual_seed(4))
    probe, probe_targets = mixup(embedded(b), y, alpha=1.0, classes=3, generator=torch.Generator().manual_seed(4))
    partners, lams = partner_and_lam(probe)
    assert lams, "every row is its own partner: pick another seed"
    lam = lams[0]
    assert mixed.shape == x.shape and mixed.dtype == x.dtype
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partners], atol=1e-5, rtol=0)
    torch.testing.assert_close(targets, probe_targets)


def test_mixup_is_deterministic_with_a_generator() -> None:
    x = torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 3
    a = mixup(x, y, alpha=0.4, classes=3, generator=torch.Generator().manual_seed(9))
    b = mixup(x, y, alpha=0.4, classes=3, generator=torch.Generator().manual_seed(9))
    c = mixup(x, y, alpha=0.4, classes=3, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], x)


def test_mixup_lam_follows_the_beta_distribution() -> None:
    b = 16
    lams = []
    for seed in range(150):
        mixed, _ = mixup(embedded(b), torch.zeros(b, dtype=torch.long), alpha=0.2, classes=2,
                         generator=torch.Generator().manual_seed(seed))
        lams += partner_and_lam(mixed)[1][:1]
    lams = np.array(lams)
    assert len(lams) > 140 and lams.min() >= 0 and lams.max() <= 1
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.5  # Beta(0.2, 0.2) puts most mass near 0 and 1


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_mixup_needs_a_positive_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be positive"):
        mixup(torch.zeros(2, 3), torch.tensor([0, 1]), alpha=alpha, classes=2)
