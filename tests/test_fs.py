"""``lossyload.fs``: which failures are worth a retry, the retry loop, the refused and unknown URL schemes,
webdataset's ``s3://``/``gs://`` openers, and a remote read that survives the S3 server going away and
coming back (the moto server on 127.0.0.1)."""

from __future__ import annotations

import errno
import hashlib
import importlib
import importlib.util
import os
import threading
from contextlib import contextmanager

import aiohttp
import pytest
from botocore.exceptions import EndpointConnectionError

from lossyload.errors import LossyloadError, MissingDependencyError
from lossyload.fs import (
    DEFAULT_RETRY,
    GaveUp,
    ResumableReader,
    RetryPolicy,
    _webdataset_opener,
    filesystem,
    open_url,
    transient,
    with_retries,
)

FAST = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002)


# ------------------------------------------------------------------------------------------- transient
def _response_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(request_info=None, history=(), status=status, message="x")


TRANSIENT = {
    "FileNotFoundError": (FileNotFoundError(errno.ENOENT, "no such object"), False),
    "PermissionError": (PermissionError(errno.EACCES, "denied"), False),
    "IsADirectoryError": (IsADirectoryError(errno.EISDIR, "a directory"), False),
    "ConnectionResetError": (ConnectionResetError(errno.ECONNRESET, "reset by peer"), True),
    "ConnectionRefusedError": (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
    "TimeoutError": (TimeoutError("timed out"), True),
    # (two arguments, as the OS raises it: OSError(errno.EINVAL) alone has errno None)
    "OSError-EINVAL": (OSError(errno.EINVAL, "Invalid argument"), False),
    "OSError-ENOSPC": (OSError(errno.ENOSPC, "No space left on device"), False),
    "OSError-no-errno": (OSError("stream broke"), True),  # e.g. an fsspec read failure: worth a retry
    "EndpointConnectionError": (EndpointConnectionError(endpoint_url="x"), True),  # botocore: not an OSError
    "aiohttp-503": (_response_error(503), True),
    "aiohttp-500": (_response_error(500), True),
    "aiohttp-429": (_response_error(429), True),
    "aiohttp-404": (_response_error(404), False),
    "aiohttp-403": (_response_error(403), False),
    "ValueError": (ValueError("bad input"), False),
    "GaveUp": (GaveUp("s3://b/k: giving up after 8 attempts"), False),  # an outer retry loop does not multiply
}


@pytest.mark.filterwarnings("error::DeprecationWarning")  # aiohttp's .code is deprecated: status is read first
@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient(name: str) -> None:
    exc, expected = TRANSIENT[name]
    assert transient(exc) is expected


# ------------------------------------------------------------------------------------------- retry loop
def test_default_delays_double_up_to_the_cap() -> None:
    assert list(RetryPolicy().delays()) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert list(RetryPolicy(attempts=4, backoff=1, max_backoff=3).delays()) == [1, 2, 3]
    assert list(RetryPolicy(attempts=1).delays()) == []
    assert DEFAULT_RETRY == RetryPolicy()


class Flaky:
    """Raises the given errors in turn, then returns "ok"; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retries_transient_failures_then_succeeds(caplog) -> None:
    fn = Flaky(ConnectionResetError(errno.ECONNRESET, "reset"), TimeoutError("slow"))
    assert with_retries("s3://b/obj", fn, FAST) == "ok"
    assert fn.calls == 3
    retries = [r for r in caplog.records if r.name == "lossyload" and "retrying" in r.getMessage()]
    assert len(retries) == 2 and all("s3://b/obj" in r.getMessage() for r in retries)


def test_gives_up_after_the_attempts_naming_what() -> None:
    last = ConnectionResetError(errno.ECONNRESET, "third reset")
    fn = Flaky(ConnectionResetError(), ConnectionResetError(), last, ConnectionResetError())
    with pytest.raises(OSError) as info:
        with_retries("s3://bucket/shard-000003.tar", fn, FAST)
    assert fn.calls == FAST.attempts == 3
    message = str(info.value)
    assert "s3://bucket/shard-000003.tar" in message and "3 attempts" in message and "third reset" in message
    assert info.value.__cause__ is last


@pytest.mark.parametrize("error", [FileNotFoundError(errno.ENOENT, "gone"), PermissionError(errno.EACCES, "no"),
                                   ValueError("bad")])
def test_permanent_errors_are_raised_at_once(error: Exception) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        with_retries("x", fn, RetryPolicy(attempts=5, backoff=10.0))  # a retry would sleep 10 s
    assert info.value is error and fn.calls == 1


# ------------------------------------------------------------------------------------------- schemes
def test_unknown_scheme_names_the_url() -> None:
    with pytest.raises(LossyloadError, match="foo://x") as info:
        filesystem("foo://x")
    assert "unknown URL scheme" in str(info.value)


@pytest.mark.parametrize("url", ["pipe:cat x", "pipe:curl -s http://127.0.0.1:1/x.tar"])
def test_pipe_is_refused(url: str) -> None:
    with pytest.raises(LossyloadError, match="refused"):
        filesystem(url)
    with pytest.raises(LossyloadError, match="refused"):
        open_url(url)


def test_missing_backend() -> None:
    """A scheme fsspec knows whose backend package is not installed (abfs:// needs adlfs, oci:// ocifs, ...;
    not hdfs://, whose backend is pyarrow, which the tables extra installs)."""
    from fsspec.registry import known_implementations

    missing = [scheme for scheme in ("abfs", "oci", "dropbox", "box")
               if importlib.util.find_spec(known_implementations[scheme]["class"].split(".")[0]) is None]
    assert missing, "every candidate backend is installed: add a scheme whose backend is not"
    with pytest.raises(MissingDependencyError, match=f"{missing[0]}://x"):
        filesystem(f"{missing[0]}://x")


def test_local_open_is_a_plain_file(tmp_path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    with open_url(str(tmp_path / "a.bin")) as f:
        assert not isinstance(getattr(f, "raw", f), ResumableReader) and f.read() == b"abc"


# ------------------------------------------------------------------------------------------- webdataset
def test_webdataset_schemes_route_through_fsspec(s3_server, gcs_server, bucket_name: str) -> None:
    importlib.import_module("lossyload.loader.dataset")  # using the loader registers them
    gopen = importlib.import_module("webdataset.gopen")
    for scheme in ("s3", "gs", "gcs"):
        assert gopen.gopen_schemes[scheme] is _webdataset_opener
    data = os.urandom(70_000)
    for server in (s3_server, gcs_server):
        url = server.bucket(bucket_name) + "/dir/obj.tar"
        fs, path = filesystem(url, server.storage_options)
        fs.pipe(path, data)
        with gopen.gopen(url, storage_options=server.storage_options) as f:
            assert isinstance(f.raw, ResumableReader) and f.read() == data
        with pytest.raises(FileNotFoundError):  # a missing object is not retried into a generic error
            gopen.gopen(url + ".missing", storage_options=server.storage_options)


# ------------------------------------------------------------------------------------------- resumable reads
@contextmanager
def server_outage(server, seconds: float):
    """``cut()`` stops ``server`` and restarts it ``seconds`` later from a thread. Whatever happens, the
    server is running again when the block exits."""
    restart = threading.Timer(seconds, server.start)

    def cut() -> None:
        server.stop()
        restart.start()

    try:
        yield cut
    finally:
        if restart.ident is not None:  # started: wait for it
            restart.join()
        if server._server is None:  # stopped and not (successfully) restarted
            server.start()


def fast_failing_s3(server):
    """An s3fs filesystem without botocore's own retries (they would ride out a short outage by themselves,
    hiding what ``ResumableReader`` does) and outside fsspec's instance cache."""
    import s3fs

    return s3fs.S3FileSystem(**server.storage_options, config_kwargs={"retries": {"total_max_attempts": 1}},
                             skip_instance_cache=True)


@pytest.fixture
def big_object(s3_server, bucket_name: str) -> tuple[str, str, bytes]:
    data = os.urandom(12 << 20)
    url = s3_server.bucket(bucket_name) + "/big.bin"
    fs, path = filesystem(url, s3_server.storage_options)
    fs.pipe(path, data)
    return url, path, data


def test_read_resumes_after_the_server_restarts(s3_server, big_object, caplog) -> None:
    url, path, data = big_object
    retry = RetryPolicy(attempts=40, backoff=0.05, max_backoff=0.25)
    with server_outage(s3_server, 1.0) as cut:
        reader = ResumableReader(fast_failing_s3(s3_server), path, url, retry, block_size=1 << 20)
        got = bytearray(reader.read(3 << 20) + reader.read(12345))
        assert reader.tell() == len(got) and reader.reopens == 0
        cut()
        while chunk := reader.read(1 << 20):
            got += chunk
    reader.close()
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert reader.reopens >= 1 and reader.tell() == len(data)
    assert any(url in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)


def test_read_gives_up_when_the_server_stays_down(s3_server, big_object) -> None:
    url, path, _ = big_object
    with server_outage(s3_server, 0.0):  # (not cut: stopped below for good, restarted on exit)
        reader = ResumableReader(fast_failing_s3(s3_server), path, url, FAST, block_size=1 << 20)
        reader.read(1000)
        s3_server.stop()
        with pytest.raises(OSError, match=f"{url}: giving up after 3 attempts"):
            while reader.read(1 << 20):
                pass


def test_open_url_streams_s3_through_a_resumable_reader(s3_server, big_object) -> None:
    url, _, data = big_object
    with open_url(url, "rb", s3_server.storage_options) as f:
        assert isinstance(f.raw, ResumableReader)  # behind a C buffer for the tar reader's small reads
        head = f.read(100)
        rest = bytearray()
        buf = bytearray(1 << 16)
        while n := f.readinto(buf):
            rest += buf[:n]
    assert head + rest == data
    with pytest.raises(FileNotFoundError):
        open_url(url + ".missing", "rb", s3_server.storage_options)


def test_the_routing_comes_with_the_loader_not_with_a_bare_import() -> None:
    """docs/storage-and-distributed.md: a bare ``import lossyload`` leaves webdataset alone (it imports neither
    torch nor webdataset); importing the loader routes ``s3://`` through fsspec."""
    probe = ("import importlib, sys, lossyload\n"
             "print('webdataset' in sys.modules)\n"
             "g = importlib.import_module('webdataset.gopen')\n"
             "print(getattr(g.gopen_schemes.get('s3'), '__module__', None))\n"
             "lossyload.open_dataset  # not called: naming it imports nothing\n"
             "import lossyload.loader.dataset\n"
             "print(g.gopen_schemes['s3'].__module__)\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "None", "lossyload.fs"]
