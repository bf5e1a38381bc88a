"""The codec interface: one small class per codec, a frozen config stored in the index, a registry."""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError, EncodeError


@dataclass(frozen=True)
class TensorSpec:
    """What a codec's loader output looks like: ``None`` in ``shape`` is a dimension set by a crop."""

    shape: tuple[int | None, ...]
    dtype: str
    layout: str

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}] ({self.layout})"


@dataclass(frozen=True)
class Encoded:
    """What ``encode`` returns: the payload stored as tar member ``<key>.<member>``, and why it is not the
    source's bytes (``None`` when copied byte for byte)."""

    payload: bytes
    transcoded: str | None = None


class Codec:
    """Base class. Subclasses set ``name``, ``Config``, ``Options`` and ``member``, and implement
    ``encode`` (offline, shard tool), ``decode`` (online: payload to the canonical codec-level sample that
    augmentations transform), ``finalize`` (canonical sample to the output arrays) and ``output_spec``."""

    name: ClassVar[str]
    Config: ClassVar[type]  # frozen dataclass: everything encode used; stored in index.json
    Options: ClassVar[type]  # frozen dataclass: load-time choices (channel order, dtype, ...)
    member: ClassVar[str]
    fit_fields: ClassVar[tuple[str, ...]] = ()  # config fields ``fit`` learns from the data (e.g. a codebook)
    fit_sample_count: int = 0  # how many source items ``fit`` wants
    runtime_fields: ClassVar[tuple[str, ...]] = ()  # config fields that change how, not what, is encoded
    # why the DALI backend cannot read this codec; None: it can (its graph is in lossyload.dali.graphs.FORMS)
    no_dali_form: ClassVar[str | None] = "lossyload has no DALI form for it"

    def __init__(self, config: Any = None, options: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        self.options = options if options is not None else self.Options()
        if not isinstance(self.config, self.Config) or not isinstance(self.options, self.Options):
            raise CodecError(f"codec {self.name!r} needs {self.Config.__name__} and {self.Options.__name__}")

    def encode(self, data: bytes, *, source: str) -> Encoded:
        raise NotImplementedError

    def encode_batch(self, items: list[tuple[bytes, str]]) -> list[Encoded | EncodeError]:
        """``encode`` over ``(data, source)`` items; a bad item gives its :class:`EncodeError` in its place.
        Codecs that run a model override it to encode in batches."""
        out: list[Encoded | EncodeError] = []
        for data, source in items:
            try:
                out.append(self.encode(data, source=source))
            except EncodeError as exc:
                out.append(exc)
        return out

    def decode(self, payload: bytes) -> Any:
        raise NotImplementedError

    def finalize(self, sample: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- batch path: codecs whose members decode to fixed-size arrays implement these three ---------------
    def batch_decoding(self) -> bool:
        """True when :meth:`decode_many` and :meth:`finalize_batch` are available for this config."""
        return False

    def decode_many(self, payloads: list[bytes]) -> Any:
        """The canonical samples of ``payloads`` as one batch (leading axis B), with a few array calls.
        Raises the error ``decode`` raises for the first bad payload (the loader then isolates it)."""
        raise NotImplementedError

    def finalize_batch(self, batch: Any) -> dict[str, np.ndarray]:
        """``finalize`` of a whole batch: ``{name: array[B, ...]}``."""
        raise NotImplementedError

    def join_batches(self, parts: list[Any]) -> Any:
        """One batch of the batches ``parts`` (what :meth:`decode_many` returned for parts of a batch)."""
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def decode_batch(self, payloads: list[bytes]) -> dict[str, np.ndarray]:
        """``{name: array[B, ...]}`` of ``payloads`` without augmentation: equal to ``finalize(decode(p))``
        of each payload, stacked."""
        return self.finalize_batch(self.decode_many(payloads))

    # -- wire form: what crosses to the consumer (the main process, the GPU) before ``finish`` -------------
    # Codecs whose outputs are wider than what they store (int8 latents -> float32, 4-bit codes -> bit-planes,
    # uint8 pixels -> float32) build batches of their stored integers instead, and ``finish`` does the rest
    # with torch operations on the consumer's device: ``finish(wire_batch(b))`` equals ``finalize_batch(b)``.
    def wire_form(self, transforms: list) -> bool:
        """True when batches have a wire form narrower than the outputs, with these transforms."""
        return False

    def stored(self, payload: bytes) -> Any:
        """The sample the wire form's transforms take (default: ``decode``)."""
        return self.decode(payload)

    def stored_many(self, payloads: list[bytes]) -> Any:
        """:meth:`stored` of a batch (default: ``decode_many``)."""
        return self.decode_many(payloads)

    def wire(self, sample: Any) -> dict[str, np.ndarray]:
        """One sample's wire form (default: ``finalize``)."""
        return self.finalize(sample)

    def wire_batch(self, batch: Any) -> dict[str, np.ndarray]:
        """A batch's wire form (default: ``finalize_batch``)."""
        return self.finalize_batch(batch)

    def finish(self, wire: dict[str, Any]) -> dict[str, Any]:
        """Outputs ``{name: tensor[B, ...]}`` of a wire-form batch of tensors, on their device."""
        return wire

    def finish_arrays(self, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`finish` with numpy, for a batch in host memory: the host path's own operations (equal
        values), without torch's per-operation cost on a CPU. Codecs that define it say so by defining it
        (:meth:`finishes_arrays`)."""
        raise NotImplementedError

    def finishes_arrays(self) -> bool:
        """Whether :meth:`finish_arrays` is defined: then process workers hand the training process the wire
        form, which it finishes in one numpy pass (``docs/batch-path.md``)."""
        return type(self).finish_arrays is not Codec.finish_arrays

    def finished(self, wire: dict[str, Any]) -> dict[str, Any]:
        """:meth:`finish` of a wire-form batch of tensors, by :meth:`finish_arrays` when they are in host
        memory and it is defined."""
        if self.finishes_arrays() and all(t.device.type == "cpu" for t in wire.values()):
            import torch

            out = self.finish_arrays({k: t.numpy() for k, t in wire.items()})
            return {k: torch.from_numpy(v) for k, v in out.items()}
        return self.finish(wire)

    def output_spec(self) -> dict[str, TensorSpec]:
        raise NotImplementedError

    def default_transforms(self, train: bool) -> list:
        """The augmentations used when the caller gives none (must yield fixed-size samples)."""
        return []

    def check_encoder(self) -> None:
        """Raise a clear error before a shard job starts if ``encode`` cannot run (e.g. missing weights)."""

    def needs_fit(self) -> bool:
        """True when the config lacks something learned from data; the shard tool then calls ``fit``."""
        return False

    def fit(self, samples: list[tuple[str, bytes]]) -> Codec:
        """A copy of this codec whose config holds what was learned from ``(source, bytes)`` samples."""
        raise NotImplementedError

    def assets(self) -> dict[str, bytes]:
        """Side files the shard tool writes beside ``index.json`` (the index records their sha256)."""
        return {}

    def load_assets(self, assets: dict[str, bytes]) -> None:
        """Receive the side files named in the index, read and checked by the loader."""

    def stored_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def identity(self) -> dict[str, Any]:
        """The stored config without ``runtime_fields``: what decides whether two runs made the same data."""
        return {k: v for k, v in self.stored_config().items() if k not in self.runtime_fields}


def build_dataclass(cls: type, values: dict[str, Any] | None, what: str) -> Any:
    """``cls(**values)`` with a clear error naming unknown or bad fields; lists become tuples."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CodecError(f"{what}: unknown field(s) {unknown}; known: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if v is not None}
    try:
        built = cls(**values)
    except (TypeError, ValueError) as exc:  # a field's own check, or a comparison a value of a wrong type broke
        raise CodecError((isinstance(exc, TypeError) and _mistyped(cls, values, what)) or f"{what}: {exc}") from exc
    if wrong := _mistyped(cls, values, what):  # what the field checks let through: bools, floats for integers, NaN
        raise CodecError(wrong)
    return built


def _mistyped(cls: type, values: dict[str, Any], what: str) -> str | None:
    """The first value that does not fit its field's annotation, said as an error message."""
    hints = typing.get_type_hints(cls)
    for k, v in values.items():
        if not _conforms(v, hints.get(k, Any)):
            text = repr(v)
            return f"{what}: {k} = {text[:80]}{'...' if len(text) > 80 else ''} must be {_describe(hints[k])}"
    return None


def _conforms(v: Any, hint: Any) -> bool:
    """Whether a config value fits its field's annotation: an ``int`` is an integer (not a bool, float or
    text), a ``float`` a finite number, a ``tuple[...]`` a sequence of such values."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(v, a) for a in args)
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if hint is str:
        return isinstance(v, str)
    if origin is tuple:
        if not isinstance(v, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(x, args[0]) for x in v)
        return len(v) == len(args) and all(_conforms(x, a) for x, a in zip(v, args))
    return True


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    return {"<class 'int'>": "an integer", "<class 'float'>": "a finite number", "<class 'str'>": "a string",
            "<class 'bool'>": "true or false"}.get(text, f"of type {text} (numbers finite)")
