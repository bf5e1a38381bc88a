"""Sharding straight to object storage (moto S3 and fake-gcs-server on 127.0.0.1): the same index and
byte-identical shards as on local disk, nothing half-written left behind, a rerun that does nothing, the
CLI's ``--storage-option``, and a shard upload that is either published whole or not at all."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from lossyload.fs import filesystem, read_index
from lossyload.index import INDEX_NAME, Index
from lossyload.commands.shard import main
from lossyload.shard.job import PROGRESS_DIR, ShardJob, run_job
from lossyload.shard.writer import ShardWriter

pytestmark = pytest.mark.usefixtures("one_thread")

MAXCOUNT = 7


def shard(src: Path, dest: str, storage_options: dict | None = None):
    return run_job(ShardJob(src=str(src), dest=dest, storage_options=storage_options, progress=False,
                            maxcount=MAXCOUNT))


def objects(url: str, storage_options: dict | None) -> dict[str, bytes]:
    """Every object under ``url`` (name relative to it -> bytes), listed afresh from the server."""
    fs, root = filesystem(url, storage_options)
    fs.invalidate_cache()
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def shard_facts(index: Index) -> list[tuple[str, int, int, str]]:
    return [(s.url, s.samples, s.bytes, s.sha256) for s in index.shards]


@pytest.fixture
def local(small_folder: Path, tmp_path: Path) -> tuple[Index, dict[str, bytes]]:
    """The dataset sharded to local disk: its index and every file."""
    dest = tmp_path / "local-ds"
    summary = shard(small_folder, str(dest))
    assert summary.samples == 12 and summary.shards == 2
    return Index.from_json((dest / INDEX_NAME).read_bytes()), objects(str(dest), None)


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_same_dataset_as_local_disk(store: str, request, small_folder: Path, local, bucket_name: str) -> None:
    server = request.getfixturevalue({"s3": "s3_server", "gs": "gcs_server"}[store])
    options = server.storage_options
    bucket = server.bucket(bucket_name)
    url = f"{bucket}/ds"
    summary = shard(small_folder, url, options)
    assert (summary.samples, summary.shards, summary.already_complete) == (12, 2, False)

    local_index, local_files = local
    root, index = read_index(url, options)
    assert root == url
    assert shard_facts(index) == shard_facts(local_index) and len(index.shards) == 2
    assert index == local_index  # labels, codec config, member... too
    stored = objects(url, options)
    assert sorted(stored) == sorted(local_files) == [INDEX_NAME, "shard-000000.tar", "shard-000001.tar"]
    for s in index.shards:
        assert stored[s.url] == local_files[s.url]  # byte-identical shards
        assert len(stored[s.url]) == s.bytes and hashlib.sha256(stored[s.url]).hexdigest() == s.sha256
    everything = objects(bucket, options)  # nothing half-written anywhere in the bucket
    assert not [k for k in everything if ".partial" in k or PROGRESS_DIR in k]

    again = shard(small_folder, url, options)
    assert again.already_complete and (again.samples, again.shards) == (12, 2)
    assert objects(bucket, options) == everything


def test_cli_storage_options(s3_server, small_folder: Path, local, bucket_name: str, capsys) -> None:
    url = s3_server.bucket(bucket_name) + "/ds"
    rc = main([str(small_folder), url, "--maxcount", str(MAXCOUNT), "--no-progress",
               "--storage-option", f"endpoint_url={s3_server.endpoint}",
               "--storage-option", "key=testing", "--storage-option", "secret=testing",
               "--storage-option", 'client_kwargs={"region_name": "us-east-1"}'])
    assert rc == 0, capsys.readouterr().err
    assert "12 samples in 2 shards" in capsys.readouterr().out
    _, index = read_index(url, s3_server.storage_options)
    assert index == local[0]
    stored = objects(url, s3_server.storage_options)
    for s in index.shards:
        assert stored[s.url] == local[1][s.url]


def test_cli_without_the_endpoint_fails_cleanly(small_folder: Path, capsys) -> None:
    """A malformed --storage-option is an error naming the flag, exit status 2, nothing contacted."""
    rc = main([str(small_folder), "s3://bkt/ds", "--no-progress", "--storage-option", "endpoint_url"])
    assert rc == 2 and "--storage-option 'endpoint_url': expected KEY=VALUE" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- uploads
BIG = [("a/one", {"bin": os.urandom(4 << 20), "cls": b"0"}), ("a/two", {"bin": os.urandom(3 << 20), "cls": b"1"})]


def uploads_in_progress(s3_server, bucket: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.fixture(params=["s3", "gs"])
def store(request, bucket_name: str) -> tuple[str, dict, object]:
    """(bucket URL, storage options with a 5 MiB upload block, server): 7 MiB of samples is a multi-part
    (S3) or resumable (GCS) upload in progress before the shard is closed."""
    server = request.getfixturevalue({"s3": "s3_server", "gs": "gcs_server"}[request.param])
    options = dict(server.storage_options)
    if request.param == "s3":
        options["default_block_size"] = 5 << 20  # s3fs's default (50 MiB) would buffer everything in memory
    return server.bucket(bucket_name), options, server


def big_shard(url: str, options: dict) -> ShardWriter:
    """A writer holding more than one upload part of data, not yet closed."""
    w = ShardWriter(url, options)
    for key, members in BIG:
        w.add(key, members)
    return w


def test_abort_publishes_nothing(store, bucket_name: str) -> None:
    bucket, options, server = store
    url = f"{bucket}/ds/shard-000000.tar"
    w = big_shard(url, options)
    assert w.bytes_written > 6 << 20
    if bucket.startswith("s3://"):
        assert uploads_in_progress(server, bucket_name) == ["ds/shard-000000.tar"]  # really multi-part
    else:
        assert w._f.location  # a resumable upload session is open on the server
    w.abort()
    fs, path = filesystem(url, options)
    fs.invalidate_cache()
    assert not fs.exists(path) and fs.find(bucket) == []
    if bucket.startswith("s3://"):
        assert uploads_in_progress(server, bucket_name) == []  # aborted, not left to linger


def test_close_publishes_exactly_what_it_hashed(store, bucket_name: str) -> None:
    bucket, options, server = store
    url = f"{bucket}/ds/shard-000000.tar"
    w = big_shard(url, options)
    size, sha = w.close()
    fs, path = filesystem(url, options)
    fs.invalidate_cache()
    data = fs.cat_file(path)
    assert len(data) == size == fs.size(path) and hashlib.sha256(data).hexdigest() == sha
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()] == [
            (f"{k}.{e}", v) for k, m in BIG for e, v in m.items()]
    assert fs.find(bucket) == [path]
    if bucket.startswith("s3://"):
        assert uploads_in_progress(server, bucket_name) == []
