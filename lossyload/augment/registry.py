"""The registry of codec-domain augmentations.

Every augmentation is a frozen dataclass (keyword-only fields) registered under a ``name`` with
:func:`register_augment`; it is stored as ``{"name": ..., **fields}`` (:func:`augment_to_dict`) and
rebuilt with :func:`augment_from_dict` / :func:`create_augment`. Calling it as ``t(sample, rng)``
returns a new sample and never mutates the input; all randomness comes from ``rng``.

Batch form (the loader's batch path): ``t.params(batch, rng)`` draws every sample's random parameters as
arrays (leading axis B) from the batch's generator, ``t.apply_batch(batch, params)`` applies them with a few
array operations, and ``t.apply(sample, params_i)`` is the per-sample operation with the parameters of one
sample (``params_i = {k: v[i]}``): for given parameters ``apply_batch`` equals ``apply`` of each sample. The
per-sample ``t(sample, rng)`` draws one sample's parameters and calls ``apply``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from lossyload.errors import CodecError
from lossyload.registry import Registry

__all__ = [
    "Transform",
    "augment_from_dict",
    "augment_to_dict",
    "has_batch_form",
    "sample_params",
    "transform_batch",
    "create_augment",
    "list_augments",
    "register_augment",
]

T = TypeVar("T", bound=type)

AUGMENTS: Registry[type] = Registry("augmentation")


@runtime_checkable
class Transform(Protocol):
    """A (possibly random) sample transform: ``t(sample, rng) -> new sample``."""

    def __call__(self, sample: Any, rng: np.random.Generator) -> Any: ...


def has_batch_form(t: Any) -> bool:
    """Whether ``t`` has the batch form (``params`` / ``apply_batch``)."""
    return callable(getattr(t, "params", None)) and callable(getattr(t, "apply_batch", None))


def transform_batch(t: Any, batch: Any, rng: np.random.Generator) -> Any:
    """``t`` applied to a whole batch, each sample's parameters drawn as arrays from ``rng``."""
    return t.apply_batch(batch, t.params(batch, rng))


def sample_params(params: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """The parameters of sample ``i`` of a batch's ``params``."""
    return {k: v[i] for k, v in params.items()}


def register_augment(name: str) -> Callable[[T], T]:
    """Class decorator registering a frozen-dataclass transform under ``name`` (sets ``cls.name``)."""

    def decorate(cls: T) -> T:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            raise ValueError(f"augmentation {cls.__name__} must be a frozen dataclass")
        cls.name = name
        return AUGMENTS.add(name, cls)

    return decorate


def list_augments() -> list[str]:
    """Sorted names of all registered augmentations."""
    return AUGMENTS.names()


def create_augment(name: str, **kwargs: Any) -> Transform:
    """Instantiate the augmentation registered as ``name`` with ``kwargs``."""
    cls = AUGMENTS.get(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CodecError(f"invalid arguments for augmentation {name!r}: {exc}") from exc


def augment_to_dict(t: Transform) -> dict[str, Any]:
    """``{"name": ..., **fields}`` of a registered augmentation."""
    name = getattr(type(t), "name", None)
    if name not in AUGMENTS or AUGMENTS.get(name) is not type(t):
        raise CodecError(f"{type(t).__name__} is not a registered augmentation")
    return {"name": name, **dataclasses.asdict(t)}


def augment_from_dict(d: dict[str, Any]) -> Transform:
    """Inverse of :func:`augment_to_dict`."""
    if "name" not in d:
        raise CodecError(f"augmentation config has no 'name': {d!r}")
    fields = {k: v for k, v in d.items() if k != "name"}
    return create_augment(d["name"], **fields)
