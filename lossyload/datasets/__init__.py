"""Small labelled datasets built offline from data that ships inside installed packages (``photos``) or
is synthesised with system tools (``keywords``: espeak-ng and sox)."""

from lossyload.datasets import keywords
from lossyload.datasets.keywords import KeywordsConfig, build_keywords
from lossyload.datasets.speech_commands import import_speech_commands
from lossyload.datasets.photos import (
    CLASSES,
    PhotosConfig,
    SamplePlan,
    build_photos,
    plan_samples,
)

__all__ = [
    "CLASSES",
    "KeywordsConfig",
    "PhotosConfig",
    "SamplePlan",
    "build_keywords",
    "build_photos",
    "import_speech_commands",
    "keywords",
    "plan_samples",
]
