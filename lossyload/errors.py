"""The lossyload error family. Every message names what it is about: URL, shard, key, file."""

from __future__ import annotations


class LossyloadError(Exception):
    """Base class of every error lossyload raises on purpose."""


class IndexFormatError(LossyloadError):
    """An ``index.json`` is missing, malformed, of an unknown version or refers to unsafe URLs."""


class CodecError(LossyloadError):
    """A codec name or config is unknown or invalid, or a codec cannot be used as asked."""


class UnknownNameError(CodecError, LookupError):
    """A codec, augmentation or model name that nothing registered (:class:`lossyload.registry.Registry`)."""


class EncodeError(LossyloadError):
    """A source item cannot be encoded; the shard tool skips it and reports ``reason``."""

    def __init__(self, reason: str, *, source: str = "?") -> None:
        super().__init__(f"{source}: {reason}")
        self.reason = reason
        self.source = source


class DecodeError(LossyloadError):
    """A shard member cannot be decoded."""


class ShardError(LossyloadError):
    """A shard cannot be read, or its content does not match its index."""


class WorkerError(LossyloadError):
    """A loader worker process died (killed, out of memory) during an epoch."""


class MissingDependencyError(LossyloadError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import ``module`` or raise a clear error naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is not installed: pip install 'lossyload[{extra}]'"
        ) from exc


class DaliUnsupportedError(CodecError):
    """A codec or augmentation has no faithful DALI form (the DALI backend never falls back to torch)."""
