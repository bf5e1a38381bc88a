"""benchmarks.dali at a tiny size: every row measured, ratios to the torch loader of the same codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import dali


@pytest.mark.usefixtures("one_thread")
def test_tiny_run_measures_torch_and_dali_rows(tmp_path: Path, capsys) -> None:
    assert dali.main(["--per-class", "1", "--reps", "1", "--batch-size", "2", "--no-gpu",
                      "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "dali.json").read_text())
    labels = [r["representation"] for r in record["rows"]]
    assert len(labels) == 4 and sum("DALI CPU" in x for x in labels) == 2 and sum(x.endswith("torch") for x in labels) == 2
    assert all(r["samples_per_s"] > 0 for r in record["rows"])
    assert out.count("| 1.00x |") == 2  # the torch rows are the reference of their codec
    assert (tmp_path / "int8" / "dali" / "manifest.json").exists()
