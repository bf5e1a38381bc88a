"""Every byte lossyload reads or writes goes through these functions (fsspec underneath).

Local paths and any fsspec URL (``s3://``, ``gs://``, ``http(s)://`` with the ``cloud`` extra) work the same;
``pipe:`` and other shell-executing schemes are refused.
"""

from __future__ import annotations

import posixpath
from typing import IO, Any

import fsspec

from .errors import IndexFormatError, LossyloadError
from .index import INDEX_NAME, Index, check_relative_url

_REFUSED = ("pipe:",)


def _check(url: str) -> str:
    if url.startswith(_REFUSED):
        raise LossyloadError(f"{url!r}: 'pipe:' URLs are refused (lossyload never runs shell commands)")
    return url


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``url``."""
    fs, path = fsspec.core.url_to_fs(_check(url), **(storage_options or {}))
    return fs, path


def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """Open ``url`` for streaming (read-ahead buffered)."""
    fs, path = filesystem(url, storage_options)
    return fs.open(path, mode)


def join(base: str, rel: str) -> str:
    """Resolve ``rel`` (a checked relative path) against the directory URL ``base``."""
    return posixpath.join(base.rstrip("/"), check_relative_url(rel))


def dataset_root(url: str) -> tuple[str, str]:
    """``(directory URL, index URL)`` for a dataset given by its directory or its ``index.json``."""
    url = _check(str(url))
    if url.endswith(".json"):
        return url.rsplit("/", 1)[0] if "/" in url else ".", url
    return url.rstrip("/"), posixpath.join(url.rstrip("/"), INDEX_NAME)


def read_index(url: str, storage_options: dict[str, Any] | None = None) -> tuple[str, Index]:
    """Read and validate the index of the dataset at ``url``; returns ``(root URL, Index)``."""
    root, index_url = dataset_root(url)
    try:
        with open_url(index_url, "rb", storage_options) as f:
            text = f.read()
    except FileNotFoundError as exc:
        raise IndexFormatError(f"{index_url}: no index.json (is this a lossyload dataset?)") from exc
    return root, Index.from_json(text, where=index_url)
