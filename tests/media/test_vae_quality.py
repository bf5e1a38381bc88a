"""``lossyload vae-check``: the equivariance figures of a (random, tiny) VAE on real-sized images, cross-checked
against the model, the refusals, and the CLI on an image folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lossyload.cli import main
from lossyload.errors import LossyloadError
from lossyload.media.vae_quality import equivariance
from lossyload.media.vae_model import decode_latents, encode_pixels, load_vae

from ..conftest import jpeg_bytes, make_image_folder, photo, synthetic_rgb, write

pytestmark = pytest.mark.usefixtures("one_thread")
KEYS = {"flip_encoder_rel_l2", "flip_decoder_psnr_db", "crop_encoder_rel_l2", "reconstruction_psnr_db",
        "other_image_rel_l2"}


@pytest.fixture(scope="module")
def vae():
    return load_vae("random:tiny", None, 0, False, "cpu")


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.stack([synthetic_rgb(64, 64, seed=1), photo(64, 64, top=40, left=60), synthetic_rgb(64, 64, seed=2)])


@pytest.fixture(scope="module")
def figures(vae, pixels: np.ndarray) -> dict[str, float]:
    return equivariance(vae, pixels)


def test_the_five_figures(figures: dict[str, float]) -> None:
    assert set(figures) == KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in figures.values()), figures
    for k in ("flip_encoder_rel_l2", "crop_encoder_rel_l2", "other_image_rel_l2"):
        assert figures[k] >= 0
    # a random VAE is far from equivariant, and different images have different latents
    assert figures["flip_encoder_rel_l2"] > 0.01 and figures["crop_encoder_rel_l2"] > 0.01
    assert figures["other_image_rel_l2"] > 0.01


def test_figures_agree_with_the_model(vae, pixels: np.ndarray, figures: dict[str, float]) -> None:
    """Two figures recomputed directly from the encoder and decoder."""
    z, _ = encode_pixels(vae, pixels, 2, "cpu")
    z_flip, _ = encode_pixels(vae, np.ascontiguousarray(pixels[:, :, ::-1]), 2, "cpu")
    rel = np.linalg.norm(z_flip - z[..., ::-1]) / np.linalg.norm(z[..., ::-1])
    assert figures["flip_encoder_rel_l2"] == pytest.approx(rel, rel=1e-4)
    recon = decode_latents(vae, z)
    x = np.moveaxis(pixels, -1, 1) / 127.5 - 1.0
    assert figures["reconstruction_psnr_db"] == pytest.approx(10 * np.log10(4 / np.mean((recon - x) ** 2)), rel=1e-4)


def test_same_images_have_zero_distance(vae) -> None:
    same = np.stack([synthetic_rgb(64, 64, seed=5)] * 2)
    out = equivariance(vae, same, batch_size=1)
    assert out["other_image_rel_l2"] == 0.0


@pytest.mark.parametrize("shape", [(1, 64, 64, 3), (3, 60, 60, 3), (3, 48, 48, 3), (2, 32, 32, 3)])
def test_refuses_too_few_or_badly_sized_images(vae, shape: tuple[int, ...]) -> None:
    with pytest.raises(LossyloadError, match="vae-check needs >= 2 images"):
        equivariance(vae, np.zeros(shape, np.uint8))


def test_96_pixels_is_enough(vae) -> None:
    px = np.stack([synthetic_rgb(96, 96, seed=i) for i in range(2)])
    out = equivariance(vae, px)
    assert set(out) == KEYS and out["crop_encoder_rel_l2"] > 0


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = make_image_folder(tmp_path_factory.mktemp("check") / "imgs", {"a": 3, "b": 2}, size=(48, 64))
    write(root / "b" / "readme.txt", b"not an image, not picked up")
    return root


def test_cli_prints_the_figures(folder: Path, capsys) -> None:
    assert main(["vae-check", str(folder), "--model", "random:tiny", "--resolution", "64", "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"random:tiny on 3 images from {folder} at 64 px:")
    lines = out.strip().splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["flip_encoder_rel_l2", "flip_decoder_psnr_db", "crop_encoder_rel_l2",
                                                   "reconstruction_psnr_db", "other_image_rel_l2"]
    assert all(math.isfinite(float(line.split()[1])) for line in lines)


def test_cli_counts_images_recursively(folder: Path, capsys) -> None:
    assert main(["vae-check", str(folder), "--model", "random:tiny", "--resolution", "64"]) == 0
    assert "on 5 images" in capsys.readouterr().out


def test_cli_needs_two_images(tmp_path: Path, capsys) -> None:
    write(tmp_path / "one" / "x.jpg", jpeg_bytes(synthetic_rgb(64, 64)))
    write(tmp_path / "one" / "notes.txt", b"hello")
    assert main(["vae-check", str(tmp_path / "one"), "--model", "random:tiny", "--resolution", "64"]) == 2
    assert "needs at least 2 images, found 1" in capsys.readouterr().err
    assert main(["vae-check", str(tmp_path / "empty"), "--model", "random:tiny"]) == 2


def test_cli_refuses_a_small_resolution(folder: Path, capsys) -> None:
    assert main(["vae-check", str(folder), "--model", "random:tiny", "--resolution", "32"]) == 2
    assert "at least 64" in capsys.readouterr().err


def test_cli_refuses_an_unknown_random_model(folder: Path, capsys) -> None:
    assert main(["vae-check", str(folder), "--model", "random:huge", "--resolution", "64"]) == 2
    assert "unknown random architecture" in capsys.readouterr().err
