"""Linear decoding of latents (``lossyload.media.latent_rgb``): the least-squares fit against a known map, the helpers on
hand-made arrays, the map a dataset names, and ``lossyload preview`` end to end on a tiny ``vae`` shard set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lossyload import open_dataset
from lossyload.cli import main
from lossyload.errors import LossyloadError
from lossyload.index import Index
from lossyload.media.latent_rgb import (BUILTIN_MAPS, apply_linear_map, dataset_map, fit_linear_decoder, grid_image,
                               pool_to_grid, to_uint8)
from lossyload.shard import ShardJob, run_job

from ..conftest import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")
GRID = 4  # latent cells of a 32 px view through random:tiny (downsampling 8)


# ------------------------------------------------------------------------------------------- the fit
def known_map(c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.15, 0.15, (c + 1, 3)).astype(np.float32)


def images_of(latents: np.ndarray, weights: np.ndarray, cell: int = 8) -> np.ndarray:
    """uint8 images ``[N, h * cell, w * cell, 3]`` that are exactly ``weights`` applied to ``latents``, constant
    over each latent cell (up to the uint8 rounding)."""
    c = latents.shape[1]
    rgb = np.einsum("nchw,cr->nhwr", latents.astype(np.float64), weights[:c].astype(np.float64)) + weights[c]
    assert np.abs(rgb).max() < 1
    pixels = np.rint((rgb + 1.0) * 127.5).astype(np.uint8)
    return pixels.repeat(cell, axis=1).repeat(cell, axis=2)


@pytest.mark.parametrize("c", [4, 16])
def test_fit_recovers_a_known_map(c: int) -> None:
    rng = np.random.default_rng(c)
    latents = rng.uniform(-1, 1, (24, c, 4, 4)).astype(np.float32)
    weights = known_map(c, seed=c)
    fitted = fit_linear_decoder(latents, images_of(latents, weights))
    assert fitted.shape == (c + 1, 3) and fitted.dtype == np.float32
    np.testing.assert_allclose(fitted, weights, atol=1 / 127)
    # and it reproduces the images through apply_linear_map + to_uint8 (within one grey level)
    back = to_uint8(apply_linear_map(latents, fitted))
    target = images_of(latents, weights, cell=1)
    assert np.abs(back.astype(int) - target.astype(int)).max() <= 1


def test_fit_uses_cell_averages() -> None:
    """Pixels that vary inside each cell: the fit sees their cell means (here a map from one channel)."""
    latents = np.random.default_rng(1).uniform(-1, 1, (16, 1, 4, 4)).astype(np.float32)
    means = np.rint((0.5 * latents[:, 0] + 1.0) * 127.5)  # grey, bias 0, weight 0.5
    pixels = np.repeat(means[..., None], 3, -1).repeat(8, 1).repeat(8, 2)
    pixels[:, ::2] += 3  # half the rows brighter, half darker: the mean is unchanged
    pixels[:, 1::2] -= 3
    fitted = fit_linear_decoder(latents, pixels.astype(np.uint8))
    np.testing.assert_allclose(fitted, [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]], atol=1 / 127)


def test_fit_needs_as_many_square_latents_as_images() -> None:
    pixels = np.zeros((3, 32, 32, 3), np.uint8)
    with pytest.raises(LossyloadError, match="need as many images, got 3"):
        fit_linear_decoder(np.zeros((4, 4, 4, 4), np.float32), pixels)
    with pytest.raises(LossyloadError, match="square"):
        fit_linear_decoder(np.zeros((3, 4, 4, 2), np.float32), pixels)


# ------------------------------------------------------------------------------------------- helpers
def test_apply_linear_map_shape_and_values() -> None:
    latents = np.arange(2 * 3 * 2 * 5, dtype=np.float32).reshape(2, 3, 2, 5) / 10
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    out = apply_linear_map(latents, weights)
    assert out.shape == (2, 3, 2, 5) and out.dtype == np.float32
    for n, r, i, j in [(0, 0, 0, 0), (1, 2, 1, 4), (0, 1, 1, 3)]:
        expect = sum(latents[n, k, i, j] * weights[k, r] for k in range(3)) + weights[3, r]
        assert out[n, r, i, j] == pytest.approx(expect, rel=1e-6)


@pytest.mark.parametrize("shape", [(4, 3), (6, 3), (5, 4), (15,)])
def test_apply_linear_map_needs_a_c_plus_1_by_3_map(shape: tuple[int, ...]) -> None:
    with pytest.raises(LossyloadError, match=r"a \[5, 3\] map is needed for 4-channel latents"):
        apply_linear_map(np.zeros((1, 4, 2, 2), np.float32), np.zeros(shape, np.float32))


def test_pool_to_grid_averages_each_cell() -> None:
    pixels = np.zeros((1, 4, 4, 3), np.uint8)
    pixels[0, :2, :2] = 255  # top-left cell white
    pixels[0, :2, 2:, 0] = [[0, 255], [255, 0]]  # top-right cell: red half on
    pixels[0, 2:, :2] = 51  # bottom-left: 51 / 127.5 - 1 = -0.6
    out = pool_to_grid(pixels, 2)
    assert out.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(out[0, :, 0, 0], [1, 1, 1])
    np.testing.assert_allclose(out[0, :, 0, 1], [127.5 / 127.5 - 1, -1, -1])
    np.testing.assert_allclose(out[0, :, 1, 0], [-0.6, -0.6, -0.6])
    np.testing.assert_allclose(out[0, :, 1, 1], [-1, -1, -1])


def test_pool_to_grid_drops_the_rows_past_the_last_whole_cell() -> None:
    pixels = np.full((2, 9, 9, 3), 255, np.uint8)
    pixels[:, 8, :] = 0  # outside the 2 x 2 grid of 4-pixel cells
    pixels[:, :, 8] = 0
    np.testing.assert_allclose(pool_to_grid(pixels, 2), np.ones((2, 3, 2, 2)))


def test_to_uint8_scales_rounds_and_clips() -> None:
    rgb = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], np.float32).reshape(1, 1, 1, 7).repeat(3, 1)
    rgb[0, 1] *= -1
    out = to_uint8(rgb)
    assert out.shape == (1, 1, 7, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 64, 128, 191, 255, 255]  # rint(127.5) = 128, rint(63.75) = 64
    assert out[0, 0, :, 1].tolist() == [255, 255, 191, 128, 64, 0, 0]


def test_grid_image_layout_and_size() -> None:
    tiles = np.stack([np.full((3, 2, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    im = grid_image(tiles, columns=2, upscale=3)
    assert im.size == (2 * 2 * 3, 3 * 3 * 3) and im.mode == "RGB"
    sheet = np.asarray(im)
    for i in range(5):
        r, c = divmod(i, 2)
        assert (sheet[r * 9:(r + 1) * 9, c * 6:(c + 1) * 6] == 10 * (i + 1)).all()
    assert (sheet[18:, 6:] == 255).all()  # the empty sixth tile is white
    plain = grid_image(tiles, columns=5, upscale=1)
    assert plain.size == (10, 3)
    np.testing.assert_array_equal(np.asarray(plain)[:, 4:6], tiles[2])


# ------------------------------------------------------------------------------------------- dataset_map
def test_dataset_map_fitted_is_the_recorded_map() -> None:
    values = [float(v) for v in range(15)]
    out = dataset_map({"preview_map": values, "latent_channels": 4}, "fitted")
    assert out.shape == (5, 3) and out.dtype == np.float32
    assert out[0].tolist() == [0, 1, 2] and out[4].tolist() == [12, 13, 14]


@pytest.mark.parametrize("which", ["sd1", "sdxl"])
def test_dataset_map_builtin(which: str) -> None:
    out = dataset_map({}, which)
    assert out.shape == (5, 3)
    np.testing.assert_array_equal(out, BUILTIN_MAPS[which])
    assert not np.array_equal(BUILTIN_MAPS["sd1"], BUILTIN_MAPS["sdxl"])


def test_dataset_map_unknown_and_missing() -> None:
    with pytest.raises(LossyloadError, match="unknown map 'sd3'; known: fitted, sd1, sdxl"):
        dataset_map({"preview_map": [0.0] * 15, "latent_channels": 4}, "sd3")
    missing = ({}, {"latent_channels": 4}, {"preview_map": [0.0] * 15}, {"preview_map": None, "latent_channels": 4})
    for config in missing:
        with pytest.raises(LossyloadError, match="no preview_map"):
            dataset_map(config, "fitted")


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preview")
    src = make_image_folder(root / "src", {"bird": 6, "cat": 6, "dog": 6}, size=(40, 48))
    out = {"src": src}
    for codec, config in (("vae", {"model": "random:tiny", "resolution": 32, "fit_samples": 8}), ("jpeg-dct", {})):
        run_job(ShardJob(src=str(src), dest=str(root / codec), codec=codec, config=config, progress=False))
        out[codec] = root / codec
    return out


def test_preview_writes_the_grid_of_the_first_samples(shard_sets: dict[str, Path], tmp_path: Path, capsys) -> None:
    dest, png = shard_sets["vae"], tmp_path / "grid.png"
    assert main(["preview", str(dest), "--out", str(png), "--count", "4", "--columns", "2", "--upscale", "3"]) == 0
    im = Image.open(png)
    assert im.format == "PNG" and im.size == (2 * GRID * 3, 2 * GRID * 3)
    # the tiles are the first 4 samples (source order) through the map the index records
    index = Index.from_json((dest / "index.json").read_text())
    ds = open_dataset(str(dest), train=False, shuffle=False, transforms=[])
    latents = np.stack([x.numpy() for x, _ in list(ds)[:4]])
    assert latents.shape == (4, 4, GRID, GRID)
    weights = np.asarray(index.config["preview_map"], np.float32).reshape(5, 3)
    tiles = to_uint8(apply_linear_map(latents, weights))
    sheet = np.asarray(im)
    for i in range(4):
        r, c = divmod(i, 2)
        np.testing.assert_array_equal(sheet[r * 12:(r + 1) * 12:3, c * 12:(c + 1) * 12:3], tiles[i])
    assert len(np.unique(sheet.reshape(-1, 3), axis=0)) > 4  # not a blank or flat image
    out = capsys.readouterr().out
    assert f"{png}: 4 samples (bird, bird ...)" in out


def test_preview_default_layout(shard_sets: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    assert main(["preview", str(shard_sets["vae"]), "--out", str(png), "--count", "10"]) == 0
    assert Image.open(png).size == (8 * GRID * 4, 2 * GRID * 4)  # 8 columns, upscale 4


def test_preview_with_a_builtin_map(shard_sets: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "fitted.png", tmp_path / "sd1.png"
    assert main(["preview", str(shard_sets["vae"]), "--out", str(a), "--count", "4", "--columns", "4"]) == 0
    assert main(["preview", str(shard_sets["vae"]), "--out", str(b), "--count", "4", "--columns", "4",
                 "--map", "sd1"]) == 0
    assert Image.open(a).size == Image.open(b).size
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_preview_of_an_index_json_path(shard_sets: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "i.png"
    assert main(["preview", str(shard_sets["vae"] / "index.json"), "--out", str(png), "--count", "2"]) == 0
    assert png.exists()


def test_preview_of_a_non_vae_dataset_is_refused(shard_sets: dict[str, Path], tmp_path: Path, capsys) -> None:
    png = tmp_path / "no.png"
    assert main(["preview", str(shard_sets["jpeg-dct"]), "--out", str(png), "--count", "4"]) == 2
    assert not png.exists()
    assert "preview needs a vae shard set, this one is 'jpeg-dct'" in capsys.readouterr().err


def test_preview_with_an_unknown_map_is_refused(shard_sets: dict[str, Path], tmp_path: Path, capsys) -> None:
    png = tmp_path / "no.png"
    assert main(["preview", str(shard_sets["vae"]), "--out", str(png), "--map", "nope"]) == 2
    assert not png.exists() and "unknown map 'nope'" in capsys.readouterr().err


def test_preview_of_a_missing_dataset_is_refused(tmp_path: Path) -> None:
    assert main(["preview", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2
