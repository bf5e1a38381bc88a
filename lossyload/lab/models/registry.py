"""The lab's model registry, in the style of timm's: ``@register_model`` on a factory ``(classes, **kw) ->
nn.Module``, one :func:`create_model` to build any of them by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...registry import Registry

Factory = Callable[..., nn.Module]
MODELS: Registry[Factory] = Registry("model")


def register_model(name: str) -> Callable[[Factory], Factory]:
    return lambda fn: MODELS.add(name, fn)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, *, classes: int, **overrides) -> nn.Module:
    """A fresh model ``name`` with ``classes`` outputs; ``None`` overrides are dropped (the factory's defaults
    apply). Seed torch first for a reproducible initialisation."""
    return MODELS.get(name)(classes, **{k: v for k, v in overrides.items() if v is not None})
