"""lossyload-train end to end in quick mode (tiny builds of the bundled sets, one epoch), and its config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lossyload.errors import LossyloadError
from lossyload.train import TrainConfig, report
from lossyload.train.cli import main
from lossyload.train.trainer import device_of

B = 8  # the quick mode's batch

INPUT_BYTES = {
    "mel": B * 128 * 128 * 4, "vq-bnn": B * 4 * 64 * 64, "vq-cnn": B * 4 * 64 * 64 * 4, "encodec": B * 128 * 75 * 4,
    "pixels": B * 3 * 64 * 64 * 4, "pixels-small": B * 3 * 32 * 32 * 4, "latents": B * 4 * 16 * 16 * 4,
    "dct": B * (64 * 8 * 8 + 128 * 4 * 4 + 3 * 64) * 2,  # int16 luma, chroma and quantization tables
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("train")
    torch_threads = torch.get_num_threads()
    try:
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            rc = main(["--quick", "--out", str(out), "--no-progress", "--encodec-weights", "random"])
    finally:
        torch.set_num_threads(torch_threads)
    return out, rc, printed.getvalue()


def test_quick_run_trains_every_row_and_measures_it(quick_run) -> None:
    out, rc, printed = quick_run
    assert rc == 0
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert list(rows) == ["mel", "vq-bnn", "vq-cnn", "encodec", "pixels", "pixels-small", "latents", "dct"]
    for name, r in rows.items():
        assert r["input_bytes_per_batch"] == INPUT_BYTES[name], name
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["params"] > 0 and r["flops_per_sample"] > 0, name
        assert r["feature_bytes_per_batch"] > 0 and r["train_step_ms"] > 0 and r["epoch_s"] > 0, name
        assert r["loader_samples_per_s"] > 0 and r["peak_rss_mb"] > 100 and r["batch_size"] == B, name
    assert [n for n, r in rows.items() if r["baseline"]] == ["mel", "pixels"]
    # the pixel, resampled-pixel and DCT rows read the same JPEG shards; latents are stored smaller
    assert rows["pixels"]["stored_bytes_per_sample"] == rows["dct"]["stored_bytes_per_sample"] \
        == rows["pixels-small"]["stored_bytes_per_sample"]
    assert rows["vq-bnn"]["stored_bytes_per_sample"] * 3 < rows["mel"]["stored_bytes_per_sample"]
    # the BNN saves bits for backward, the mel CNN floats
    assert rows["mel"]["feature_bytes_per_batch"] > 16 * rows["vq-bnn"]["feature_bytes_per_batch"]
    assert rows["dct"]["flops_per_sample"] < rows["pixels"]["flops_per_sample"]


def test_quick_run_writes_the_report_it_prints(quick_run) -> None:
    out, _, printed = quick_run
    text = (out / report.REPORT).read_text()
    assert text in printed and "quick mode" in text
    assert text.count("### ") == 2 and text.count("- met") + text.count("- **missed**") == 5
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{e}-{k}.png" for e in ("speech", "images") for k in ("accuracy-vs-stored", "accuracy-vs-feature", "samples-per-s"))
    assert report.write(str(out)) == text  # regenerated from results.json alone


def test_unknown_experiment_or_row_is_a_clear_error() -> None:
    with pytest.raises(LossyloadError, match="unknown experiment 'video'"):
        TrainConfig(experiment="video")
    with pytest.raises(LossyloadError, match=r"unknown row\(s\) \['bogus'\]"):
        TrainConfig(rows=("mel", "bogus"))


def test_rows_select_a_subset() -> None:
    cfg = TrainConfig(experiment="speech", rows=("mel", "vq-bnn"))
    from lossyload.train.experiments import rows_of

    assert [r.name for r in rows_of("speech", cfg.rows)] == ["mel", "vq-bnn"]
    assert rows_of("images", cfg.rows) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when no GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(LossyloadError, match="no CUDA device"):
        device_of(TrainConfig(device="cuda"))
    assert device_of(TrainConfig()).type == "cpu"


def test_missing_image_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["--experiment", "images", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "expected ImageFolder subfolders" in capsys.readouterr().err
