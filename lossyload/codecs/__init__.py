"""Codecs, one module each, registered by name (:mod:`.registry`): ``create_codec(name, config, options)``
rebuilds one from the config stored in an index."""

from . import encodec, jpeg_dct, mel, rgb, vae, vq  # noqa: F401  (register the built-in codecs)
from .base import Codec, Encoded, TensorSpec
from .registry import codec_class, create_codec, list_codecs, register_codec

__all__ = ["Codec", "Encoded", "TensorSpec", "register_codec", "create_codec", "codec_class", "list_codecs"]
