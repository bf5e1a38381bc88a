"""The lab's models (never imported by the library): small CNNs (:mod:`.cnn`), the MobileNetV2 family
(:mod:`.mobilenet`) and the binarized network (:mod:`.bnn`), each registered by name.

    >>> from lossyload.lab.models import create_model
    >>> model = create_model("mnv2-dct", classes=10, keep=(16, 8))
"""

from . import bnn, cnn, mobilenet  # noqa: F401  (registers the models)
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
