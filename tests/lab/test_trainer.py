"""lossyload-train end to end with the quick preset (tiny builds of the bundled sets, one epoch), the data step's
reuse of shard sets, and the config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lossyload.errors import LossyloadError
from lossyload.lab import report
from lossyload.lab.cli import main
from lossyload.lab.presets import MAIN, PRESETS, Preset
from lossyload.lab.rows import ROWS
from lossyload.lab.trainer import TrainConfig, device_of

B = 8  # the quick preset's batch

INPUT_BYTES = {
    "mel": B * 128 * 128 * 4, "vq-codes": B * 64 * 64, "vq-bnn": B * 4 * 64 * 64, "vq-bits-cnn": B * 4 * 64 * 64,
    "vq-cnn": B * 4 * 64 * 64 * 4, "encodec-codes": B * 8 * 75 * 2, "encodec": B * 128 * 75 * 4,
    "pixels-pil": B * 3 * 64 * 64 * 4, "pixels": B * 3 * 64 * 64 * 4, "pixels-small": B * 3 * 32 * 32 * 4,
    "latents": B * 4 * 16 * 16 * 4,  # float32 latents, translated within the grid
    "dct": B * (64 * 8 * 8 + 128 * 4 * 4 + 3 * 64) * 2,  # int16 luma, chroma and quantization tables
    "dct-pre": B * (64 * 8 * 8 + 128 * 4 * 4 + 3 * 64) * 2, "dct-16-8": B * (16 * 8 * 8 + 16 * 4 * 4 + 3 * 64) * 2,
    "dct-24": B * (16 * 8 * 8 + 8 * 4 * 4 + 3 * 64) * 2,
}
LOADER_ONLY = {"vq-codes", "encodec-codes", "pixels-pil", "dct-pre"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("train")
    torch_threads = torch.get_num_threads()
    try:
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            rc = main(["--preset", "quick", "--out", str(out), "--no-progress", "--encodec-weights", "random"])
    finally:
        torch.set_num_threads(torch_threads)
    return out, rc, printed.getvalue()


def test_quick_run_measures_every_row_and_trains_those_with_a_model(quick_run) -> None:
    out, rc, printed = quick_run
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["encodec"] == {"weights": "random"} and results["vae"]["source"] == "fitted"
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == list(MAIN)  # the quick preset runs every row but the ablations
    for name, r in rows.items():
        assert r["input_bytes_per_batch"] == INPUT_BYTES[name], name
        assert r["loader_samples_per_s"] > 0 and r["batch_size"] == B and r["payload_bytes_per_sample"] > 0, name
        if name in LOADER_ONLY:
            assert r["model"] is None and r["test_accuracy"] is None and r["params"] is None, name
            continue
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["params"] > 0 and r["flops_per_sample"] > 0, name
        assert r["feature_bytes_per_batch"] > 0 and r["train_step_ms"] > 0 and r["epoch_s"] > 0, name
        assert r["peak_rss_mb"] > 100, name
        assert r["validation"] and r["epochs_cap"] >= 1, name  # every bundled set has a validation split
        for run in r["runs"]:  # each run stops at its plateau or its cap and keeps its best validation epoch
            assert run["stopped"] in ("plateau", "cap") and 1 <= run["best_epoch"] <= run["epochs"], name
            assert run["test_accuracy"] == run["curve"][run["best_epoch"] - 1], name
            assert len(run["val_curve"]) == len(run["curve"]) == run["epochs"], name
    assert [n for n, r in rows.items() if r["baseline"]] == ["mel", "pixels"]
    # the pixel, resampled-pixel and DCT rows read the same JPEG shards; latents and VQ codes are stored smaller
    assert rows["pixels"]["stored_bytes_per_sample"] == rows["dct"]["stored_bytes_per_sample"] \
        == rows["pixels-small"]["stored_bytes_per_sample"] == rows["pixels-pil"]["stored_bytes_per_sample"]
    assert rows["vq-bnn"]["stored_bytes_per_sample"] * 3 < rows["mel"]["stored_bytes_per_sample"]
    assert rows["encodec"]["payload_bytes_per_sample"] == 4 + 8 * 75 * 10 // 8  # 8 levels x 75 frames x 10 bits
    assert rows["vq-codes"]["payload_bytes_per_sample"] < 64 * 64 // 2 + 64  # 4-bit codes, zstd on top
    assert rows["latents"]["payload_bytes_per_sample"] == 4 * 16 * 16  # int8, one view, mean only
    assert all(r["pcm16_bytes_per_sample"] == 32000 for r in rows.values() if r["experiment"] == "speech")
    # the BNN saves bits for backward, the mel CNN floats
    assert rows["mel"]["feature_bytes_per_batch"] > 16 * rows["vq-bnn"]["feature_bytes_per_batch"]
    assert rows["dct"]["flops_per_sample"] < rows["pixels"]["flops_per_sample"]
    assert rows["dct-16-8"]["flops_per_sample"] < rows["dct"]["flops_per_sample"]
    # the resampled-pixel and latent rows train the same network: only the first layer's input channels differ
    assert rows["latents"]["params"] - rows["pixels-small"]["params"] == 9 * 16 + 2


def test_quick_run_prints_one_table_and_writes_the_report(quick_run) -> None:
    out, _, printed = quick_run
    text = (out / report.REPORT).read_text()
    assert report.summary(report.load(str(out))) in printed and "quick preset" in text
    assert [h for h in text.splitlines() if h.startswith("#")] == [
        "# Reference trainer report: quick preset", "## Targets", "## speech", "### speech plots", "## images",
        "### images plots", "## Notes"]
    # the speech target and its two parts, the aim, the DCT row, the best DCT row, the latents
    assert len(re.findall(r"^ *- (met|\*\*missed|not run|\*\*not measured)", text, re.M)) == 7
    assert "lossyload-train --preset quick" in text  # the command that made it
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{e}-{k}.png" for e in ("speech", "images") for k in ("accuracy-vs-stored", "accuracy-vs-feature", "samples-per-s", "curves"))
    assert report.write(str(out)) == text  # regenerated from results.json alone


def test_a_rerun_reuses_the_complete_shard_sets(quick_run, tmp_path: Path, capsys) -> None:
    out, _, _ = quick_run
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert len(shards) == 8  # mel, vq, encodec; jpeg, coefficients, coefficients-16-8, coefficients-24, vae
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.tar")}
    assert main(["--preset", "quick", "--out", str(tmp_path), "--work", str(out), "--no-progress",
                 "--encodec-weights", "random", "--rows", "vq-codes", "dct-pre"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["images-samples-per-s.png", "speech-samples-per-s.png"]
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.tar")} == before
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards
    assert "bytes in" not in capsys.readouterr().out  # no shard job printed a summary of new work


def test_unknown_experiment_row_or_preset_is_a_clear_error() -> None:
    with pytest.raises(LossyloadError, match="unknown experiment 'video'"):
        TrainConfig(experiment="video")
    with pytest.raises(LossyloadError, match=r"unknown row\(s\) \['bogus'\]"):
        TrainConfig(rows=("mel", "bogus"))
    with pytest.raises(LossyloadError, match="unknown preset 'huge'"):
        TrainConfig(preset="huge")
    with pytest.raises(LossyloadError, match="unknown or unselected rows"):
        Preset(name="x", about="", rows=("mel",), loader_only=("dct",))


def test_presets_cover_every_codec_and_train_a_comparison_per_modality() -> None:
    for name, p in PRESETS.items():
        cfg = TrainConfig(preset=name)
        chosen = [r for e in cfg.experiments() for r in cfg.rows_of(e)]
        experiments = {r.experiment for r in chosen}
        assert {r.codec for r in chosen} == {r.codec for r in ROWS if r.experiment in experiments}, name
        assert {r.shards for r in chosen} >= {"jpeg", "coefficients", "coefficients-16-8", "vae"}, name
        for experiment in experiments:
            trained = [r for r in chosen if r.experiment == experiment and cfg.model_of(r)]
            assert any(r.baseline for r in trained) and any(not r.baseline for r in trained), (name, experiment)
    demo = TrainConfig(preset="demo")
    assert demo.model_of(next(r for r in ROWS if r.name == "pixels")) == "pixel-cnn"  # small CNNs in the demo


def test_rows_select_a_subset() -> None:
    cfg = TrainConfig(experiment="speech", rows=("mel", "vq-bits-cnn", "vq-bnn"))
    from lossyload.lab.rows import rows_of

    assert [r.name for r in rows_of("speech", cfg.rows)] == ["mel", "vq-bits-cnn", "vq-bnn"]
    assert rows_of("images", cfg.rows) == []
    with pytest.raises(LossyloadError, match="row vq-bnn distils from row vq-bits-cnn: run that row too"):
        TrainConfig(experiment="speech", rows=("mel", "vq-bnn"))
    full = TrainConfig(preset="full")
    assert full.seeds_for(next(r for r in ROWS if r.name == "vq-bnn")) == [0, 1, 2]  # behind a target
    assert full.seeds_for(next(r for r in ROWS if r.name == "vq-bnn-no-react")) == [0]  # an ablation: one run
    assert TrainConfig(preset="full", seeds=1).seeds_for(next(r for r in ROWS if r.name == "mel")) == [0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when no GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(LossyloadError, match="no CUDA device"):
        device_of(TrainConfig(device="cuda"))
    assert device_of(TrainConfig()).type == "cpu"


def test_missing_image_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["--experiment", "images", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "expected ImageFolder subfolders" in capsys.readouterr().err
