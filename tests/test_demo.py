"""The main job end to end on a tiny build of the bundled set: shard, stream, train, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossyload.datasets.photos import PhotosConfig, build_photos
from lossyload.demo import DemoConfig, format_table, run_demo
from lossyload.errors import LossyloadError


def test_demo_runs_every_row_and_reports(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    build_photos(data, PhotosConfig(train_per_class=6, test_per_class=2), progress=False)
    cfg = DemoConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=8, size=64, shard_workers=1,
                     loader_workers=0)
    rows = run_demo(cfg)
    assert [r["representation"].split(" ·")[0] for r in rows] == ["rgb", "rgb", "jpeg-dct", "jpeg-dct", "jpeg-dct"]
    trained = [r for r in rows if r["test_accuracy"] is not None]
    assert len(trained) == 3
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["train_step_ms"] > 0 for r in trained)
    assert all(r["loader_samples_per_s"] > 0 for r in rows)
    rgb, dct, small = rows[1], rows[2], rows[4]
    assert rgb["input_bytes_per_batch"] == 8 * 3 * 64 * 64 * 4  # float32 pixels
    assert dct["input_bytes_per_batch"] == 8 * (64 * 8 * 8 + 128 * 4 * 4 + 3 * 64) * 2  # int16 y, cbcr, qt
    assert small["input_bytes_per_batch"] == 8 * (16 * 8 * 8 + 16 * 4 * 4 + 3 * 64) * 2
    assert rgb["stored_bytes_per_sample"] == dct["stored_bytes_per_sample"]  # the same JPEG shards
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rows"] == rows
    table = format_table(rows, cfg.batch_size)
    assert table.count("\n") == len(rows) + 1 and "1.00x" in table


def test_demo_needs_train_and_val(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(LossyloadError, match="train/ and val/"):
        run_demo(DemoConfig(data=str(tmp_path), out=str(tmp_path / "run")))
