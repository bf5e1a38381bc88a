"""Where samples come from: ImageFolder order, keys, labels, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossyload.errors import LossyloadError
from lossyload.shard.sources import image_folder, open_source, safe_key

from ..conftest import write


def test_safe_key() -> None:
    assert safe_key("cat/img 1.final.JPG") == "cat/img_1_final"
    assert safe_key("cat/no_extension") == "cat/no_extension"
    assert safe_key("d.v2/x.png") == "d_v2/x"
    assert safe_key("a/../b.jpg") == "a/__/b"  # never a path that walks up


def test_image_folder_order_labels_and_unique_keys(tmp_path: Path) -> None:
    for rel in ["b/z.jpg", "b/a.jpg", "a/x.png", "a/x.jpg", "a/x_.jpg", "a/sub/y.jpg", "a/.hidden.jpg",
                ".git/config", "a/.cache/q.jpg", "c/readme.txt"]:
        write(tmp_path / rel, rel.encode())
    (tmp_path / "stray.jpg").write_bytes(b"not in a class folder")
    src = image_folder(str(tmp_path))
    items = list(src.items)
    assert src.labels == ["a", "b", "c"] and src.total == len(items)
    assert [(i.key, i.label) for i in items] == [
        ("a/x", 0), ("a/x_", 0), ("a/x__", 0), ("a/sub/y", 0), ("b/a", 1), ("b/z", 1), ("c/readme", 2)]
    assert [Path(i.name).relative_to(tmp_path).as_posix() for i in items] == [  # a folder's files, then its subfolders
        "a/x.jpg", "a/x.png", "a/x_.jpg", "a/sub/y.jpg", "b/a.jpg", "b/z.jpg", "c/readme.txt"]
    assert all(i.read() == Path(i.name).relative_to(tmp_path).as_posix().encode() for i in items)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(LossyloadError, match="not a directory"):
        image_folder(str(tmp_path / "missing"))
    (tmp_path / "flat.jpg").write_bytes(b"x")
    with pytest.raises(LossyloadError, match="no class subfolders"):
        open_source(str(tmp_path))
    with pytest.raises(LossyloadError, match="pipe"):
        open_source("pipe:ls /")


def test_shuffled_folder_order_mixes_classes_and_is_reproducible(tmp_path: Path) -> None:
    for cls in ("a", "b", "c", "d"):
        for i in range(25):
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"{i:02d}.jpg").write_bytes(b"x")
    folder = list(image_folder(str(tmp_path)).items)
    shuffled = list(image_folder(str(tmp_path), shuffle=True).items)
    assert [it.label for it in folder[:25]] == [0] * 25  # folder order: one class after the other
    assert sorted(it.key for it in shuffled) == sorted(it.key for it in folder)
    assert len({it.label for it in shuffled[:25]}) == 4  # the first shard's worth already holds every class
    assert [it.key for it in image_folder(str(tmp_path), shuffle=True).items] == [it.key for it in shuffled]
    assert image_folder(str(tmp_path), shuffle=True).fingerprint != image_folder(str(tmp_path)).fingerprint
    # a rank's share of the shuffled order: the shares partition it
    parts = [list(image_folder(str(tmp_path), (r, 3), shuffle=True).items) for r in range(3)]
    assert [it.key for p in parts for it in p] == [it.key for it in shuffled]
    assert [it.key for it in open_source(str(tmp_path), shuffle=True).items] == [it.key for it in shuffled]
