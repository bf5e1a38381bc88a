"""Training straight from object storage (moto S3, fake-gcs-server and plain HTTP, all on 127.0.0.1): the
same batches as from local disk, in-process and from worker processes; errors that name what failed (a
missing shard, refused credentials, unsafe URLs in an index); an S3 server restart mid-epoch that costs no
sample.

Every image is its own class, so a label is the sample's position in shard order (see conftest)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from lossyload.errors import IndexFormatError, LossyloadError, ShardError
from lossyload.fs import filesystem
from lossyload.index import INDEX_NAME
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader
from lossyload.shard.job import ShardJob, run_job

from tests.test_fs import server_outage

from .conftest import MAXCOUNT, N_SAMPLES, make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")

BS = 8
CROP = {"crop": 32}
SHARD = "shard-000002.tar"  # labels 14..20
SHARD_LABELS = set(range(2 * MAXCOUNT, 3 * MAXCOUNT))


# ------------------------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("cloud-src"), N_SAMPLES)


def shard(src: Path, dest: str, storage_options: dict | None = None) -> str:
    run_job(ShardJob(src=str(src), dest=dest, maxcount=MAXCOUNT, progress=False, storage_options=storage_options,
                     shuffle=False))  # folder order: a label is its sample's position
    return dest


@pytest.fixture(scope="module")
def local_ds(source: Path, tmp_path_factory) -> str:
    return shard(source, str(tmp_path_factory.mktemp("cloud-local") / "ds"))


@pytest.fixture(scope="module")
def s3_ds(source: Path, s3_server) -> str:
    """Sharded to a public S3 bucket (read-only for the tests)."""
    return shard(source, s3_server.bucket("lossyload-loader-cloud", public=True) + "/ds", s3_server.storage_options)


@pytest.fixture(scope="module")
def gs_ds(source: Path, gcs_server) -> str:
    return shard(source, gcs_server.bucket("lossyload-loader-cloud") + "/ds", gcs_server.storage_options)


@pytest.fixture
def private_s3_copy(local_ds: str, s3_server, bucket_name: str) -> str:
    """A copy of the dataset in a bucket of its own, for a test to damage."""
    url = s3_server.bucket(bucket_name) + "/ds"
    fs, root = filesystem(url, s3_server.storage_options)
    fs.pipe({f"{root}/{p.name}": p.read_bytes() for p in Path(local_ds).iterdir()})
    return url


# ------------------------------------------------------------------------------------------- helpers
def loader(url: str, storage_options: dict | None = None, *, num_workers: int = 0, **kw) -> LossyLoader:
    kw.setdefault("train", False)
    ds = LossyDataset(url, batch_size=BS, options=CROP, storage_options=storage_options, **kw)
    return LossyLoader(ds, num_workers=num_workers, return_keys=True)


def epoch(ld: LossyLoader) -> list[tuple[dict, list[int], list[str]]]:
    """One pass: (x as a dict of tensors, labels, keys) per batch."""
    out = []
    for x, y, keys in ld:
        out.append((x if isinstance(x, dict) else {"x": x}, y.tolist(), list(keys)))
    return out


def assert_same_batches(got: list, want: list) -> None:
    assert [(y, k) for _, y, k in got] == [(y, k) for _, y, k in want]
    for (x, _, _), (x0, _, _) in zip(got, want):
        assert x.keys() == x0.keys() and all(torch.equal(x[k], x0[k]) for k in x)


@pytest.fixture(scope="module")
def reference(local_ds: str) -> dict[int, list]:
    """Unshuffled epochs from local disk, per number of workers."""
    out = {}
    for nw in (0, 2):
        ld = loader(local_ds, num_workers=nw)
        out[nw] = epoch(ld)
        assert ld.skipped == [] and len(out[nw]) == len(ld) == 7
        assert sorted(y for _, ys, _ in out[nw] for y in ys) == list(range(N_SAMPLES))
    return out


# ------------------------------------------------------------------------------------------- same batches
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("store", ["s3", "gs", "http"])
def test_same_batches_as_local_disk(store: str, num_workers: int, request, reference) -> None:
    if store == "http":  # the public S3 bucket over plain HTTP: no credentials, no s3fs
        s3_server = request.getfixturevalue("s3_server")
        url, options = f"{s3_server.endpoint}/{request.getfixturevalue('s3_ds')[len('s3://'):]}", None
    else:
        server = request.getfixturevalue({"s3": "s3_server", "gs": "gcs_server"}[store])
        url, options = request.getfixturevalue(f"{store}_ds"), server.storage_options
    ld = loader(url, options, num_workers=num_workers)
    assert_same_batches(epoch(ld), reference[num_workers])
    assert ld.skipped == [] and ld.padded == 0


def test_shuffled_epochs_match_local(local_ds: str, s3_ds: str, s3_server) -> None:
    """Training mode (shard order, shuffle buffer, random crops) from S3 with workers: the same batches as
    from local disk for the same seed, and a different order for another epoch."""
    runs = {}
    for url, options in [(local_ds, None), (s3_ds, s3_server.storage_options)]:
        ld = loader(url, options, num_workers=2, train=True, seed=7)
        runs[url] = [epoch(ld), epoch(ld)]
    (local0, local1), (s3_0, s3_1) = runs[local_ds], runs[s3_ds]
    assert_same_batches(s3_0, local0)
    assert_same_batches(s3_1, local1)
    assert [k for _, _, k in s3_0] != [k for _, _, k in s3_1]


# ------------------------------------------------------------------------------------------- errors
def delete(url: str, options: dict) -> str:
    fs, path = filesystem(url, options)
    fs.rm(path)
    fs.invalidate_cache()
    return url


@pytest.mark.parametrize("num_workers", [0, 2])
def test_missing_shard_raises_naming_it(private_s3_copy: str, s3_server, num_workers: int) -> None:
    shard_url = delete(f"{private_s3_copy}/{SHARD}", s3_server.storage_options)
    ld = loader(private_s3_copy, s3_server.storage_options, num_workers=num_workers, on_error="raise")
    with pytest.raises(ShardError, match=shard_url):
        epoch(ld)


def test_missing_shard_skipped_and_counted(private_s3_copy: str, s3_server, reference) -> None:
    shard_url = delete(f"{private_s3_copy}/{SHARD}", s3_server.storage_options)
    ld = loader(private_s3_copy, s3_server.storage_options, on_error="skip")
    batches = epoch(ld)
    # one process: every other sample once, none repeated, the epoch shorter by what the skips cost
    assert len(batches) == len(ld) - ld.shortfall == -(-(N_SAMPLES - len(SHARD_LABELS)) // BS)
    assert len(ld.skipped) == len(SHARD_LABELS) and ld.padded == 0
    assert all(s.startswith(f"{shard_url} [sample #") for s in ld.skipped)
    delivered = [y for _, ys, _ in batches for y in ys]
    assert sorted(delivered) == sorted(set(range(N_SAMPLES)) - SHARD_LABELS)


def test_wrong_credentials_fail_fast(s3_ds: str, s3_server, monkeypatch) -> None:
    import moto.settings

    # moto checks signatures once this many requests have been served; the request counter only grows,
    # so 0 turns authentication on at once (no counter to reset) and monkeypatch turns it off again
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    t0 = time.monotonic()
    with pytest.raises(LossyloadError) as info:
        LossyDataset(s3_ds, storage_options={**s3_server.storage_options, "key": "wrong"})
    assert time.monotonic() - t0 < 3.0  # denied access is not retried (8 attempts would back off for ~24 s)
    message = str(info.value)
    assert message.startswith(f"{s3_ds}/{INDEX_NAME}: access denied")


@pytest.mark.parametrize("bad", ["../other/shard-000000.tar", "s3://other/x.tar", "pipe:cat x", "/etc/x.tar"])
def test_unsafe_shard_url_in_a_remote_index(bad: str, private_s3_copy: str, s3_server) -> None:
    fs, root = filesystem(private_s3_copy, s3_server.storage_options)
    index = json.loads(fs.cat_file(f"{root}/{INDEX_NAME}"))
    index["shards"][1]["url"] = bad
    fs.pipe_file(f"{root}/{INDEX_NAME}", json.dumps(index).encode())
    fs.invalidate_cache()
    with pytest.raises(IndexFormatError) as info:
        LossyDataset(private_s3_copy, storage_options=s3_server.storage_options)
    assert f"{private_s3_copy}/{INDEX_NAME}" in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize("url", ["pipe:cat /tmp/ds/index.json", "pipe:curl -s http://127.0.0.1:1/ds"])
def test_pipe_dataset_url_refused(url: str) -> None:
    with pytest.raises(LossyloadError, match="refused"):
        LossyDataset(url)


# ------------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("retries", ["botocore", "lossyload"])
def test_server_restart_mid_epoch(retries: str, s3_ds: str, s3_server, reference, caplog) -> None:
    """The S3 server goes away for a second after the second batch, while later shards are still to be
    opened. With s3fs's defaults botocore rides it out; with botocore's retries off, lossyload's own
    retry/resume does (it logs its retries). Either way the epoch is complete and nothing is skipped."""
    options = dict(s3_server.storage_options)
    if retries == "lossyload":
        options["config_kwargs"] = {"retries": {"total_max_attempts": 1}}
        options["skip_instance_cache"] = True
    ld = loader(s3_ds, options)
    caplog.set_level(logging.WARNING, logger="lossyload")
    batches = []
    with server_outage(s3_server, 1.0) as cut:
        for x, y, keys in ld:
            batches.append(({"x": x} if not isinstance(x, dict) else x, y.tolist(), list(keys)))
            if len(batches) == 2:
                cut()
    assert_same_batches(batches, reference[0])
    assert ld.skipped == [] and ld.padded == 0
    retried = [r for r in caplog.records if r.name == "lossyload" and "retrying" in r.getMessage()]
    if retries == "lossyload":
        assert retried and all(s3_ds in r.getMessage() for r in retried)


def test_prefetching_the_next_shard_gives_the_same_batches(local_ds: str, s3_ds: str, s3_server) -> None:
    """Remote shards fetched one ahead in a background thread: the same batches as streaming them, in
    training mode with workers; local shards are never prefetched."""
    from lossyload.loader import prefetch

    opts = s3_server.storage_options
    assert prefetch.worth_it(s3_ds, opts) and not prefetch.worth_it(local_ds, None)
    with_prefetch = epoch(loader(s3_ds, opts, num_workers=2, train=True, seed=3))
    streamed = epoch(loader(s3_ds, opts, num_workers=2, train=True, seed=3, prefetch=False))
    assert_same_batches(with_prefetch, streamed)
    assert_same_batches(with_prefetch, epoch(loader(local_ds, None, num_workers=2, train=True, seed=3)))


def test_a_prefetched_shard_of_the_wrong_size_is_streamed_and_counted(private_s3_copy: str, s3_server) -> None:
    fs, root = filesystem(private_s3_copy, s3_server.storage_options)
    path = root.rstrip("/") + "/shard-000001.tar"
    fs.pipe_file(path, fs.cat_file(path)[:3000])  # cut: shorter than the index says
    ld = loader(private_s3_copy, s3_server.storage_options, on_error="skip")
    keys = [k for _, _, ks in epoch(ld) for k in ks]
    delivered = {k for k in keys if int(k[1:4]) in range(MAXCOUNT, 2 * MAXCOUNT)}  # shard 1's samples
    assert 0 < len(ld.skipped) == MAXCOUNT - len(delivered)
    assert all("shard-000001.tar" in s for s in ld.skipped)
