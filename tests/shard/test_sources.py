"""Where samples come from: ImageFolder order, keys, labels, refusals, and the seeded shuffled orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossyload.errors import LossyloadError
from lossyload.shard.sources import image_folder, open_source, safe_key

from ..conftest import make_wds_tar, write


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


def _keys_labels(source) -> list[tuple[str, int]]:
    return [(it.key, it.label) for it in source.items]


def test_shuffled_table_order_mixes_classes_parts_partition_it(tmp_path: Path) -> None:
    """A class-sorted Parquet table (4 classes x 40 rows, row groups of 16): the shuffled order holds every row
    once, mixes the classes from its first rows on, is reproducible, and the ranks' shares partition it."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    labels = [c for c in range(4) for _ in range(40)]
    table = pa.table({"image": [f"img{i}".encode() for i in range(160)], "label": labels})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=16)
    url = str(tmp_path / "t.parquet")
    kept = _keys_labels(open_source(url))
    shuffled = _keys_labels(open_source(url, shuffle=True))
    assert [label for _, label in kept] == labels  # row order
    assert sorted(shuffled) == sorted(kept) and shuffled != kept
    assert all(len({label for _, label in shuffled[i:i + 16]}) >= 3 for i in range(0, 160, 16))
    assert _keys_labels(open_source(url, shuffle=True)) == shuffled
    assert open_source(url, shuffle=True).fingerprint != open_source(url).fingerprint
    for world in (2, 3):
        parts = [_keys_labels(open_source(url, part=(r, world), shuffle=True)) for r in range(world)]
        assert [x for p in parts for x in p] == shuffled  # same order as one process


def test_shuffled_manifest_order(tmp_path: Path) -> None:
    for cls in ("a", "b", "c"):
        for i in range(20):
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"{i:02d}.jpg").write_bytes(b"x")
    rows = [f"{cls}/{i:02d}.jpg,{cls}" for cls in ("a", "b", "c") for i in range(20)]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    url = str(tmp_path / "list.csv")
    kept, shuffled = _keys_labels(open_source(url)), _keys_labels(open_source(url, shuffle=True))
    assert [label for _, label in kept] == [0] * 20 + [1] * 20 + [2] * 20
    assert sorted(shuffled) == sorted(kept) and len({label for _, label in shuffled[:20]}) == 3
    assert open_source(url, shuffle=True).fingerprint != open_source(url).fingerprint
    parts = [_keys_labels(open_source(url, part=(r, 2), shuffle=True)) for r in range(2)]
    assert parts[0] + parts[1] == shuffled


def test_shuffled_tar_order_interleaves_the_tars(tmp_path: Path) -> None:
    """Six one-class tars of 10 samples: the shuffled order takes the tars in a seeded order and reads them
    at once, interleaved, so every stretch of it mixes classes; every sample once, reproducible."""
    for t in range(6):
        make_wds_tar(tmp_path / f"d-{t:03d}.tar", [(f"t{t}/{i:03d}", {"jpg": b"x", "cls": str(t % 3).encode()})
                                                   for i in range(10)])
    url = str(tmp_path / "d-{000..005}.tar")
    kept, shuffled = _keys_labels(open_source(url)), _keys_labels(open_source(url, shuffle=True))
    assert [k for k, _ in kept[:10]] == [f"t0/{i:03d}" for i in range(10)]  # tar order
    assert sorted(shuffled) == sorted(kept) and shuffled != kept
    assert all(len({label for _, label in shuffled[i:i + 10]}) >= 2 for i in range(0, 50, 10))
    assert _keys_labels(open_source(url, shuffle=True)) == shuffled
    assert open_source(url, shuffle=True).fingerprint != open_source(url).fingerprint
    parts = [_keys_labels(open_source(url, part=(r, 2), shuffle=True)) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(kept)  # whole tars per rank, each rank's share interleaved
    assert {k.split("/")[0] for k, _ in parts[0]}.isdisjoint({k.split("/")[0] for k, _ in parts[1]})
