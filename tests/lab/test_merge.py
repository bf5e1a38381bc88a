"""``lossyload-train --merge``: one report from runs of one preset over different experiments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossyload.errors import LossyloadError
from lossyload.lab import report
from lossyload.lab.cli import main
from lossyload.lab.merge import merge

from .test_report import image_rows, results, speech_rows


def write(folder: Path, res: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(res))
    return str(folder)


def halves(tmp_path: Path, **images_config) -> tuple[str, str]:
    speech = {**results(speech=speech_rows(), images=[]), "command": "lossyload-train --experiment speech", "seconds": 6000.0}
    speech.pop("vae")
    images = {**results(speech=[], images=image_rows(), **images_config), "command": "lossyload-train --experiment images",
              "seconds": 3000.0}
    images["machine"] = {**images["machine"], "commit": "def5678"}
    return write(tmp_path / "speech", speech), write(tmp_path / "images", images)


def test_merged_results_hold_every_row_and_each_run(tmp_path: Path) -> None:
    a, b = halves(tmp_path)
    out = tmp_path / "full"
    merged = merge([a, b], str(out))
    assert [r["name"] for r in merged["rows"]] == [r["name"] for r in speech_rows() + image_rows()]
    assert merged["vae"]["source"] == "fitted" and merged["seconds"] == 6000.0
    assert [(p["experiments"], p["commit"]) for p in merged["parts"]] == [(["speech"], "abc1234"),
                                                                          (["images"], "def5678")]
    page = report.markdown(report.load(str(out)))
    assert "## speech" in page and "## images" in page
    assert "lossyload-train --experiment speech`, 1 h 40 min, commit abc1234" in page
    assert "dct-24-late (seed 0): `lossyload-train --experiment images`, 50 min 00 s, commit def5678" in page


def test_the_cli_merges_then_reports(tmp_path: Path) -> None:
    a, b = halves(tmp_path)
    assert main(["--merge", a, b, "--out", str(tmp_path / "full")]) == 0
    assert (tmp_path / "full" / "report.md").exists() and (tmp_path / "full" / "results.json").exists()


def test_one_experiment_split_by_rows_keeps_each_row_once_in_table_order(tmp_path: Path) -> None:
    rows = speech_rows()
    teacher = next(r for r in rows if r["name"] == "vq-bits-cnn")
    main_rows = [r for r in rows if not r.get("ablation_of")]
    ablations = [{**teacher, "epoch_s": 99.0}] + [r for r in rows if r.get("ablation_of")]  # the teacher again
    a = write(tmp_path / "a", {**results(speech=main_rows, images=[]), "command": "main"})
    b = write(tmp_path / "b", {**results(speech=ablations, images=[]), "command": "ablations"})
    merged = merge([b, a], str(tmp_path / "out"))
    assert [r["name"] for r in merged["rows"]] == [r["name"] for r in rows]
    assert next(r for r in merged["rows"] if r["name"] == "vq-bits-cnn")["epoch_s"] == 99.0  # the first run's
    assert merged["parts"][1]["rows"] == ["mel (seeds 0, 1, 2)", "vq-codes", "vq-bnn (seeds 0, 1, 2)"]
    other = write(tmp_path / "c", {**results(speech=[{**teacher, "params": 99}], images=[]), "command": "c"})
    with pytest.raises(LossyloadError, match="row speech/vq-bits-cnn is in both .* trained differently"):
        merge([a, other], str(tmp_path / "x"))


def test_one_rows_seeds_split_across_runs_are_joined(tmp_path: Path) -> None:
    def bnn_run(seed: int, acc: float) -> dict:
        r = next(r for r in speech_rows(bnn=[acc]) if r["name"] == "vq-bnn")
        r["runs"] = [{**r["runs"][0], "seed": seed}]
        return {**results(speech=[r], images=[], seed=seed, seeds=1), "command": f"seed {seed}"}

    parts = [write(tmp_path / f"s{k}", bnn_run(k, acc)) for k, acc in ((0, 0.90), (1, 0.94), (2, 0.92))]
    merged = merge(parts, str(tmp_path / "out"))
    (row,) = merged["rows"]
    assert [r["seed"] for r in row["runs"]] == [0, 1, 2] and row["seeds"] == 3
    assert abs(row["test_accuracy"] - 0.92) < 1e-9 and abs(row["test_accuracy_std"] - 0.02) < 1e-9
    assert [p["rows"] for p in merged["parts"]] == [["vq-bnn (seed 0)"], ["vq-bnn (seed 1)"], ["vq-bnn (seed 2)"]]
    again = merge([parts[0], parts[0], parts[1]], str(tmp_path / "again"))  # a seed seen before: kept once
    assert again["rows"][0]["seeds"] == 2


def test_other_settings_are_refused(tmp_path: Path) -> None:
    a, b = halves(tmp_path / "other", patience=7)
    with pytest.raises(LossyloadError, match="not runs of one setting"):
        merge([a, b], str(tmp_path / "y"))
    with pytest.raises(LossyloadError, match="at least two"):
        merge([a], str(tmp_path / "z"))
