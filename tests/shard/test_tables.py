"""Table sources: Parquet files and folders, Hugging Face ``datasets`` folders (``save_to_disk`` Arrow stream
files and the Parquet export, built here with pyarrow as ``datasets`` writes them) and CSV/JSONL manifests,
through ``run_job`` and the ``lossyload-shard`` CLI: labels, row order, skipped rows named by row number,
missing columns, fsspec URLs, distributed ranks and resume."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossyload.errors import LossyloadError
from lossyload.index import Index
from lossyload.shard import ShardJob, run_job
from lossyload.commands.shard import main as shard_main
from lossyload.shard.tables import TableColumns

from ..conftest import audio_bytes, dataset_files, jpeg_bytes, read_tar, synthetic_rgb, write
from .test_job import _kill_on_nth_add, run_until_killed

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image (and Audio) storage
HF_FEATURES = {"image": {"_type": "Image"}, "label": {"names": ["tabby", "beagle", "heron"], "_type": "ClassLabel"}}


def jpegs(n: int, seed: int = 0) -> list[bytes]:
    return [jpeg_bytes(synthetic_rgb(40, 48, seed=seed + i), quality=80) for i in range(n)]


def shard(src: str | Path, dest: Path, **kw):
    kw.setdefault("maxcount", 4)
    kw.setdefault("shuffle", False)  # row order is what these tests check (the shuffled order: test_sources)
    return run_job(ShardJob(src=str(src), dest=str(dest), progress=False, **kw))


def samples(dest: Path) -> list[tuple[bytes, int]]:
    """(jpg payload, label) of every sample of the dataset at ``dest``, in shard order."""
    index = Index.from_json((dest / "index.json").read_text())
    out = []
    for s in index.shards:
        members = dict(read_tar(dest / s.url))
        keys = [name[: -len(".jpg")] for name in members if name.endswith(".jpg")]
        out += [(members[f"{k}.jpg"], int(members[f"{k}.cls"])) for k in keys]
    return out


def index_of(dest: Path) -> Index:
    return Index.from_json((dest / "index.json").read_text())


@pytest.fixture
def table_rows() -> tuple[list[bytes | None], list[str | None]]:
    """Ten rows: eight good JPEGs, one undecodable (row 3) and one without a label (row 6)."""
    images: list[bytes | None] = jpegs(10)
    labels: list[str | None] = ["dog", "cat", "dog", "cat", "bird", "dog", None, "cat", "bird", "dog"]
    images[3] = b"not an image"
    return images, labels


def write_parquet(path: Path, table: pa.Table, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)
    return path


# ------------------------------------------------------------------------------------------- Parquet
def test_parquet_file_rows_labels_and_skips(table_rows, tmp_path: Path) -> None:
    images, labels = table_rows
    src = write_parquet(tmp_path / "train.parquet", pa.table({"label": labels, "image": images, "id": range(10)}),
                        row_group_size=3)
    summary = shard(src, tmp_path / "out")
    index = index_of(tmp_path / "out")
    assert index.labels == ["bird", "cat", "dog"]  # names in sorted order
    good = [i for i in range(10) if i not in (3, 6)]
    assert samples(tmp_path / "out") == [(images[i], index.labels.index(labels[i])) for i in good]
    assert set(index.skipped) == set(summary.skipped) == {f"{src} row 3", f"{src} row 6"}
    assert "no label" in index.skipped[f"{src} row 6"] and summary.samples == 8


def test_parquet_folder_in_file_order_with_an_explicit_column(tmp_path: Path) -> None:
    images = jpegs(6)
    for k in range(2):
        write_parquet(tmp_path / "src" / f"part-{k}.parquet",
                      pa.table({"pixels": images[3 * k: 3 * k + 3], "y": [2 * k, 1, 0]}))
    shard(tmp_path / "src", tmp_path / "out", columns=TableColumns(media="pixels", label="y"))
    assert index_of(tmp_path / "out").labels == ["0", "1", "2"]  # integer labels are class indices
    assert samples(tmp_path / "out") == list(zip(images, [0, 1, 0, 2, 1, 0]))


def test_missing_columns_name_the_columns_there_are(tmp_path: Path, capsys) -> None:
    src = write_parquet(tmp_path / "t.parquet", pa.table({"img": jpegs(2), "class": ["a", "b"]}))
    with pytest.raises(LossyloadError, match=r"no label column 'label'; the columns are \['img', 'class'\]"):
        shard(src, tmp_path / "out")
    assert shard_main([str(src), str(tmp_path / "out"), "--image-column", "picture", "--label-column", "class",
                       "--no-progress"]) == 2
    assert "no image/audio column 'picture'; the columns are ['img', 'class']" in capsys.readouterr().err
    assert shard_main([str(src), str(tmp_path / "out"), "--label-column", "class", "--no-progress"]) == 0
    assert index_of(tmp_path / "out").labels == ["a", "b"]  # 'img' found without --image-column


def test_an_ambiguous_bytes_column_must_be_named(tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "t.parquet", pa.table({"front": jpegs(1), "back": jpegs(1), "label": [0]}))
    with pytest.raises(LossyloadError, match=r"pass --image-column or --audio-column; the columns are"):
        shard(src, tmp_path / "out")
    with pytest.raises(LossyloadError, match="holds int64, not bytes"):
        shard(src, tmp_path / "out", columns=TableColumns(media="label"))


# ------------------------------------------------------------------------------------------- datasets
def write_arrow_stream(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)


def save_to_disk(root: Path, images: list[bytes], labels: list[int], files: int = 2) -> Path:
    """What ``Dataset.save_to_disk`` writes: Arrow stream files, ``state.json``, ``dataset_info.json``."""
    root.mkdir(parents=True)
    names, per = [], -(-len(images) // files)
    for k in range(files):
        name = f"data-{k:05d}-of-{files:05d}.arrow"
        rows = slice(k * per, (k + 1) * per)
        structs = [{"bytes": b, "path": f"img{k}_{i}.jpg"} for i, b in enumerate(images[rows])]
        write_arrow_stream(root / name, pa.table({"image": pa.array(structs, IMAGE), "label": labels[rows]}))
        names.append(name)
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                 "_split": "train"}))
    (root / "dataset_info.json").write_text(json.dumps({"features": HF_FEATURES}))
    return root


def test_datasets_save_to_disk_folder(tmp_path: Path) -> None:
    images, labels = jpegs(7), [0, 2, 1, 1, -1, 2, 0]  # -1: datasets' "no label"
    src = save_to_disk(tmp_path / "ds", images, labels)
    summary = shard(src, tmp_path / "out")
    assert index_of(tmp_path / "out").labels == ["tabby", "beagle", "heron"]  # the ClassLabel names
    assert samples(tmp_path / "out") == [(b, y) for b, y in zip(images, labels) if y >= 0]
    assert list(summary.skipped) == [f"{src}/data-00001-of-00002.arrow row 0"]


def test_datasets_dict_root_is_refused_naming_its_splits(tmp_path: Path) -> None:
    save_to_disk(tmp_path / "dd" / "train", jpegs(2), [0, 1])
    save_to_disk(tmp_path / "dd" / "test", jpegs(2), [0, 1])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(LossyloadError, match=r"DatasetDict; pass one of its splits.*\['test', 'train'\]"):
        shard(tmp_path / "dd", tmp_path / "out")
    shard(tmp_path / "dd" / "train", tmp_path / "out")


def test_datasets_parquet_export(tmp_path: Path) -> None:
    images, labels = jpegs(5), [2, 0, 1, 2, 0]
    meta = {b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()}
    structs = pa.array([{"bytes": b, "path": None} for b in images], IMAGE)
    table = pa.table({"image": structs, "label": labels}).replace_schema_metadata(meta)
    write_parquet(tmp_path / "export" / "data" / "train-00000-of-00001.parquet", table)
    shard(tmp_path / "export", tmp_path / "out")
    assert index_of(tmp_path / "out").labels == ["tabby", "beagle", "heron"]
    assert samples(tmp_path / "out") == list(zip(images, labels))


# ------------------------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest_of_paths_and_labels(fmt: str, tmp_path: Path) -> None:
    images = jpegs(5)
    for i, data in enumerate(images):
        write(tmp_path / "files" / f"{i}.jpg", data)
    rows = [("files/0.jpg", "zebra"), ("files/1.jpg", "ant"), ("files/missing.jpg", "ant"),
            (str(tmp_path / "files" / "2.jpg"), "zebra"), ("files/3.jpg", "ant"), ("files/4.jpg", "")]
    if fmt == "csv":
        text = "path,label\n" + "".join(f"{p},{y}\n" for p, y in rows)
    else:
        text = "".join(json.dumps({"path": p, "label": y or None}) + "\n" for p, y in rows)
    src = tmp_path / f"manifest.{fmt}"
    src.write_text(text)
    summary = shard(src, tmp_path / "out")
    assert index_of(tmp_path / "out").labels == ["ant", "zebra"]
    assert samples(tmp_path / "out") == [(images[0], 1), (images[1], 0), (images[2], 1), (images[3], 0)]
    assert sorted(summary.skipped) == [f"{src} row 2 (files/missing.jpg)", f"{src} row 5 (files/4.jpg)"]
    assert "unreadable" in summary.skipped[f"{src} row 2 (files/missing.jpg)"]


def test_manifest_integer_labels_and_missing_column(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", jpegs(1)[0])
    (tmp_path / "m.csv").write_text("file,cls\na.jpg,3\n")
    with pytest.raises(LossyloadError, match=r"no path column 'path'; the columns are \['cls', 'file'\]"):
        shard(tmp_path / "m.csv", tmp_path / "out", columns=TableColumns(label="cls"))
    shard(tmp_path / "m.csv", tmp_path / "out", columns=TableColumns(media="file", label="cls"))
    assert index_of(tmp_path / "out").labels == ["0", "1", "2", "3"] and samples(tmp_path / "out")[0][1] == 3


# ------------------------------------------------------------------------------------------- URLs, ranks, resume
def test_fsspec_urls(table_rows, tmp_path: Path) -> None:
    """The same Parquet file and a manifest of in-memory files through ``memory://`` URLs."""
    images, labels = table_rows
    table = pa.table({"image": images, "label": labels})
    local = write_parquet(tmp_path / "t.parquet", table)
    mem = fsspec.filesystem("memory")
    mem.pipe("/tables/t.parquet", local.read_bytes())
    shard(local, tmp_path / "local")
    shard("memory://tables/t.parquet", tmp_path / "remote")
    assert dataset_files(tmp_path / "remote")["shard-000000.tar"] == dataset_files(tmp_path / "local")["shard-000000.tar"]
    mem.pipe({"/m/img/0.jpg": images[0], "/m/img/1.jpg": images[1],
              "/m/list.jsonl": b'{"path": "img/0.jpg", "label": "b"}\n{"path": "img/1.jpg", "label": "a"}\n'})
    shard("memory://m/list.jsonl", tmp_path / "manifest")
    assert samples(tmp_path / "manifest") == [(images[0], 1), (images[1], 0)]


def test_ranks_merge_into_the_single_process_dataset(table_rows, tmp_path: Path) -> None:
    images, labels = table_rows
    src = write_parquet(tmp_path / "t.parquet", pa.table({"image": images, "label": labels}), row_group_size=4)
    shard(src, tmp_path / "single")
    for rank in range(3):
        summary = shard(src, tmp_path / "ranks", rank=rank, world_size=3)
    assert samples(tmp_path / "ranks") == samples(tmp_path / "single")
    merged = index_of(tmp_path / "ranks")
    assert merged.labels == index_of(tmp_path / "single").labels and set(merged.skipped) == {
        f"{src} row 3", f"{src} row 6"}
    assert summary.samples == 3  # rank 2 of 3: rows 6..9, row 6 skipped


def test_resume_after_sigkill(table_rows, tmp_path: Path) -> None:
    images, labels = table_rows
    src = save_to_disk(tmp_path / "ds", [b for b in images if b], list(range(3)) * 3 + [0], files=3)
    shard(src, tmp_path / "reference", maxcount=2, shuffle=True)  # the default order, as the job below
    job = ShardJob(src=str(src), dest=str(tmp_path / "out"), maxcount=2, progress=False)
    run_until_killed(job, _kill_on_nth_add(5))
    assert (tmp_path / "out" / "shard-000001.tar").exists() and not (tmp_path / "out" / "index.json").exists()
    summary = run_job(job)
    assert summary.resumed_shards == 2
    assert dataset_files(tmp_path / "out") == dataset_files(tmp_path / "reference")


def test_audio_column(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate // 2) / rate
    waves = [audio_bytes(0.3 * np.sin(2 * np.pi * f * t), rate) for f in (200, 3000, 250)]
    src = write_parquet(tmp_path / "a.parquet", pa.table({
        "audio": pa.array([{"bytes": w, "path": None} for w in waves] + [{"bytes": b"noise", "path": None}], IMAGE),
        "sound": ["low", "high", "low", "high"]}))
    args = [str(src), str(tmp_path / "out"), "--codec", "mel", "--audio-column", "audio", "--label-column", "sound",
            "--no-progress"]
    assert shard_main(args) == 0
    index = index_of(tmp_path / "out")
    assert index.labels == ["high", "low"] and index.samples == 3 and list(index.skipped) == [f"{src} row 3"]


def test_parquet_folder_in_a_bucket(table_rows, tmp_path: Path, s3_server, bucket_name: str) -> None:
    """A folder of Parquet files on the S3 server (127.0.0.1), split over two ranks: the local result."""
    images, labels = table_rows
    for k in range(2):
        write_parquet(tmp_path / "src" / f"part-{k}.parquet", pa.table({"image": images[5 * k: 5 * k + 5],
                                                                        "label": labels[5 * k: 5 * k + 5]}))
    url = s3_server.bucket(bucket_name) + "/src"
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fs.put(str(tmp_path / "src") + "/", url[len("s3://"):], recursive=True)
    shard(tmp_path / "src", tmp_path / "local")
    for rank in range(2):
        shard(url, tmp_path / "remote", rank=rank, world_size=2, storage_options=s3_server.storage_options)
    assert samples(tmp_path / "remote") == samples(tmp_path / "local")
    assert sorted(index_of(tmp_path / "remote").skipped) == [f"{url}/part-0.parquet row 3",
                                                             f"{url}/part-1.parquet row 1"]
