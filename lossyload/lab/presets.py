"""Presets of the reference trainer: which rows of :mod:`lossyload.lab.rows` run, on how much bundled data, at
which input sizes, for how many epochs and with which models. The main job (``lossyload demo``) is the
``demo`` preset; ``full`` is the whole comparison (``lossyload-train``); ``quick`` is the CI smoke test."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..datasets.keywords import KeywordsConfig
from ..datasets.photos import PhotosConfig
from ..errors import LossyloadError
from .rows import NAMES, Sizes


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    about: str
    rows: tuple[str, ...] = NAMES  # the rows run (loader rows and trained rows)
    loader_only: tuple[str, ...] = ()  # rows whose model this preset does not train
    sizes: Sizes = Sizes()
    photos: PhotosConfig = PhotosConfig(short_side=(512, 640))  # the bundled photo build (no --data)
    keywords: KeywordsConfig = KeywordsConfig()  # the bundled keyword build (no --audio-data)
    epochs: dict[str, int] = field(default_factory=lambda: {"speech": 8, "images": 6})
    epochs_factors: bool = True  # rows train their epochs_factor x the experiment's epochs (False: all alike)
    batch: dict[str, int] = field(default_factory=lambda: {"speech": 64, "images": 32})
    models: dict[str, str] = field(default_factory=dict)  # model substitutions: row model -> model trained
    width_mult: float = 0.5  # MobileNetV2 width
    passes: int = 1  # loader passes for the samples/s figure (median)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rows) - set(NAMES)) + sorted(set(self.loader_only) - set(self.rows))
        if unknown:
            raise LossyloadError(f"preset {self.name}: unknown or unselected rows {unknown}")


PRESETS = {
    "demo": Preset(
        name="demo", about="the main job: every codec on a small build of the bundled sets, small CNNs, "
        "a few epochs (about 7 minutes on 2 CPU cores)",
        loader_only=("vq-bnn", "vq-bits-cnn"),  # the BNN needs the full preset's data and epochs
        sizes=Sizes(full=128, small=32, resolution=256, resize=None),
        photos=PhotosConfig(train_per_class=100, test_per_class=40),
        keywords=KeywordsConfig(max_voices=200),
        epochs={"speech": 10, "images": 8},
        models={"mnv2-pixels": "pixel-cnn", "mnv2-dct": "dct-cnn", "mnv2-grid": "grid-cnn"},
        passes=3),
    "full": Preset(name="full", about="the seeds' experiments: MobileNetV2, the BNN, the whole bundled sets"),
    "quick": Preset(
        name="quick", about="CI smoke test: tiny data and one epoch, figures not meaningful",
        sizes=Sizes(full=64, small=32, resolution=128, resize=80),
        photos=PhotosConfig(train_per_class=4, test_per_class=2, short_side=(128, 160)),
        keywords=KeywordsConfig(max_voices=5, dialects=("en-us",)),
        epochs={"speech": 1, "images": 1}, epochs_factors=False, batch={"speech": 8, "images": 8}),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise LossyloadError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
