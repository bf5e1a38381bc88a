"""The report is made from results.json alone: tables in the seeds' shape, targets met or missed with the
figures, PNG plots, and the CLI's --report-only regenerating it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lossyload.errors import LossyloadError
from lossyload.lab import report
from lossyload.lab.cli import main

MIB = 2**20


def row(experiment: str, name: str, acc: float, feat_mib: float, *, baseline: bool = False, flops: float = 1e6,
        rate: float = 100.0, stored: float = 1000.0) -> dict:
    return {"experiment": experiment, "name": name, "representation": f"{name} repr", "baseline": baseline,
            "published": "", "codec": "x", "model": "m", "classes": 8, "train_samples": 100, "batch_size": 64,
            "epochs": 1, "params": 1234, "flops_per_sample": flops, "feature_bytes_per_batch": feat_mib * MIB,
            "input_bytes_per_batch": 4096, "stored_bytes_per_sample": stored, "payload_bytes_per_sample": stored - 500,
            "pcm16_bytes_per_sample": 32000 if experiment == "speech" else None, "loader_samples_per_s": rate,
            "train_step_ms": 12.5, "epoch_s": 3.0, "test_accuracy": acc, "peak_rss_mb": 900.0,
            "peak_gpu_mb": None, "device": "cpu"}


def loader_only(r: dict) -> dict:
    return {**r, "model": None, **dict.fromkeys(("epochs", "params", "flops_per_sample", "feature_bytes_per_batch",
                                                  "train_step_ms", "epoch_s", "test_accuracy", "peak_rss_mb"))}


def results(bnn_acc: float = 0.80, bnn_mib: float = 3.0) -> dict:
    return {"config": {"quick": False, "vae": "random:tiny"}, "machine": {}, "rows": [
        row("speech", "mel", 0.84, 96.0, baseline=True, rate=600, stored=22000),
        row("speech", "vq-bnn", bnn_acc, bnn_mib, rate=4800, stored=3000),
        row("images", "pixels", 0.80, 50.0, baseline=True, flops=150e6),
        loader_only(row("images", "pixels-pil", 0.0, 0.0, rate=50)),
        row("images", "pixels-small", 0.70, 5.0),
        {**row("images", "latents", 0.66, 5.0), "codec": "vae"},
        row("images", "dct", 0.79, 20.0, flops=90e6),
    ]}


def write(tmp_path: Path, content: dict) -> Path:
    (tmp_path / "results.json").write_text(json.dumps(content))
    return tmp_path


def test_tables_have_the_baseline_ratios(tmp_path: Path) -> None:
    text = report.write(str(write(tmp_path, results())))
    speech = text.split("### speech")[1].split("### images")[0]
    bnn = next(line for line in speech.splitlines() if line.startswith("| vq-bnn repr (m)"))
    assert "| 1 | 80.0% | 95% |" in bnn  # epochs; 0.80 / 0.84
    assert "| 3.00 | 32.0x less |" in bnn  # 96 MiB / 3 MiB
    assert "| 3,000 | 2,500 | 12.8x | 4,800 | 8.0x |" in bnn  # stored, payload, 32000 / 2500, rate, 4800 / 600
    assert text.count("\n| ") == 2 + 7  # two tables: a header each, and the seven rows
    pil = next(line for line in text.splitlines() if line.startswith("| pixels-pil repr |"))
    assert pil.startswith("| pixels-pil repr | — | — | — | — | — | — | — | 4,096 | 1,000 | 500 | 50 | 0.5x | — | — | — |")
    assert "RANDOM-initialised" in text
    assert (tmp_path / report.REPORT).read_text() == text


def test_targets_met_and_missed_say_by_how_much(tmp_path: Path) -> None:
    text = report.markdown(results())
    assert "- met: VQ + BNN accuracy 80.0% is 95% of the mel baseline's 84.0%" in text
    assert "- met: VQ + BNN feature memory 3.00 MiB vs mel 96.00 MiB per batch: 32.0x less" in text
    assert "- **missed**: latents 66.0% vs resampled pixels of the same input size 70.0%: -4.0 points" in text
    assert "- met: DCT-domain network 79.0% vs pixel baseline 80.0%: -1.0 points" in text
    assert "- met: DCT-domain network 90 vs 150 MFLOPs per sample (1.67x fewer" in text
    worse = report.markdown(results(bnn_acc=0.70, bnn_mib=8.0))
    assert "- **missed**: VQ + BNN accuracy 70.0% is 83% of the mel baseline's 84.0%" in worse
    assert "- **missed**: VQ + BNN feature memory 8.00 MiB vs mel 96.00 MiB per batch: 12.0x less" in worse


def test_summary_is_one_table_of_every_row() -> None:
    text = report.summary(results())
    assert text.count("\n") == 1 + 7
    assert "| images/pixels-pil | pixels-pil repr | loader only | 1,000 | 4,096 | 50 | 0.50x | — | — | — |" in text
    assert "| speech/vq-bnn | vq-bnn repr | m | 3,000 | 4,096 | 4,800 | 8.00x | 1.0 | 3.00 | 80.0% |" in text


def test_plots_are_pngs_per_experiment(tmp_path: Path) -> None:
    report.write(str(write(tmp_path, results())))
    for experiment in ("speech", "images"):
        for name in ("accuracy-vs-stored", "accuracy-vs-feature", "samples-per-s"):
            with Image.open(tmp_path / f"{experiment}-{name}.png") as im:
                assert im.format == "PNG" and im.width > 400


def test_report_only_regenerates_from_results_json(tmp_path: Path, capsys) -> None:
    write(tmp_path, results())
    assert main(["--report-only", "--out", str(tmp_path)]) == 0
    first = (tmp_path / report.REPORT).read_text()
    (tmp_path / report.REPORT).unlink()
    assert main(["--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / report.REPORT).read_text() == first
    assert report.summary(results()) in capsys.readouterr().out


@pytest.mark.parametrize("content", ["not json", json.dumps({"rows": 3}), json.dumps([1, 2])])
def test_bad_results_file_is_a_clear_error(tmp_path: Path, content: str, capsys) -> None:
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(LossyloadError, match="results.json"):
        report.load(str(tmp_path))
    assert main(["--report-only", "--out", str(tmp_path)]) == 2
    assert "lossyload-train: error:" in capsys.readouterr().err


def test_missing_results_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LossyloadError, match="cannot read trainer results"):
        report.load(str(tmp_path))
