"""Presets of the reference trainer: which rows of :mod:`lossyload.lab.rows` run, on how much bundled data, at
which input sizes, for how many epochs and with which models. The main job (``lossyload demo``) is the
``demo`` preset; ``full`` is the whole comparison (``lossyload-train``); ``quick`` is the CI smoke test."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..datasets.keywords import KeywordsConfig
from ..datasets.photos import PhotosConfig
from ..errors import LossyloadError
from .rows import NAMES, ROWS, Sizes

MAIN = tuple(r.name for r in ROWS if r.ablation is None)  # the rows that are not ablations
# rows behind a target of the report: trained with several seeds where a preset asks for them
TARGET_ROWS = ("mel", "vq-bnn", "pixels", "pixels-small", "latents", "dct", "dct-24")
MNV2 = {"pixel-cnn": "mnv2-pixels", "dct-cnn": "mnv2-dct", "grid-cnn": "mnv2-grid"}


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    about: str
    rows: tuple[str, ...] = MAIN  # the rows run (loader rows and trained rows)
    loader_only: tuple[str, ...] = ()  # rows whose model this preset does not train
    sizes: Sizes = Sizes()
    photos: PhotosConfig = PhotosConfig(short_side=(512, 640), val_per_class=50)  # the bundled photos (no --data)
    keywords: KeywordsConfig = KeywordsConfig()  # the bundled keyword build (no --audio-data)
    # the epoch cap per experiment: every trained row stops at its validation plateau (lossyload.lab.schedule)
    epochs: dict[str, int] = field(default_factory=lambda: {"speech": 40, "images": 40})
    epochs_factors: bool = True  # rows' caps are their epochs_factor x the experiment's (False: all alike)
    patience: int = 3  # epochs without a better validation accuracy before the learning rate drops, then stop
    lr_drops: int = 2  # learning-rate drops (x0.2, from the best weights) before a plateau stops a run
    min_epochs: int = 1
    batch: dict[str, int] = field(default_factory=lambda: {"speech": 64, "images": 32})
    models: dict[str, str] = field(default_factory=dict)  # model substitutions: row model -> model trained
    vae_fit: dict = field(default_factory=lambda: {"seconds": 300.0})  # lossyload.media.vae_fit.FitVaeConfig fields
    seeds: int = 1  # training runs (seeds) of each row in TARGET_ROWS; other rows train once
    width_mult: float = 0.5  # MobileNetV2 width
    passes: int = 1  # loader passes for the samples/s figure (median)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rows) - set(NAMES)) + sorted(set(self.loader_only) - set(self.rows))
        if unknown:
            raise LossyloadError(f"preset {self.name}: unknown or unselected rows {unknown}")


PRESETS = {
    "demo": Preset(
        name="demo", about="the main job: every codec through the loader on a small build of the bundled sets, and "
        "the rows behind each target trained to their validation plateau (mel vs VQ + BNN, pixels vs DCT-24, "
        "resampled pixels vs latents; one seed) (about 10 minutes on 2 CPU cores, with a 60 s VAE fit)",
        loader_only=("vq-cnn", "encodec", "dct", "dct-16-8"),  # trained in the full preset
        sizes=Sizes(full=128, small=32, resolution=256, resize=None),
        photos=PhotosConfig(train_per_class=100, test_per_class=40, val_per_class=30),
        keywords=KeywordsConfig(max_voices=200),
        epochs={"speech": 20, "images": 20}, patience=2, lr_drops=1, passes=3, vae_fit={"seconds": 60.0}),
    "full": Preset(
        name="full", about="the seeds' trade-offs with error bars: every row and ablation on the whole bundled "
        "sets, small CNNs and the BNN, 3 seeds for the rows behind a target (5 h 42 min of one-core time: about "
        "3 h on 2 CPU cores with its experiments and seeds side by side, --threads 1 each; docs/results.md)",
        rows=NAMES, sizes=Sizes(full=160, small=64, resolution=512, resize=192), seeds=3),
    "mobilenet": Preset(
        name="mobilenet", about="the seed deck's image models: MobileNetV2 at 224 px on pixels, resampled pixels, "
        "latents and DCT coefficients (one seed; for a GPU: about 85 s per epoch on 2 CPU cores)",
        rows=tuple(r for r in MAIN if ROWS[NAMES.index(r)].experiment == "images"), models=MNV2,
        sizes=Sizes(full=224, small=64, resolution=512, resize=256)),
    "quick": Preset(
        name="quick", about="CI smoke test: tiny data and one epoch, figures not meaningful (about a minute on 2 "
        "CPU cores)",
        sizes=Sizes(full=64, small=32, resolution=128, resize=80),
        photos=PhotosConfig(train_per_class=4, test_per_class=2, val_per_class=2, short_side=(128, 160)),
        keywords=KeywordsConfig(max_voices=5, dialects=("en-us",)),
        epochs={"speech": 1, "images": 1}, epochs_factors=False, batch={"speech": 8, "images": 8},
        vae_fit={"seconds": 30.0, "max_steps": 4, "resolution": 32, "block_out_channels": (8, 8, 16, 16)}),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise LossyloadError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
