"""One registry behaviour for codecs, augmentations and models: a second registration of a name is a
programming error, an unknown name the user's, with the same error type and wording for all three."""

from __future__ import annotations

import pytest

from lossyload.augment import create_augment
from lossyload.codecs import codec_class
from lossyload.errors import CodecError, LossyloadError, UnknownNameError
from lossyload.lab.models import create_model
from lossyload.registry import Registry


def test_add_get_names_and_the_two_faults() -> None:
    r: Registry[int] = Registry("widget")
    one, two = object(), object()
    assert r.add("b", one) is one and r.add("b", one) is one  # the same item again: a no-op
    r.add("a", two)
    assert r.get("b") is one and r.names() == ["a", "b"] and "a" in r and "c" not in r
    with pytest.raises(ValueError, match="widget 'b' is registered twice"):
        r.add("b", two)
    with pytest.raises(UnknownNameError, match=r"^unknown widget 'c'; known: a, b$"):
        r.get("c")
    with pytest.raises(UnknownNameError):
        r.get(["not", "hashable"])  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "ask"), [
    ("codec", lambda: codec_class("jpeg-xl")),
    ("augmentation", lambda: create_augment("jpeg-xl")),
    ("model", lambda: create_model("jpeg-xl", classes=2)),
])
def test_every_registry_refuses_an_unknown_name_alike(kind: str, ask) -> None:
    with pytest.raises(UnknownNameError, match=f"^unknown {kind} 'jpeg-xl'; known: ") as e:
        ask()
    assert isinstance(e.value, (CodecError, LossyloadError, LookupError))
