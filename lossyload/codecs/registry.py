"""The codec registry: ``@register_codec`` on a :class:`Codec` subclass, ``create_codec(name, config, options)``
rebuilds one from the config stored in an index."""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Codec, build_dataclass

CODECS: Registry[type[Codec]] = Registry("codec")


def register_codec(cls: type[Codec]) -> type[Codec]:
    return CODECS.add(cls.name, cls)


def list_codecs() -> list[str]:
    return CODECS.names()


def codec_class(name: str) -> type[Codec]:
    return CODECS.get(name)


def create_codec(name: str, config: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> Codec:
    """Rebuild codec ``name`` from a stored ``config`` dict plus load-time ``options`` (``None`` values dropped)."""
    cls = codec_class(name)
    cfg = build_dataclass(cls.Config, config, f"codec {name!r} config")
    opts = build_dataclass(cls.Options, options, f"codec {name!r} options")
    return cls(cfg, opts)
