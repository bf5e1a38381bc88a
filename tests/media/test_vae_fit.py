"""``lossyload fit-vae``: a tiny ResampleVae (and AutoencoderKL) fitted on a tiny image folder. The summary
(returned and in fit.json) with the fitted and the resampling PSNR side by side, the untrained model equal to
resampling and the fitted one above it, the best state kept, the saved folder (loads through ``load_vae`` with its
class, carries the fitted scaling factor), the folder as the ``vae`` codec's model end to end, the CLI and the
errors."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import lossyload
from lossyload.cli import main
from lossyload.errors import LossyloadError
from lossyload.media.vae_fit import FitVaeConfig, fit_vae
from lossyload.index import Index
from lossyload.media.vae_model import image_views, load_vae
from lossyload.shard import ShardJob, run_job
from lossyload.commands.shard import main as shard_main

from ..conftest import write

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = FitVaeConfig(resolution=32, max_steps=30, width=16, blocks=1, holdout=0.25, seed=0, device="cpu")
TINY_KL = FitVaeConfig(architecture="autoencoderkl", resolution=32, max_steps=3, block_out_channels=(8, 8, 16, 16),
                       holdout=0.25, seed=0, device="cpu")
SUMMARY_KEYS = {"psnr_db", "psnr_resampling_db", "psnr_untrained_db", "best_step", "history", "steps", "seconds",
                "train_images", "holdout_images", "skipped", "scaling_factor", "latent_shape", "config"}


def make_images(root: Path, n: int = 12, size: int = 48, seed: int = 0) -> Path:
    """``n`` images (PNG and JPEG, in two class folders ``a/`` and ``b/``): a gradient between two colours of a
    shared palette at a random angle, with two brighter ellipses or rectangles."""
    rng = np.random.default_rng(seed)
    base = np.array([70.0, 110.0, 170.0])
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a, b = base + rng.normal(0, 25, 3), base + rng.normal(0, 25, 3) - 50
        angle = rng.uniform(0, 2 * np.pi)
        t = ((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle) + 0.5)[..., None]
        im = Image.fromarray(np.clip(a * (1 - t) + b * t, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(2):
            x0, y0 = (int(v) for v in rng.integers(0, size - 16, 2))
            w = int(rng.integers(8, 16))
            fill = tuple(int(v) for v in np.clip(base + 60 + rng.normal(0, 30, 3), 0, 255))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + w], fill=fill)
        path = root / "ab"[i % 2] / f"img_{i:02d}.{('png', 'jpg')[i % 2]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
    return root


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = make_images(tmp_path_factory.mktemp("fit") / "src")
    write(root / "b" / "zz_bad.jpg", b"\xff\xd8\xff\xe0 a JPEG start, then nothing")
    write(root / "a" / "notes.txt", b"not an image, not picked up")
    return root


@pytest.fixture(scope="module")
def fitted(src: Path, tmp_path_factory, one_thread) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fitted") / "vae"
    return out, fit_vae(str(src), str(out), TINY, progress=False)


# ------------------------------------------------------------------------------------------- the fit
def test_summary_is_returned_and_written_last(fitted) -> None:
    out, summary = fitted
    assert SUMMARY_KEYS <= set(summary)
    assert json.loads((out / "fit.json").read_text()) == summary
    assert summary["config"] == TINY.to_json() == json.loads(json.dumps(dataclasses.asdict(TINY)))
    assert summary["steps"] == 30 and summary["seconds"] > 0
    assert (summary["train_images"], summary["holdout_images"]) == (9, 3)  # 12 readable, a quarter held out
    assert (out / "fit.json").stat().st_mtime_ns >= (out / "config.json").stat().st_mtime_ns


def test_unreadable_image_is_skipped_and_counted(fitted) -> None:
    _, summary = fitted
    assert summary["skipped"] == 1
    assert len(summary["skipped_files"]) == 1 and "zz_bad.jpg" in summary["skipped_files"][0]


def test_untrained_model_is_resampling_and_the_fitted_one_beats_it(fitted) -> None:
    _, summary = fitted
    assert math.isfinite(summary["psnr_resampling_db"]) and summary["latent_shape"] == [4, 4, 4]
    assert summary["psnr_untrained_db"] == pytest.approx(summary["psnr_resampling_db"], abs=1e-4)
    assert summary["history"][0] == {"step": 0, "seconds": summary["history"][0]["seconds"],
                                     "psnr_db": summary["psnr_untrained_db"]}
    assert [h["step"] for h in summary["history"]] == [0, 4, 8, 12, 15, 19, 23, 27, 30]  # checkpoints of 30 steps
    best = max(summary["history"], key=lambda h: h["psnr_db"])
    assert (summary["best_step"], summary["psnr_db"]) == (best["step"], best["psnr_db"])
    assert summary["psnr_db"] > summary["psnr_resampling_db"] + 0.1  # measured +0.46 dB


def test_the_best_state_measured_is_saved(src: Path, tmp_path: Path) -> None:
    """A learning rate that wrecks the model: every checkpoint after step 0 is worse, so the saved model is the
    untrained one -- resampling -- and the summary says so."""
    from lossyload.media.vae_fit import build_vae

    config = dataclasses.replace(TINY, lr=1.0, max_steps=8, checkpoints=2)
    summary = fit_vae(str(src), str(tmp_path / "vae"), config, progress=False)
    assert [h["step"] for h in summary["history"]] == [0, 4, 8]
    assert all(h["psnr_db"] < summary["psnr_resampling_db"] - 1 for h in summary["history"][1:])
    assert summary["best_step"] == 0 and summary["psnr_db"] == summary["psnr_untrained_db"]
    saved, fresh = load_vae(str(tmp_path / "vae")).state_dict(), build_vae(config).state_dict()
    assert saved.keys() == fresh.keys() and all(torch.equal(saved[k], fresh[k]) for k in saved)


def test_folder_loads_with_its_class(fitted) -> None:
    from lossyload.media.resample_vae import ResampleVae

    out, summary = fitted
    vae = load_vae(str(out))
    assert type(vae) is ResampleVae
    assert vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])
    assert summary["scaling_factor"] > 0 and math.isfinite(summary["scaling_factor"])
    assert (vae.config.width, vae.config.blocks, vae.config.latent_channels) == (16, 1, 4)


def test_autoencoderkl_architecture(src: Path, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    summary = fit_vae(str(src), str(tmp_path / "kl"), TINY_KL, progress=False)
    vae = load_vae(str(tmp_path / "kl"))
    assert type(vae) is AutoencoderKL and tuple(vae.config.block_out_channels) == (8, 8, 16, 16)
    assert vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])
    assert summary["steps"] == 3 and math.isfinite(summary["psnr_resampling_db"])
    assert summary["psnr_untrained_db"] < summary["psnr_resampling_db"] - 5  # random weights: far below


def test_same_seed_same_model(src: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, max_steps=2)
    a = fit_vae(str(src), str(tmp_path / "a"), config, progress=False)
    b = fit_vae(str(src), str(tmp_path / "b"), config, progress=False)
    assert (a["psnr_db"], a["scaling_factor"]) == (b["psnr_db"], b["scaling_factor"])
    assert (tmp_path / "a" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        tmp_path / "b" / "diffusion_pytorch_model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------- as the vae codec's model
def test_folder_shards_through_the_vae_codec(src: Path, fitted, tmp_path: Path) -> None:
    out, summary = fitted
    dest = tmp_path / "shards"
    result = run_job(ShardJob(src=str(src), dest=str(dest), codec="vae", progress=False,
                              config={"model": str(out), "resolution": 32, "fit_samples": 8}))
    assert result.samples == 12  # the unreadable file is skipped by the shard tool too
    cfg = Index.from_json((dest / "index.json").read_text()).config
    assert cfg["model"] == str(out)
    assert cfg["scaling_factor"] == pytest.approx(summary["scaling_factor"])
    assert (cfg["latent_channels"], cfg["downsample"]) == (4, 8)
    latents = torch.cat([x for x, _ in lossyload.open_dataset(str(dest), train=False, shuffle=False)])
    assert latents.shape == (12 * 4, 4, 4)
    assert 0.3 < float(latents.std()) < 3.0  # scaled by the fitted factor: about unit spread


def test_untrained_folder_shards_to_the_area_averages(src: Path, tmp_path: Path) -> None:
    """max_steps=0 saves the untrained model: through the codec (int8 steps of 1/127 over [-1, 1]), latent channels
    0-2 are each view's 8 x 8 block means, within half a step."""
    out, dest = tmp_path / "vae", tmp_path / "shards"
    fit_vae(str(src), str(out), dataclasses.replace(TINY, max_steps=0), progress=False)
    run_job(ShardJob(src=str(src), dest=str(dest), codec="vae", progress=False,
                     config={"model": str(out), "resolution": 32, "scale": [1 / 127] * 4, "offset": [0.0] * 4}))
    latents = np.stack([x.numpy() for x, _ in lossyload.open_dataset(str(dest), train=False, shuffle=False,
                                                                     options={"scaled": False})])
    assert latents.shape == (12, 4, 4, 4)
    means = []
    for f in sorted(p for p in src.rglob("img_*")):
        view = image_views(f.read_bytes(), source=str(f), resolution=32, views=1, seed=0, max_pixels=10**8)[0][0]
        means.append(np.moveaxis(view.reshape(4, 8, 4, 8, 3).mean(axis=(1, 3)), -1, 0) / 127.5 - 1.0)
    matched = [int(np.argmin([np.abs(z[:3] - m).max() for m in means])) for z in latents]
    assert sorted(matched) == list(range(12))  # each latent is one image's, each image has one latent
    for z, i in zip(latents, matched):
        assert float(np.abs(z[:3] - means[i]).max()) <= 0.5 / 127 + 1e-6


# ------------------------------------------------------------------------------------------- the CLI
def test_cli_prints_the_figures_and_a_working_shard_command(src: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vae"
    argv = ["fit-vae", str(src), str(out), "--resolution", "32", "--max-steps", "3", "--checkpoints", "3",
            "--width", "8", "--holdout", "0.25", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "fit.json").read_text())
    assert summary["config"]["width"] == 8 and summary["config"]["checkpoints"] == 3
    assert summary["steps"] == 3 and "psnr_resampling_db" in summary
    assert (f"fitted {summary['psnr_db']:.2f} dB vs resampling {summary['psnr_resampling_db']:.2f} dB (3x4x4: area "
            f"down, bilinear up)") in printed
    assert f"best of 4 evaluations at step {summary['best_step']} of 3" in printed
    command = next(line for line in printed.splitlines() if "lossyload-shard" in line)
    words = shlex.split(command.split(": ", 1)[1])
    assert words[:6] == ["lossyload-shard", "SRC", "DEST", "--codec", "vae", "--set"]
    dest = tmp_path / "shards"
    assert shard_main([str(src), str(dest), *words[3:], "--no-progress"]) == 0
    cfg = Index.from_json((dest / "index.json").read_text()).config
    assert cfg["model"] == str(out.resolve()) and cfg["resolution"] == 32


def test_cli_refuses_bad_channels(src: Path, tmp_path: Path, capsys) -> None:
    assert main(["fit-vae", str(src), str(tmp_path / "o"), "--channels", "8,16,16"]) == 2
    assert "block_out_channels needs 4 positive integers" in capsys.readouterr().err
    assert main(["fit-vae", str(src), str(tmp_path / "o"), "--channels", "8,x,16,16"]) == 2
    assert "--channels takes 4 comma-separated integers" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("channels", [(8, 16, 16), (8, 8, 16, 16, 16), (8, 0, 16, 16)])
def test_config_refuses_other_than_4_positive_blocks(channels) -> None:
    with pytest.raises(ValueError, match="block_out_channels needs 4 positive integers"):
        FitVaeConfig(block_out_channels=channels)


@pytest.mark.parametrize("field, value", [("resolution", 36), ("holdout", 0.0), ("holdout", 1.0), ("lr", 0.0),
                                          ("max_steps", -1), ("kl_weight", -1.0), ("l2_weight", 0.0),
                                          ("architecture", "vqgan"), ("latent_channels", 2), ("checkpoints", 0),
                                          ("posterior_std", 0.0)])
def test_config_refuses_bad_values(field: str, value) -> None:
    with pytest.raises(ValueError, match="FitVaeConfig"):
        FitVaeConfig(**{field: value})


def test_empty_source_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write(empty / "readme.txt", b"no images here")
    with pytest.raises(LossyloadError, match=f"{empty}: no images"):
        fit_vae(str(empty), str(tmp_path / "out"), TINY, progress=False)
    with pytest.raises(LossyloadError, match="not a folder"):
        fit_vae(str(tmp_path / "missing"), str(tmp_path / "out"), TINY, progress=False)
    assert not (tmp_path / "out").exists()


def test_too_few_readable_images_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    write(bad / "x.jpg", b"not a jpeg")
    write(bad / "y.png", b"not a png")
    with pytest.raises(LossyloadError, match=r"at least 2 readable images, found 0 \(2 unreadable\)"):
        fit_vae(str(bad), str(tmp_path / "out"), TINY, progress=False)


def test_non_empty_output_needs_overwrite(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out / "something.txt", b"already here")
    with pytest.raises(LossyloadError, match=f"{out}: fit-vae output folder is not empty"):
        fit_vae(str(src), str(out), TINY, progress=False)
    summary = fit_vae(str(src), str(out), dataclasses.replace(TINY, max_steps=1), progress=False, overwrite=True)
    assert summary["steps"] == 1 and (out / "fit.json").exists() and (out / "config.json").exists()
