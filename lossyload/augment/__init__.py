"""Codec-domain augmentations, one module per domain, registered by name (:mod:`.registry`): every
augmentation is a frozen dataclass stored as ``{"name": ..., **fields}`` and rebuilt from it."""

from . import codes, dct, latent, mel, rgb  # noqa: F401  (register the built-in augmentations)
from .registry import (Transform, augment_from_dict, augment_to_dict, create_augment, has_batch_form, list_augments,
                       register_augment, sample_params, transform_batch)

__all__ = ["Transform", "augment_from_dict", "augment_to_dict", "create_augment", "has_batch_form", "list_augments",
           "register_augment", "sample_params", "transform_batch"]
