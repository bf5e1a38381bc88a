"""The codec registry: ``@register_codec`` on a :class:`Codec` subclass, ``create_codec(name, config, options)``
rebuilds one from the config stored in an index."""

from __future__ import annotations

from typing import Any

from ..errors import CodecError
from .base import Codec, build_dataclass

_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    if cls.name in _REGISTRY:
        raise CodecError(f"codec {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_codecs() -> list[str]:
    return sorted(_REGISTRY)


def codec_class(name: str) -> type[Codec]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {list_codecs()}") from None


def create_codec(name: str, config: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> Codec:
    """Rebuild codec ``name`` from a stored ``config`` dict plus load-time ``options`` (``None`` values dropped)."""
    cls = codec_class(name)
    cfg = build_dataclass(cls.Config, config, f"codec {name!r} config")
    opts = build_dataclass(cls.Options, options, f"codec {name!r} options")
    return cls(cfg, opts)
