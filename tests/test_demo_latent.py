"""The latent part of the main job end to end on a tiny build of the bundled set: pixels at two sizes against
VAE latents, one table in the seed's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossyload.datasets.photos import PhotosConfig, build_photos
from lossyload.demo_latent import LatentDemoConfig, format_latent_table, run_latent_demo
from lossyload.errors import LossyloadError
from lossyload.fs import read_index

pytestmark = pytest.mark.usefixtures("one_thread")


def test_latent_demo_runs_every_row_and_reports(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    build_photos(data, PhotosConfig(train_per_class=4, test_per_class=2), progress=False)
    cfg = LatentDemoConfig(data=str(data), out=str(tmp_path / "run"), resolution=64, full_size=64, small_size=32,
                           epochs=1, batch_size=8, shard_workers=1)
    rows = run_latent_demo(cfg)
    assert [r["representation"] for r in rows] == ["pixels · 64x64x3", "pixels · resampled 32x32x3",
                                                   "vae latents · 8x8x4 int8"]
    full, small, lat = rows
    assert full["input_bytes_per_batch"] == 8 * 3 * 64 * 64 * 4
    assert small["input_bytes_per_batch"] == 8 * 3 * 32 * 32 * 4
    assert lat["input_bytes_per_batch"] == 8 * 4 * 8 * 8 * 4  # float32 latents, translated within the grid
    assert lat["payload_bytes_per_sample"] == 4 * 8 * 8  # int8, one view, mean only
    assert full["stored_bytes_per_sample"] == small["stored_bytes_per_sample"]  # the same JPEG shards
    assert lat["params"] - small["params"] == 9 * 32 + 2  # same GridNet; one more input channel (stem, BatchNorm)
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["train_step_ms"] > 0 and r["loader_samples_per_s"] > 0
               for r in rows)
    _, test = read_index(str(tmp_path / "run" / "shards" / "latent-test-vae"))
    _, train = read_index(str(tmp_path / "run" / "shards" / "latent-train-vae"))
    assert test.config["scale"] == train.config["scale"]  # the test split reuses the training quantization
    table = format_latent_table(rows, cfg.batch_size)
    assert table.count("\n| ") == 3 and "RANDOM-initialised" in table


def test_latent_demo_needs_train_and_val(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(LossyloadError, match="train/ and val/"):
        run_latent_demo(LatentDemoConfig(data=str(tmp_path), out=str(tmp_path / "run")))
