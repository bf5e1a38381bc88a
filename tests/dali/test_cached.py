"""The DALI backend over a remote shard set (the real S3 server on 127.0.0.1) through the node-local cache:
the same tensors as from local disk, each shard fetched once per node, and a clear error when the shard set
does not fit the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lossyload
from lossyload.errors import LossyloadError
from lossyload.fs import filesystem
from lossyload.shard import ShardJob, run_job

from ..conftest import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")
KW = {"batch_size": 4, "backend": "dali", "codec": "rgb", "train": False, "shuffle": False, "transforms": [],
      "return_keys": True}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, s3_server) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("dali-cached")
    src = make_image_folder(root / "src", {"a": 6, "b": 5}, size=(40, 48))
    run_job(ShardJob(src=str(src), dest=str(root / "ds"), maxcount=4, progress=False))  # 3 shards
    url = s3_server.bucket("lossyload-dali-cached") + "/ds"
    fs, path = filesystem(url, s3_server.storage_options)
    fs.pipe({f"{path}/{p.name}": p.read_bytes() for p in (root / "ds").iterdir() if p.is_file()})
    return str(root / "ds"), url


def by_key(ld) -> dict[str, torch.Tensor]:
    return {k: xi for x, _, keys in ld for k, xi in zip(keys, x)}


def test_remote_shards_read_through_the_cache(datasets, s3_server, tmp_path: Path) -> None:
    local, remote = datasets
    want = by_key(lossyload.make_loader(local, **KW))
    ld = lossyload.make_loader(remote, storage_options=s3_server.storage_options, cache_dir=str(tmp_path), **KW)
    got = by_key(ld)
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert ld.traffic.fetched == 3 and ld.traffic.hits == 0
    again = lossyload.make_loader(remote, storage_options=s3_server.storage_options, cache_dir=str(tmp_path), **KW)
    assert again.traffic.fetched == 0 and again.traffic.hits == 3 and again.traffic.remote_bytes == 0
    assert sorted(by_key(again)) == sorted(want)
    ld.close(), again.close()


def test_a_shard_set_larger_than_the_cache_is_refused(datasets, s3_server, tmp_path: Path) -> None:
    _, remote = datasets
    with pytest.raises(LossyloadError, match=r"do not fit cache_limit=3000"):
        lossyload.make_loader(remote, storage_options=s3_server.storage_options, cache_dir=str(tmp_path),
                              cache_limit=3000, **KW)
    assert list((tmp_path / "shards").iterdir()) == []  # nothing held, nothing half-written


def test_without_a_cache_remote_is_refused_naming_cache_dir(datasets, s3_server) -> None:
    with pytest.raises(LossyloadError, match="DALI reads local shards only; pass cache_dir="):
        lossyload.make_loader(datasets[1], storage_options=s3_server.storage_options, **KW)
