"""The mixture benchmark's bookkeeping: the split into three shard sets and the table (the measurement itself
is ``python -m benchmarks.mixture``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.mixture import split, table
from lossyload.fs import read_index
from lossyload.shard.job import ShardJob, run_job
from tests.loader.conftest import make_image_folder


def test_split_covers_every_shard_once_in_proportion(tmp_path: Path) -> None:
    whole = str(tmp_path / "whole")
    run_job(ShardJob(src=str(make_image_folder(tmp_path / "src", 24)), dest=whole, maxcount=2, progress=False))
    parts = split(whole, str(tmp_path / "parts"))
    _, index = read_index(whole)
    sizes = [read_index(p)[1].samples for p in parts]
    assert sizes == [12, 8, 4] and sum(sizes) == index.samples
    shas = [s.sha256 for p in parts for s in read_index(p)[1].shards]
    assert shas == [s.sha256 for s in index.shards]  # consecutive shards, each once


def test_table_gives_the_ratio_to_the_single_source_row() -> None:
    rows = [{"label": "single source", "sources": 1, "workers": 0, "samples_per_s": 1000.0,
             "spread": [900.0, 1100.0], "ratio": 1.0, "shares": {}},
            {"label": "mixture of 3, weights 1:1:1", "sources": 3, "workers": 0, "samples_per_s": 950.0,
             "spread": [940.0, 990.0], "ratio": 0.95, "shares": {"part-0": 1 / 3, "part-1": 1 / 3, "part-2": 1 / 3}}]
    text = table(rows)
    assert "| single source | 1 | 0 | 1000 (900-1100) | 1.00x | — |" in text
    assert "| 950 (940-990) | 0.95x | part-0 33%, part-1 33%, part-2 33% |" in text
