"""One ImageFolder with every kind of awkward input, through ``run_job`` and the ``lossyload-shard`` CLI:
what is copied, transcoded (and why) and skipped (and why), and that a bad file never stops a run unless
``on_error="raise"``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lossyload.errors import EncodeError
from lossyload.index import Index
from lossyload.shard import ShardJob, run_job
from lossyload.commands.shard import main as shard_main

from ..conftest import dataset_files, jpeg_bytes, photo, png_bytes, read_tar, synthetic_rgb, write

MAX_PIXELS = 10_000

COPIED = {  # relative path -> how it is made
    "a/baseline.jpg": lambda: jpeg_bytes(photo(48, 64)),
    "a/grey.jpg": lambda: jpeg_bytes(photo(48, 64, top=60), mode="L"),
    "a/progressive.jpg": lambda: jpeg_bytes(photo(40, 56, top=100), progressive=True),
    "b/s444.jpg": lambda: jpeg_bytes(photo(56, 40, left=200), subsampling=0),
    "b/odd_size.jpg": lambda: jpeg_bytes(synthetic_rgb(75, 100, seed=5)),
}
TRANSCODED = {  # relative path -> (maker, reason must contain)
    "a/cmyk.jpg": (lambda: jpeg_bytes(photo(48, 64), mode="CMYK"), "CMYK"),
    "a/picture.png": (lambda: png_bytes(photo(32, 48)), "png source"),
    "b/adobe_rgb.jpg": (lambda: jpeg_bytes(photo(32, 32), keep_rgb=True, subsampling=0), "not YCbCr"),
    "b/depth16.png": (lambda: png_bytes((np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)), "png source"),
}
SKIPPED = {  # relative path -> (maker, reason must contain)
    "a/notes.txt": (lambda: b"shopping list\n", "not an image"),
    "a/corrupt.jpg": (lambda: b"\xff\xd8\xff" + bytes(range(256)) * 4, "not an image"),
    "a/truncated.jpg": (lambda: jpeg_bytes(synthetic_rgb(48, 64))[:400], "corrupt or truncated"),
    "b/empty.jpg": (lambda: b"", "not an image"),
    "b/tiny.jpg": (lambda: jpeg_bytes(synthetic_rgb(6, 40)), "smaller than one 8x8 DCT block"),
    "b/huge.jpg": (lambda: jpeg_bytes(synthetic_rgb(100, 120)), f"exceeds max_pixels={MAX_PIXELS}"),
}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "src"
    for rel, make in COPIED.items():
        write(root / rel, make())
    for rel, (make, _) in {**TRANSCODED, **SKIPPED}.items():
        write(root / rel, make())
    return root


def key(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


def check_dataset(src: Path, dest: Path) -> Index:
    index = Index.from_json((dest / "index.json").read_text())
    assert index.labels == ["a", "b"]
    assert index.skipped.keys() == {str(src / rel) for rel in SKIPPED}
    for rel, (_, why) in SKIPPED.items():
        assert why in index.skipped[str(src / rel)], (rel, index.skipped[str(src / rel)])
    transcoded = {k: v for s in index.shards for k, v in s.transcoded.items()}
    assert transcoded.keys() == {key(rel) for rel in TRANSCODED}
    for rel, (_, why) in TRANSCODED.items():
        assert why in transcoded[key(rel)], (rel, transcoded[key(rel)])
    members = dict(m for s in index.shards for m in read_tar(dest / s.url))
    assert set(members) == {f"{key(rel)}.{ext}" for rel in [*COPIED, *TRANSCODED] for ext in ("jpg", "cls")}
    for rel in COPIED:
        assert members[f"{key(rel)}.jpg"] == (src / rel).read_bytes(), rel  # byte for byte
    for rel in [*COPIED, *TRANSCODED]:
        assert members[f"{key(rel)}.cls"] == (b"0" if rel.startswith("a/") else b"1")
    for rel in TRANSCODED:
        im = Image.open(io.BytesIO(members[f"{key(rel)}.jpg"]))
        assert im.format == "JPEG" and im.mode in ("RGB", "L")
        assert im.size == Image.open(src / rel).size
    return index


def test_run_job_sorts_every_case(src: Path, tmp_path: Path) -> None:
    summary = run_job(ShardJob(src=str(src), dest=str(tmp_path / "out"), config={"max_pixels": MAX_PIXELS},
                               progress=False))
    index = check_dataset(src, tmp_path / "out")
    assert summary.skipped == index.skipped
    assert summary.samples == len(COPIED) + len(TRANSCODED)
    assert sum(summary.transcoded.values()) == len(TRANSCODED)
    text = summary.format()
    assert f"skipped {len(SKIPPED)}" in text and f"transcoded {len(TRANSCODED)}" in text
    for rel in SKIPPED:
        assert f"{src / rel}: {index.skipped[str(src / rel)]}" in text


def test_cli_sorts_every_case_the_same_way(src: Path, tmp_path: Path, capsys) -> None:
    run_job(ShardJob(src=str(src), dest=str(tmp_path / "ref"), config={"max_pixels": MAX_PIXELS}, progress=False))
    rc = shard_main([str(src), str(tmp_path / "out"), "--set", f"max_pixels={MAX_PIXELS}", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    check_dataset(src, tmp_path / "out")
    assert dataset_files(tmp_path / "out") == dataset_files(tmp_path / "ref")
    assert f"skipped {len(SKIPPED)}" in out
    for rel in SKIPPED:
        assert str(src / rel) in out


def test_rgb_codec_and_coefficient_storage_skip_the_same_files(src: Path, tmp_path: Path) -> None:
    for codec, config in [("rgb", {}), ("jpeg-dct", {"storage": "coefficients", "keep": [8, 4]})]:
        dest = tmp_path / codec
        run_job(ShardJob(src=str(src), dest=str(dest), codec=codec, config={**config, "max_pixels": MAX_PIXELS},
                         progress=False))
        index = Index.from_json((dest / "index.json").read_text())
        assert index.skipped.keys() == {str(src / rel) for rel in SKIPPED}
        assert index.samples == len(COPIED) + len(TRANSCODED)


def test_on_error_raise_stops_at_the_first_bad_file(src: Path, tmp_path: Path, capsys) -> None:
    first_bad = src / "a" / "corrupt.jpg"  # items are in sorted order: a/baseline, a/cmyk, a/corrupt, ...
    job = ShardJob(src=str(src), dest=str(tmp_path / "out"), config={"max_pixels": MAX_PIXELS}, on_error="raise",
                   progress=False, shuffle=False)
    with pytest.raises(EncodeError) as info:
        run_job(job)
    assert info.value.source == str(first_bad) and "not an image" in info.value.reason
    assert str(first_bad) in str(info.value)
    left = dataset_files(tmp_path / "out")
    assert "index.json" not in left and not any(n.endswith(".partial") for n in left)

    rc = shard_main([str(src), str(tmp_path / "cli"), "--set", f"max_pixels={MAX_PIXELS}", "--on-error", "raise",
                     "--no-progress", "--keep-order"])
    assert rc == 2
    assert f"lossyload-shard: error: {first_bad}: not an image" in capsys.readouterr().err
    assert not (tmp_path / "cli" / "index.json").exists()
