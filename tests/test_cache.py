"""The node-local shard cache against a real S3 server on 127.0.0.1 (moto's app behind a request counter):
one GET per shard per node, epochs from the cache with the server gone, processes sharing one cache, damaged
and half-written cache files, eviction under a limit, and the fallback to streaming.

Every image is its own class, so a label is the sample's position in shard order (see tests/loader/conftest)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lossyload import make_loader
from lossyload.cache import CacheConfig, ShardCache, Traffic, parse_size
from lossyload.errors import LossyloadError
from lossyload.fs import filesystem, read_index
from tests.servers import CountingS3Server

from .loader.conftest import MAXCOUNT, N_SAMPLES, make_image_folder
from .loader.test_cloud import assert_same_batches, epoch, shard

pytestmark = pytest.mark.usefixtures("one_thread")
BS = 8
N_SHARDS = -(-N_SAMPLES // MAXCOUNT)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    s = CountingS3Server().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory) -> str:
    src = make_image_folder(tmp_path_factory.mktemp("cache-src"), N_SAMPLES)
    return shard(src, str(tmp_path_factory.mktemp("cache-local") / "ds"))


@pytest.fixture(scope="module")
def s3_ds(local_ds: str, server: CountingS3Server) -> str:
    url = server.bucket("lossyload-cache") + "/ds"
    fs, root = filesystem(url, server.storage_options)
    fs.pipe({f"{root}/{p.name}": p.read_bytes() for p in Path(local_ds).iterdir()})
    return url


@pytest.fixture(autouse=True)
def fast_server(server: CountingS3Server):
    server.slow_suffix, server.slow_seconds = None, 0.0
    yield
    server.slow_suffix, server.slow_seconds = None, 0.0
    if server._server is None:  # a test stopped it
        server.start()


def loader(url: str, options: dict | None = None, *, num_workers: int = 0, **kw):
    kw.setdefault("train", False)
    return make_loader(url, batch_size=BS, options={"crop": 32}, storage_options=options, num_workers=num_workers,
                       return_keys=True, **kw)


def index_bytes(url: str) -> int:
    return read_index(url)[1].bytes


def cached_files(cache_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((cache_dir / "shards").iterdir())}


# ------------------------------------------------------------------------------------------- one GET per shard
@pytest.mark.parametrize("num_workers", [0, 2])
def test_second_epoch_makes_no_get_for_shard_data(num_workers, local_ds, s3_ds, server, tmp_path) -> None:
    want = [epoch(ld := loader(local_ds, train=True, seed=3, num_workers=num_workers)), epoch(ld)]
    ld = loader(s3_ds, server.storage_options, num_workers=num_workers, train=True, seed=3,
                cache_dir=str(tmp_path / "cache"))
    before = len(server.gets())
    first = epoch(ld)
    fetched = server.gets()[before:]
    assert sorted(fetched) == sorted(set(fetched)) and len(fetched) == N_SHARDS  # each shard once
    assert (ld.traffic.remote_bytes, ld.traffic.fetched) == (index_bytes(local_ds), N_SHARDS)
    assert ld.traffic.hits == (0 if num_workers == 0 else 1)  # the shard both workers read: one fetches it
    second = epoch(ld)
    assert server.gets()[before + N_SHARDS:] == []
    assert (ld.traffic.remote_bytes, ld.traffic.fetched, ld.traffic.hits) == (0, 0, N_SHARDS + num_workers // 2)
    assert ld.traffic.cache_bytes >= index_bytes(local_ds)
    assert_same_batches(first, want[0])
    assert_same_batches(second, want[1])
    shas = {s.sha256 + ".tar" for s in read_index(local_ds)[1].shards}
    assert set(cached_files(tmp_path / "cache")) == shas


def test_uncached_epochs_count_remote_bytes(local_ds, s3_ds, server) -> None:
    ld = loader(s3_ds, server.storage_options)
    epoch(ld)
    # what the tar reader consumed: each shard but the zero blocks that pad a tar's end
    assert 0 <= index_bytes(local_ds) - ld.traffic.remote_bytes <= N_SHARDS * 10240
    assert ld.traffic.cache_bytes == ld.traffic.fetched == ld.traffic.hits == 0


def test_second_epoch_from_cache_with_the_server_stopped(local_ds, s3_ds, server, tmp_path) -> None:
    want = [epoch(ld := loader(local_ds, train=True, seed=5, num_workers=2)), epoch(ld)]
    ld = loader(s3_ds, server.storage_options, train=True, seed=5, cache_dir=str(tmp_path / "cache"),
                num_workers=2)
    first = epoch(ld)
    server.stop()
    second = epoch(ld)
    assert_same_batches(first, want[0])
    assert_same_batches(second, want[1])
    assert ld.skipped == [] and ld.traffic.remote_bytes == 0


def test_resume_through_the_cache(local_ds, s3_ds, server, tmp_path) -> None:
    want = epoch(loader(local_ds, train=True, seed=9))
    ld = loader(s3_ds, server.storage_options, train=True, seed=9, cache_dir=str(tmp_path / "cache"))
    it, got = iter(ld), []
    for _ in range(3):
        x, y, k = next(it)
        got.append((x if isinstance(x, dict) else {"x": x}, y.tolist(), list(k)))
    state = json.loads(json.dumps(ld.state_dict()))
    del it
    again = loader(s3_ds, server.storage_options, train=True, seed=9, cache_dir=str(tmp_path / "cache"))
    again.load_state_dict(state)
    assert_same_batches(got + epoch(again), want)


# ------------------------------------------------------------------------------------------- processes
CHILD = """
import hashlib, json, logging, sys
from lossyload import make_loader
url, options, cache = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
logging.basicConfig(level=logging.WARNING)
ld = make_loader(url, batch_size=8, options={"crop": 32}, storage_options=options, train=False, cache_dir=cache,
                 num_workers=int(sys.argv[4]))
h = hashlib.sha256()
for x, y in ld:
    xs = x.values() if isinstance(x, dict) else [x]
    h.update(b"".join(v.numpy().tobytes() for v in xs)); h.update(y.numpy().tobytes())
print(json.dumps({"digest": h.hexdigest(), "traffic": vars(ld.traffic)}))
"""


def child(url: str, server, cache: Path, num_workers: int = 0, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, json.dumps(server.storage_options), str(cache),
                             str(num_workers)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def test_two_processes_sharing_a_cache_fetch_each_shard_once(s3_ds, server, tmp_path) -> None:
    server.slow_suffix, server.slow_seconds = ".tar", 0.3  # both processes ask for the same shard at once
    before = len(server.gets())
    procs = [child(s3_ds, server, tmp_path / "cache", num_workers=2) for _ in range(2)]  # 4 readers
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    fetched = server.gets()[before:]
    assert len(fetched) == len(set(fetched)) == N_SHARDS
    assert results[0]["digest"] == results[1]["digest"]
    assert sum(r["traffic"]["fetched"] for r in results) == N_SHARDS
    # what one process fetched, the other read; and in each, the shard both of its workers read
    assert sum(r["traffic"]["hits"] for r in results) == N_SHARDS + 2


def test_killed_download_leaves_nothing_a_later_run_uses(local_ds, s3_ds, server, tmp_path) -> None:
    first = read_index(local_ds)[1].shards[0]
    cache = tmp_path / "cache"
    partial = cache / "tmp" / f"{first.sha256}.partial"
    server.slow_suffix, server.slow_seconds = first.url, 20.0
    p = child(s3_ds, server, cache, start_new_session=True)
    deadline = time.monotonic() + 120
    while not partial.exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # mid-download: its room reserved, no byte of the shard written yet
    p.wait(30)
    assert partial.exists() and not (cache / "shards" / f"{first.sha256}.tar").exists()
    server.slow_seconds = 0.0
    want = epoch(loader(local_ds))
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache))
    assert_same_batches(epoch(ld), want)
    assert not partial.exists()  # removed as stale by the next download's room check
    data = (cache / "shards" / f"{first.sha256}.tar").read_bytes()
    assert hashlib.sha256(data).hexdigest() == first.sha256 and ld.traffic.fetched == N_SHARDS


# ------------------------------------------------------------------------------------------- damage, eviction
def test_corrupted_cached_shard_is_fetched_again(local_ds, s3_ds, server, tmp_path, caplog) -> None:
    want = epoch(loader(local_ds))
    cache = tmp_path / "cache"
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache))
    epoch(ld)
    victim = read_index(local_ds)[1].shards[3]
    path = cache / "shards" / f"{victim.sha256}.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    before = len(server.gets())
    caplog.set_level(logging.WARNING, logger="lossyload")
    assert_same_batches(epoch(ld), want)
    assert [g.rsplit("/", 1)[-1] for g in server.gets()[before:]] == [victim.url]
    assert ld.traffic.fetched == 1 and ld.traffic.hits == N_SHARDS - 1 and ld.skipped == []
    assert hashlib.sha256(path.read_bytes()).hexdigest() == victim.sha256
    assert any(victim.url in r.getMessage() and "does not match" in r.getMessage() for r in caplog.records)


def test_eviction_keeps_the_cache_under_its_limit(local_ds, s3_ds, server, tmp_path) -> None:
    shards = read_index(local_ds)[1].shards
    limit = sum(sorted(s.bytes for s in shards)[-3:])  # room for any three shards, not all eight
    cache_dir = tmp_path / "cache"
    want = epoch(loader(local_ds))
    ld = loader(s3_ds, server.storage_options, cache_dir=str(cache_dir), cache_limit=limit)
    cache = ShardCache(CacheConfig(dir=str(cache_dir), limit=limit))
    for _ in range(2):
        got, usage = [], []
        for x, y, keys in ld:
            got.append((x if isinstance(x, dict) else {"x": x}, y.tolist(), list(keys)))
            usage.append(cache.usage())
        assert_same_batches(got, want)
        assert max(usage) <= limit and len(cached_files(cache_dir)) == 3
        assert ld.traffic.fetched == N_SHARDS  # least recently used first: an in-order epoch never hits
    assert ld.skipped == []


def test_a_shard_being_read_is_never_evicted(s3_ds, server, tmp_path) -> None:
    """With room for one shard: while shard 0 is held (being read), shard 1 gets no room and is left to be
    streamed; once shard 0 is released, it is evicted to make room for shard 1."""
    s0, s1 = read_index(s3_ds, server.storage_options)[1].shards[:2]
    cache = ShardCache.create(CacheConfig(dir=str(tmp_path / "cache"), limit=max(s0.bytes, s1.bytes)))
    traffic = Traffic()
    f, lock = cache.get(f"{s3_ds}/{s0.url}", s0, server.storage_options, traffic)
    assert cache.get(f"{s3_ds}/{s1.url}", s1, server.storage_options, traffic) is None
    assert Path(cache.path(s0)).exists() and not Path(cache.path(s1)).exists()
    assert hashlib.sha256(f.read()).hexdigest() == s0.sha256
    f.close(), lock.close()
    f, lock = cache.get(f"{s3_ds}/{s1.url}", s1, server.storage_options, traffic)
    f.close(), lock.close()
    assert not Path(cache.path(s0)).exists() and Path(cache.path(s1)).exists()
    assert traffic == Traffic(remote_bytes=s0.bytes + s1.bytes, cache_bytes=0, fetched=2, hits=0)
    assert cache.usage() == s1.bytes


def test_a_shard_larger_than_the_limit_is_streamed(local_ds, s3_ds, server, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="lossyload")
    ld = loader(s3_ds, server.storage_options, cache_dir=str(tmp_path / "cache"), cache_limit=1000)
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert ld.traffic.fetched == 0 and ld.traffic.remote_bytes > 0 and cached_files(tmp_path / "cache") == {}
    warned = [r for r in caplog.records if "cannot be cached" in r.getMessage()]
    assert len(warned) == 1 and "larger than the cache limit (1,000 bytes)" in warned[0].getMessage()


# ------------------------------------------------------------------------------------------- unusable cache
def test_unwritable_cache_dir_streams_with_one_warning(local_ds, s3_ds, server, tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the cache folder should go (root ignores permission bits)
    caplog.set_level(logging.WARNING, logger="lossyload")
    ld = loader(s3_ds, server.storage_options, cache_dir=str(blocker / "cache"))
    assert_same_batches(epoch(ld), epoch(loader(local_ds)))
    assert ld.dataset.cache is None and ld.traffic.fetched == 0 and ld.traffic.remote_bytes > 0
    assert len([r for r in caplog.records if "cannot be used" in r.getMessage()]) == 1


FULL = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
"""


def test_full_cache_disk_streams_with_one_warning(local_ds, s3_ds, server, tmp_path) -> None:
    """Files of the cache cannot grow past 4 KiB (RLIMIT_FSIZE, as on a full disk): every shard is streamed,
    the epoch delivers the same batches, one warning says why."""
    h = hashlib.sha256()
    for x, y, _ in epoch(loader(local_ds)):
        h.update(b"".join(v.numpy().tobytes() for v in x.values())), h.update(torch.tensor(y).numpy().tobytes())
    p = subprocess.run([sys.executable, "-c", FULL + CHILD, s3_ds, json.dumps(server.storage_options),
                        str(tmp_path / "cache"), "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    assert result["digest"] == h.hexdigest()
    assert result["traffic"]["fetched"] == 0 and result["traffic"]["remote_bytes"] > 0
    assert p.stderr.count("cannot be cached") == 1 and "File too large" in p.stderr
    assert cached_files(tmp_path / "cache") == {}


def test_parse_size() -> None:
    assert parse_size("50GB") == 50 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1.5k") == 1536
    assert parse_size(1000) == 1000 and parse_size("800") == 800
    for bad in ["lots", "-1GB", "0", "5 PB"]:
        with pytest.raises(LossyloadError, match="cache size"):
            parse_size(bad)
