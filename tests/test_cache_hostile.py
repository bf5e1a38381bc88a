"""The shard cache against a cache folder others can write to: links and other files planted under the names
the cache uses are never followed (nothing outside the cache is written or created), a ``shards/`` folder that
cannot be written falls back to streaming, a fetch lock held by a live process is waited for with a limit and
a message, and a stray ``.partial`` is evicted with the no-room warning naming the real cause. A real S3
server on 127.0.0.1 serves the shards (as in tests/test_cache.py)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossyload.cache import CacheConfig, ShardCache, Traffic
from lossyload.errors import IndexFormatError
from lossyload.fs import filesystem, read_index

from .loader.test_cloud import assert_same_batches, epoch
from .test_cache import CHILD, REPO, cached_files, loader, local_ds, s3_ds, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def first_shard(url: str):
    return read_index(url)[1].shards[0]


def test_links_planted_in_the_cache_are_never_followed(local_ds, s3_ds, server, tmp_path) -> None:
    """Links at a shard's partial, read-lock and fetch-lock names and at its cached name: each target is
    left as it was (or never created), the links are replaced, and the epoch is the local one."""
    shard = first_shard(local_ds)
    cache = tmp_path / "cache"
    for sub in ("shards", "tmp", "locks"):
        (cache / sub).mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    created = {kind: tmp_path / f"created-{kind}" for kind in ("read", "fetch")}
    os.symlink(victim, cache / "tmp" / f"{shard.sha256}.partial")
    os.symlink(victim, cache / "shards" / f"{shard.sha256}.tar")
    for kind, target in created.items():
        os.symlink(target, cache / "locks" / f"{shard.sha256}.{kind}")
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache))
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert victim.read_bytes() == b"precious"
    assert not any(p.exists() for p in created.values())
    for path in [cache / "shards" / f"{shard.sha256}.tar", cache / "locks" / f"{shard.sha256}.read"]:
        assert not path.is_symlink() and path.is_file()
    data = (cache / "shards" / f"{shard.sha256}.tar").read_bytes()
    assert hashlib.sha256(data).hexdigest() == shard.sha256
    assert ld.skipped == [] and ld.traffic.fetched == len(read_index(local_ds)[1].shards)


def test_a_fifo_or_folder_at_a_cached_name_neither_hangs_nor_loses_samples(local_ds, s3_ds, server,
                                                                           tmp_path) -> None:
    shards = read_index(local_ds)[1].shards
    cache = tmp_path / "cache"
    (cache / "shards").mkdir(parents=True)
    os.mkfifo(cache / "shards" / f"{shards[0].sha256}.tar")
    (cache / "shards" / f"{shards[1].sha256}.tar" / "inside").mkdir(parents=True)  # cannot be replaced: streamed
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache))
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert ld.skipped == [] and ld.traffic.fetched == len(shards) - 1
    assert (cache / "shards" / f"{shards[0].sha256}.tar").is_file()


def test_a_shard_that_cannot_be_moved_into_shards_is_streamed(local_ds, s3_ds, server, tmp_path, caplog) -> None:
    """The rename into ``shards/`` fails (here: a folder holds the name): the download is dropped and the
    shard streamed, with one warning, instead of a ShardError."""
    shard = first_shard(local_ds)
    cache = tmp_path / "cache"
    (cache / "shards" / f"{shard.sha256}.tar" / "x").mkdir(parents=True)
    caplog.set_level(logging.WARNING, logger="lossyload")
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache))
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert ld.skipped == [] and not list((cache / "tmp").glob("*.partial"))
    assert [r.getMessage() for r in caplog.records if "cannot be cached" in r.getMessage()] != []


def test_unwritable_shards_folder_streams_with_one_warning(local_ds, s3_ds, server, tmp_path) -> None:
    """``shards/`` readable but not writable (as another user made it): the loader streams, as documented for
    a cache that cannot be used. As root, the child runs without the capability to override permissions."""
    cache = tmp_path / "cache"
    for sub, mode in (("shards", 0o555), ("tmp", 0o777), ("locks", 0o777)):
        (cache / sub).mkdir(parents=True)
        (cache / sub).chmod(mode)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root, and no setpriv to drop the permission-override capability")
        drop = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
    p = subprocess.run(prefix + [sys.executable, "-c", CHILD, s3_ds, json.dumps(server.storage_options), str(cache),
                                 "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    assert result["traffic"]["fetched"] == 0 and result["traffic"]["remote_bytes"] > 0
    assert p.stderr.count("cannot be used") == 1 and "shards" in p.stderr
    assert list((cache / "shards").iterdir()) == []


def test_a_held_fetch_lock_is_waited_for_with_a_limit_then_streamed(s3_ds, server, tmp_path, caplog) -> None:
    shard = read_index(s3_ds, server.storage_options)[1].shards[0]
    cache = ShardCache.create(CacheConfig(dir=str(tmp_path / "cache"), fetch_wait=0.5))
    with open(tmp_path / "cache" / "locks" / f"{shard.sha256}.fetch", "a+b") as held:  # another "process"
        fcntl.flock(held, fcntl.LOCK_EX)
        caplog.set_level(logging.INFO, logger="lossyload")
        t0 = time.monotonic()
        assert cache.get(f"{s3_ds}/{shard.url}", shard, server.storage_options, Traffic()) is None
        assert 0.5 <= time.monotonic() - t0 < 5
    said = [r.getMessage() for r in caplog.records]
    assert any("being fetched by another process" in m and shard.url in m for m in said)
    assert any("for over 0.5 s; streaming the shard instead" in m for m in said)
    got = cache.get(f"{s3_ds}/{shard.url}", shard, server.storage_options, Traffic())  # released: fetched
    assert got is not None
    got[0].close(), got[1].close()


def test_a_stray_partial_is_evicted_and_no_room_names_the_cause(local_ds, s3_ds, server, tmp_path,
                                                                caplog) -> None:
    shards = read_index(local_ds)[1].shards
    cache = tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    stray = cache / "tmp" / "leftover.partial"
    with open(stray, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB (sparse)
    caplog.set_level(logging.WARNING, logger="lossyload")
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache), cache_limit=sum(s.bytes for s in shards))
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert not stray.exists() and ld.traffic.fetched == len(shards)
    assert any("leftover.partial" in r.getMessage() and "1,073,741,824 bytes" in r.getMessage()
               for r in caplog.records)
    assert not [r for r in caplog.records if "cannot be cached" in r.getMessage()]


def test_the_no_room_warning_says_what_holds_the_room(s3_ds, server, tmp_path, caplog) -> None:
    s0, s1 = read_index(s3_ds, server.storage_options)[1].shards[:2]
    cache = ShardCache.create(CacheConfig(dir=str(tmp_path / "cache"), limit=max(s0.bytes, s1.bytes)))
    f, lock = cache.get(f"{s3_ds}/{s0.url}", s0, server.storage_options, Traffic())
    caplog.set_level(logging.WARNING, logger="lossyload")
    assert cache.get(f"{s3_ds}/{s1.url}", s1, server.storage_options, Traffic()) is None
    f.close(), lock.close()
    (msg,) = [r.getMessage() for r in caplog.records if "cannot be cached" in r.getMessage()]
    assert f"{s0.bytes:,} bytes are shards being read, 0 downloads in progress" in msg and s1.url in msg


def test_a_linked_cache_folder_is_not_used(local_ds, s3_ds, server, tmp_path, caplog) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    os.symlink(elsewhere, tmp_path / "cache" / "tmp")
    caplog.set_level(logging.WARNING, logger="lossyload")
    ld = loader(s3_ds, server.storage_options, cache_dir=str(tmp_path / "cache"))
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert ld.dataset.cache is None and list(elsewhere.iterdir()) == []
    assert any("cannot be used" in r.getMessage() for r in caplog.records)


def one_shard_set(local_ds: str, server, name: str) -> tuple[str, int]:
    """The first shard of ``local_ds`` alone, as a shard set on the S3 server: ``(url, its bytes)``."""
    d = json.loads((Path(local_ds) / "index.json").read_text())
    d["shards"], _ = d["shards"][:1], d.pop("totals")
    url = server.bucket("lossyload-cache") + f"/{name}"
    fs, root = filesystem(url, server.storage_options)
    fs.pipe({f"{root}/index.json": json.dumps(d).encode(),
             f"{root}/{d['shards'][0]['url']}": (Path(local_ds) / d["shards"][0]["url"]).read_bytes()})
    return url, d["shards"][0]["bytes"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_traffic_counts_the_last_streamed_shard(local_ds, server, num_workers) -> None:
    """Before: the last shard's bytes were counted after its last batch had left, so never (126,064,640 of
    126,177,280 bytes over 3 shards; here 0 of one shard's)."""
    url, nbytes = one_shard_set(local_ds, server, f"one-{num_workers}")
    ld = loader(url, server.storage_options, num_workers=num_workers, prefetch=False)  # streamed, not fetched whole
    assert len(epoch(ld)) == 1
    assert nbytes - 10240 < ld.traffic.remote_bytes <= nbytes  # all but the zero blocks that end a tar


def test_a_warm_cache_never_serves_one_shard_for_another(local_ds, s3_ds, server, tmp_path) -> None:
    """Before: with a warm cache, an index giving shard 0 the sha256 of shard 1 made the loader serve shard 1's
    bytes for both (duplicates, no warning). Now such an index is refused when it is read."""
    cache = tmp_path / "cache"
    epoch(loader(s3_ds, server.storage_options, cache_dir=str(cache)))  # warm: every shard cached
    d = json.loads((Path(local_ds) / "index.json").read_text())
    d["shards"][0]["sha256"] = d["shards"][1]["sha256"]
    url = server.bucket("lossyload-cache") + "/same-sha"
    fs, root = filesystem(url, server.storage_options)
    fs.pipe({f"{root}/{p.name}": p.read_bytes() for p in Path(local_ds).iterdir() if p.name != "index.json"})
    fs.pipe({f"{root}/index.json": json.dumps(d).encode()})
    with pytest.raises(IndexFormatError, match=r"shards #0 \('shard-000000.tar'\) and #1 \('shard-000001.tar'\) "
                                               r"have the same sha256"):
        loader(url, server.storage_options, cache_dir=str(cache))
