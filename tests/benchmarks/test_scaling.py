"""benchmarks.scaling: repeated shard sets are valid datasets, and each size is measured in its own process."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import scaling
from lossyload.fs import read_index
from lossyload.shard import ShardJob, run_job
from lossyload.verify import verify

from ..conftest import make_image_folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """8 small images in 3 coefficient shards (3 + 3 + 2 samples)."""
    root = tmp_path_factory.mktemp("scaling")
    src = make_image_folder(root / "src", {"a": 4, "b": 4}, size=(48, 64))
    dest = root / "base"
    run_job(ShardJob(src=str(src), dest=str(dest), codec=scaling.CODEC, config=scaling.CONFIG, maxcount=3,
                     progress=False))
    return str(dest)


@pytest.fixture(scope="module")
def measured(base: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("out")
    return scaling.measure_sizes(base, [1, 2], str(out), batch_size=4, reps=1), out


def test_repeated_index_is_a_valid_dataset(base: str, tmp_path: Path) -> None:
    _, index = read_index(base)
    url = scaling.repeated(base, 3, str(tmp_path / "x3"))
    _, rep = read_index(url)
    assert rep.samples == 3 * index.samples and len(rep.shards) == 3 * len(index.shards)
    assert len({s.url for s in rep.shards}) == len(rep.shards)  # every shard under its own name
    assert rep.shards[:len(index.shards)] == index.shards  # the base shards, linked
    assert [s.samples for s in rep.shards] == 3 * [s.samples for s in index.shards]
    assert len({s.sha256 for s in rep.shards}) == len(rep.shards)  # repeats: copies with their own sha256
    assert (rep.codec, rep.config, rep.labels) == (index.codec, index.config, index.labels)
    report = verify(url)
    assert report.problems == [] and report.samples == rep.samples
    assert read_index(scaling.repeated(base, 1, str(tmp_path / "x3")))[1].samples == index.samples  # rewritten


def test_measure_sizes_counts_every_sample(measured: tuple[list[dict], Path], base: str) -> None:
    rows, out = measured
    n = read_index(base)[1].samples
    assert [r["multiple"] for r in rows] == [1, 2]
    assert [r["samples"] for r in rows] == [n, 2 * n]
    assert [r["shards"] for r in rows] == [3, 6]
    for r in rows:
        assert r["samples_per_s"] > 0 and r["seconds"] > 0
        assert r["peak_rss_mb"] > 0 and r["epoch_peak_rss_mb"] > 0 and r["rss_before_mb"] > 0
        assert r["peak_rss_mb"] >= r["epoch_peak_rss_mb"] - 1e-6
        assert r["spread"][0] <= r["samples_per_s"] <= r["spread"][1]
    assert read_index(str(out / "x2"))[1].samples == 2 * n


def test_report_table_and_charts(measured: tuple[list[dict], Path]) -> None:
    rows, out = measured
    text = scaling.table(rows)
    assert "| 1x | 3 |" in text and "| 2x | 6 |" in text and "samples/s spread" in text
    s = scaling.summary(rows)
    assert s["samples_per_s_spread_pct"] >= 0 and s["peak_rss_spread_mb"] >= 0
    for path in scaling.charts(rows, str(out)):
        assert Path(path).stat().st_size > 0


def test_arguments() -> None:
    settings, _ = scaling.parse(["--multiples", "1, 4,16", "--per-class", "5"])
    assert settings.multiples == (1, 4, 16) and settings.per_class == 5
    assert scaling.parse([])[0] == scaling.Settings()
    with pytest.raises(SystemExit):
        scaling.parse(["--multiples", "0,2"])
    with pytest.raises(SystemExit):
        scaling.parse(["--multiples", "1,x"])


def test_failed_child_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="failed"):
        scaling.run_child(str(tmp_path / "missing"), 4)


def test_tiny_base_reads_every_sample_with_its_crop(tmp_path: Path) -> None:
    url = scaling.build_tiny(str(tmp_path / "tiny"), 30, maxcount=10)
    _, index = read_index(url)
    assert index.samples == 30 and len(index.shards) == 3
    assert scaling.build_tiny(url, 30) == url  # built once
    rows = scaling.measure_sizes(url, [1, 3], str(tmp_path / "out"), batch_size=8, crop=scaling.TINY_SIDE)
    assert [r["samples"] for r in rows] == [30, 90] and all(r["open_s"] > 0 for r in rows)
    assert "open to first batch" in scaling.table(rows)


def test_large_index_links_one_shard_under_every_entry(tmp_path: Path) -> None:
    from benchmarks import large_index

    base = scaling.build_tiny(str(tmp_path / "base"), 10, maxcount=10)
    url = large_index.linked(base, 25, str(tmp_path / "big"))
    _, index = read_index(url)
    assert index.samples == 250 and len({s.url for s in index.shards}) == 25
    # every entry but the first lists a derived sha256 (an index may not list one twice): only that differs
    assert sorted({p.what for p in verify(url).problems}) == ["sha256 does not match the index"]
    assert len(verify(url, decode=False).problems) == 24
    row = large_index.run_child(url, world_size=4, batch_size=8, warm_url=base)
    assert row["shards"] == 25 and row["first_batch_samples"] == 8
    assert row["batches_per_rank"] == 250 // 4 // 8 and row["open_s"] > 0 and row["peak_rss_mb"] > 0
    assert row["json_load_s"] > 0 and row["json_load_growth_mb"] >= 0
    text = large_index.table([large_index.aggregate([row])])
    assert "| 25 | 250 |" in text and "flat: within 10%" in text


def test_benchmark_epochs_list_small_sets_often_enough_to_hold_their_minimum(base: str, tmp_path: Path,
                                                                             monkeypatch) -> None:
    from benchmarks import run

    monkeypatch.setattr(run, "REPEAT", {"coef16": 2, "jpeg": 2})
    monkeypatch.setattr(run, "MIN_SAMPLES", {"coef16": 30})  # 8 samples a listing: 4 listings hold 32
    urls = run.repeat({"coef16": base, "jpeg": base}, 1.0, str(tmp_path))
    assert read_index(urls["coef16"])[1].samples == 32 and read_index(urls["jpeg"])[1].samples == 16
    assert read_index(run.repeat({"coef16": base}, 0.5, str(tmp_path))["coef16"])[1].samples == 16
