"""The lab's model registry, in the style of timm's: ``@register_model`` on a factory ``(classes, **kw) ->
nn.Module``, one :func:`create_model` to build any of them by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...errors import LossyloadError

Factory = Callable[..., nn.Module]
_MODELS: dict[str, Factory] = {}


def register_model(name: str) -> Callable[[Factory], Factory]:
    def add(fn: Factory) -> Factory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return add


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, *, classes: int, **overrides) -> nn.Module:
    """A fresh model ``name`` with ``classes`` outputs; ``None`` overrides are dropped (the factory's defaults
    apply). Seed torch first for a reproducible initialisation."""
    if name not in _MODELS:
        raise LossyloadError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _MODELS[name](classes, **{k: v for k, v in overrides.items() if v is not None})
