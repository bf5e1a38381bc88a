"""Tests of the offline ``photos`` dataset (photo-of-origin classification)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from PIL.JpegImagePlugin import get_sampling

from lossyload.commands.make_photos import add_arguments, run
from lossyload.datasets import CLASSES, PhotosConfig, SamplePlan, build_photos, plan_samples
from lossyload.datasets.photos import SOURCES, STORAGE_MIX, held_out_tiles, tile_boxes, validation_tiles

pytest.importorskip("skimage")
pytest.importorskip("sklearn")

SMALL = PhotosConfig(train_per_class=20, test_per_class=5, seed=3)
KINDS = {name for name, _ in STORAGE_MIX}


def _inside(box: tuple[int, ...], outer: tuple[int, ...]) -> bool:
    return outer[0] <= box[0] < box[2] <= outer[2] and outer[1] <= box[1] < box[3] <= outer[3]


def _overlaps(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("photos")
    return dest, build_photos(dest, SMALL, progress=False)


def test_tiles_partition_the_photo() -> None:
    for source in SOURCES:
        tiles = tile_boxes(source.size, 4)
        assert len(tiles) == 16
        assert sum((r - l) * (b - t) for l, t, r, b in tiles) == source.size[0] * source.size[1]
        assert not any(_overlaps(a, b) for i, a in enumerate(tiles) for b in tiles[i + 1:])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_is_by_tile(seed: int) -> None:
    config = PhotosConfig(train_per_class=60, test_per_class=30, seed=seed)
    test_plans, train_plans = plan_samples(config, "test"), plan_samples(config, "train")
    for c, source in enumerate(SOURCES):
        tiles = tile_boxes(source.size, config.grid)
        held_out = held_out_tiles(config, c)
        assert len(set(held_out)) == config.test_tiles
        train_tiles = [tiles[t] for t in range(config.grid**2) if t not in held_out]
        for plan in test_plans:
            if plan.label == source.name:
                assert plan.tile in held_out and _inside(plan.box, tiles[plan.tile])
                assert not any(_overlaps(plan.box, tile) for tile in train_tiles)
        for plan in train_plans:
            if plan.label == source.name:
                assert plan.tile not in held_out and _inside(plan.box, tiles[plan.tile])


@pytest.mark.parametrize("seed", [0, 3])
def test_validation_tiles_are_apart_from_test_and_train(seed: int) -> None:
    config = PhotosConfig(train_per_class=40, test_per_class=10, val_per_class=10, seed=seed)
    plans = {split: plan_samples(config, split) for split in ("train", "validation", "test")}
    for c, source in enumerate(SOURCES):
        val, test = validation_tiles(config, c), held_out_tiles(config, c)
        assert len(set(val)) == config.val_tiles and not set(val) & set(test)
        tiles = tile_boxes(source.size, config.grid)
        for split, mine in (("train", set(range(16)) - set(val) - set(test)), ("validation", set(val)),
                            ("test", set(test))):
            for plan in (p for p in plans[split] if p.label == source.name):
                assert plan.tile in mine and _inside(plan.box, tiles[plan.tile]), (split, plan)
    assert held_out_tiles(config, 0) == held_out_tiles(PhotosConfig(seed=seed), 0)  # test tiles as without one
    assert len(plans["validation"]) == 10 * len(SOURCES)


def test_a_build_with_a_validation_split_writes_its_folder(tmp_path: Path) -> None:
    summary = build_photos(tmp_path, PhotosConfig(train_per_class=2, test_per_class=1, val_per_class=1),
                           progress=False)
    assert summary["counts"] == {"train": 2 * len(CLASSES), "validation": len(CLASSES), "test": len(CLASSES)}
    assert len(list(tmp_path.glob("validation/*/*"))) == len(CLASSES)
    assert "V" in (tmp_path / "README.txt").read_text()


def test_test_tiles_depend_on_seed() -> None:
    maps = {s: [held_out_tiles(PhotosConfig(seed=s), c) for c in range(len(CLASSES))] for s in (0, 1)}
    assert maps[0] != maps[1]


def test_plan_is_pure_and_covers_the_storage_mix() -> None:
    config = PhotosConfig()
    plans = plan_samples(config, "train") + plan_samples(config, "test")
    assert plans == plan_samples(config, "train") + plan_samples(config, "test")
    assert len(plans) == len(CLASSES) * 250
    shares = Counter(p.storage for p in plans)
    for name, share in STORAGE_MIX:
        assert abs(shares[name] / len(plans) - share) < 0.02, (name, shares)
    for plan in plans:
        assert 128 <= min(plan.out_size) <= 192 and 75 <= plan.quality <= 95
        assert 0.9 <= plan.brightness <= 1.1 and 0.9 <= plan.contrast <= 1.1
    by_class = {label: Counter(p.storage for p in plans if p.label == label) for label in CLASSES}
    assert all(counts["jpeg-420"] > 150 for counts in by_class.values())


def test_build_layout_counts_and_decoding(small_build: tuple[Path, dict]) -> None:
    dest, summary = small_build
    assert summary["classes"] == list(CLASSES)
    assert summary["counts"] == {"train": 20 * len(CLASSES), "test": 5 * len(CLASSES)}
    assert (dest / "README.txt").read_text().startswith("photos: photo-of-origin")
    assert json.loads((dest / "photos.json").read_text())["summary"] == summary
    assert not (dest / ".photos-partial").exists()
    plans: list[SamplePlan] = plan_samples(SMALL, "train") + plan_samples(SMALL, "test")
    written = {str(p.relative_to(dest)) for p in dest.glob("*/*/*")}
    assert written == {plan.path for plan in plans}
    for plan in plans:
        _check_file(dest / plan.path, plan)
    found = Counter(plan.storage for plan in plans)
    assert set(found) == KINDS
    assert {split: sum(kinds.values()) for split, kinds in summary["storage"].items()} == summary["counts"]


def _check_file(path: Path, plan: SamplePlan) -> None:
    with Image.open(path) as image:
        image.load()
        assert image.size == plan.out_size and 128 <= min(image.size) <= 192
        if plan.storage == "png":
            assert path.suffix == ".png" and image.format == "PNG" and image.mode == "RGB"
            return
        assert path.suffix == ".jpg" and image.format == "JPEG"
        assert image.mode == ("L" if plan.storage == "jpeg-grey" else "RGB")
        assert bool(image.info.get("progressive")) == (plan.storage == "jpeg-progressive")
        if plan.storage != "jpeg-grey":
            assert get_sampling(image) == (0 if plan.storage == "jpeg-444" else 2)


def test_build_is_deterministic(small_build: tuple[Path, dict], tmp_path: Path) -> None:
    dest, summary = small_build
    again = build_photos(tmp_path / "again", SMALL, progress=False)
    assert again == summary
    assert _files(tmp_path / "again") == _files(dest)


def test_complete_build_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = PhotosConfig(train_per_class=2, test_per_class=1)
    summary = build_photos(tmp_path, config, progress=False)
    monkeypatch.setattr("lossyload.datasets.photos.render_sample", _fail)
    assert build_photos(tmp_path, config, progress=False) == summary


def _fail(*args: object) -> bytes:
    raise AssertionError("a complete build was rebuilt")


def test_other_config_rebuilds_and_drops_stale_files(tmp_path: Path) -> None:
    build_photos(tmp_path, PhotosConfig(train_per_class=3, test_per_class=2), progress=False)
    summary = build_photos(tmp_path, PhotosConfig(train_per_class=1, test_per_class=1), progress=False)
    assert len(list(tmp_path.glob("*/*/*"))) == sum(summary["counts"].values()) == 2 * len(CLASSES)


def test_partial_build_is_redone(tmp_path: Path) -> None:
    config = PhotosConfig(train_per_class=2, test_per_class=1)
    summary = build_photos(tmp_path, config, progress=False)
    next(tmp_path.glob("train/*/*")).unlink()
    assert build_photos(tmp_path, config, progress=False) == summary
    assert len(list(tmp_path.glob("*/*/*"))) == 3 * len(CLASSES)


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_photos(tmp_path, PhotosConfig(train_per_class=1, test_per_class=1), progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs",
    [{"train_per_class": -1}, {"seed": -1}, {"short_side": (200, 100)}, {"test_tiles": 16}, {"grid": 1},
     {"val_per_class": -1}, {"val_tiles": 12}, {"val_per_class": 5, "val_tiles": 0}],
)
def test_config_is_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PhotosConfig(**kwargs)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path), "--train-per-class", "1", "--test-per-class", "1", "--quiet"])
    assert run(args) == 0
    assert "10 classes" in capsys.readouterr().out
    assert len(list(tmp_path.glob("*/*/*"))) == 2 * len(CLASSES)
