"""The codec a shard set is read with: the index's (or one reading the same members), rebuilt from the stored
config plus load-time options, with its side files read and checked. No torch here: ``lossyload inspect``
uses it too."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..codecs import Codec, codec_class, create_codec
from ..errors import CodecError, ShardError
from ..fs import join, open_url
from ..index import Index
from ..integrity import digest_bytes


def resolve_codec(index: Index, name: str | None, options: dict[str, Any] | Any | None, root: str | None = None,
                  storage_options: dict[str, Any] | None = None) -> Codec:
    """The index's codec, or another codec that reads the same members (e.g. ``rgb`` over ``jpeg-dct`` JPEG
    shards), built from the stored config plus load-time ``options`` (a dict or the codec's Options). With the
    dataset ``root``, the side files the index names (e.g. EnCodec codebooks) are read, checked and attached."""
    name = name or index.codec
    cls = codec_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = {k: v for k, v in index.config.items() if k in fields}
    if options is not None and not isinstance(options, dict):
        options = dataclasses.asdict(options)
    try:
        codec = create_codec(name, config, options)
    except CodecError as exc:
        raise CodecError(f"{root}: {exc}" if root is not None else str(exc)) from exc
    if codec.member != index.member:
        raise CodecError(f"codec {name!r} reads '{codec.member}' members; these shards hold '{index.member}'")
    if root is not None and index.assets:
        codec.load_assets(read_assets(root, index, storage_options))
    return codec


def read_assets(root: str, index: Index, storage_options: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The side files named in the index, each checked against its recorded sha256."""
    assets = {}
    for name, sha in index.assets.items():
        url = join(root, name)
        try:
            with open_url(url, "rb", storage_options) as f:
                data = f.read()
        except FileNotFoundError as exc:
            raise ShardError(f"{url}: side file named in the index is missing") from exc
        if digest_bytes(data).hexdigest() != sha:
            raise ShardError(f"{url}: sha256 does not match the index (damaged or replaced)")
        assets[name] = data
    return assets
