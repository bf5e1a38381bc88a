"""The lab's one table of experiment rows: which shard set each representation is read from, with which codec
and load options, and which model (if any) learns from it.

``speech`` (seed 1): keyword spotting on 128x128 log-mel floats (a full-precision CNN, the baseline) against
VQ codes fed as +-1 bit-planes to a float CNN (the ceiling of a binarized network on that input) and to a
binarized network distilled from it (ReActNet-style, two-stage), VQ codebook vectors to the same CNN family,
and the EnCodec continuous latent to a small 1-D CNN; the raw code rows are measured for the loader only.
The ablation rows take one step of the BNN recipe away each.

``images`` (seed 2 and the DCT-domain papers): a small CNN on full-size pixels (the baseline, decoded by
libjpeg-turbo; PIL/torchvision's decode beside it for the loader), a grid CNN on resampled pixels and on VAE
latents of the same tensor size, and the same trunk fed the JPEG's quantized luma/chroma DCT coefficients
(all 192 channels with chroma joined late, 16+2x8, and DCTNet's 24 with chroma upsampled), read from the JPEG
or pre-extracted at shard time. The ``mobilenet`` preset swaps in MobileNetV2 (the seed deck's model).

A preset (:mod:`lossyload.lab.presets`) picks rows, sizes and models from this table; the table itself has no
knobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..augment import codes as codes_aug
from ..augment import dct as dct_aug
from ..augment import latent as latent_aug
from ..augment import mel as mel_aug
from ..augment import rgb as rgb_aug

EXPERIMENTS = ("speech", "images")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Input sizes of the image rows."""

    full: int = 224  # pixel baseline crop, and the DCT rows' crop
    small: int = 64  # resampled pixels
    resolution: int = 512  # pixels the VAE encodes: latents of resolution / 8
    resize: int | None = 256  # shard-time short side of the JPEGs the pixel and DCT rows read (None: as stored)

    @property
    def grid(self) -> int:
        return self.resolution // 8


@dataclass(frozen=True, kw_only=True)
class Row:
    experiment: str  # "speech" | "images"
    name: str  # short id (--rows, results.json)
    label: str  # the representation, for the report; {full}, {small}, {grid} are filled from the sizes
    shards: str  # shard set (lossyload.lab.data.shard_spec)
    codec: str
    options: dict = field(default_factory=dict)  # load-time codec options; "crop": "full"|"small" names a size
    model: str | None = None  # lossyload.lab.models name; None: measured for the loader only
    model_args: dict = field(default_factory=dict)
    baseline: bool = False  # the conventional decode-to-float row its experiment compares against
    published: str = ""  # the seed deck's figure for this row, quoted in the report
    epochs_factor: int = 1  # this row's epoch cap is factor x the experiment's (split among its stages)
    optim: dict = field(default_factory=dict)  # AdamW overrides: lr, weight_decay
    stages: int = 1  # 2: binary activations with real weights first, then binary weights (BNN rows)
    teacher: str | None = None  # distil from this row's trained model (same input, same seed)
    ablation: str | None = None  # what this row changes, for an ablation of row ``ablation_of``
    ablation_of: str | None = None
    # (sizes, load options, train) -> augmentations; None: the codec's defaults
    augment: Callable[[Sizes, dict, bool], list] | None = None


# augmentation recipes: random crop + flip in each row's own domain for training, a centre view for testing;
# SpecAugment's time and frequency masks on log-mel and on VQ code grids for training
def _pixels(sizes: Sizes, opts: dict, train: bool) -> list:
    s = opts["crop"]
    return [rgb_aug.RandomResizedCrop(size=s, scale=(0.35, 1.0)), rgb_aug.HFlip(p=0.5)] if train else [
        rgb_aug.ResizeCenterCrop(size=s)]


def _dct(sizes: Sizes, opts: dict, train: bool) -> list:
    return [dct_aug.RandomCrop(size=sizes.full), dct_aug.HFlip(p=0.5)] if train else [
        dct_aug.CenterCrop(size=sizes.full)]


def _latents(sizes: Sizes, opts: dict, train: bool) -> list:
    return [latent_aug.RandomCrop(size=sizes.grid, padding=4), latent_aug.HFlip(p=0.5)] if train else []


def _mel(sizes: Sizes, opts: dict, train: bool) -> list:
    return [mel_aug.TimeMask(max_width=24, count=2), mel_aug.FreqMask(max_width=16, count=2)] if train else []


def _codes(sizes: Sizes, opts: dict, train: bool) -> list:  # the mel masks on the 2x2-block code grid: half widths
    return [codes_aug.TimeMask(max_width=12, count=2), codes_aug.FreqMask(max_width=8, count=2)] if train else []


_REACT = {"rsign": True, "rprelu": True, "width": 16, "rows": 8}
_BNN_OPTIM = {"lr": 2e-3, "weight_decay": 0.0}

_BITS = {"codec": "vq", "augment": _codes, "options": {"output": "bits"}}  # VQ bit-planes, as every BNN row reads them
_BNN = {**_BITS, "model": "bnn", "optim": _BNN_OPTIM, "epochs_factor": 2}
_JPEG_DCT = {"codec": "jpeg-dct", "augment": _dct}

ROWS = (
    Row(experiment="speech", name="mel", label="FLAC -> log-mel 128x128 float32", shards="mel", codec="mel",
        augment=_mel, model="mel-cnn", baseline=True, published="84% · 119.52 MiB"),
    Row(experiment="speech", name="vq-codes", label="VQ 4-bit codes 64x64 uint8", shards="vq", codec="vq",
        augment=_codes, options={"output": "codes"}),
    Row(experiment="speech", name="vq-bits-cnn", label="VQ bit-planes 4x64x64 int8, float network", shards="vq",
        **_BITS, model="vq-cnn"),
    Row(experiment="speech", name="vq-bnn", label="VQ bit-planes 4x64x64 int8, binarized network", shards="vq",
        **_BNN, model_args=_REACT, published="79% · 3.74 MiB", stages=2, teacher="vq-bits-cnn"),
    Row(experiment="speech", name="vq-cnn", label="VQ codebook vectors 4x64x64 float32", shards="vq", codec="vq",
        augment=_codes, options={"output": "vectors"}, model="vq-cnn"),
    Row(experiment="speech", name="encodec-codes", label="EnCodec RVQ codes 8x75 int16", shards="encodec",
        codec="encodec", options={"output": "codes"}),
    Row(experiment="speech", name="encodec", label="EnCodec latent 128x75 float32", shards="encodec",
        codec="encodec", options={"output": "latent"}, model="latent-cnn"),
    # speech ablations: what each step of the BNN recipe is worth
    Row(experiment="speech", name="vq-bnn-no-teacher", label="VQ bit-planes, binarized network", shards="vq",
        **_BNN, model_args=_REACT, stages=2, ablation="no distillation", ablation_of="vq-bnn"),
    Row(experiment="speech", name="vq-bnn-one-stage", label="VQ bit-planes, binarized network", shards="vq",
        **_BNN, model_args=_REACT, teacher="vq-bits-cnn", ablation="one stage: binary weights from the start",
        ablation_of="vq-bnn"),
    Row(experiment="speech", name="vq-bnn-no-react", label="VQ bit-planes, binarized network", shards="vq",
        **_BNN, model_args={"width": 16, "rows": 8}, stages=2, teacher="vq-bits-cnn",
        ablation="plain sign at 0 and no activation (no RSign/RPReLU)", ablation_of="vq-bnn"),
    Row(experiment="images", name="pixels-pil", label="JPEG -> pixels {full}x{full}x3, PIL/torchvision",
        shards="jpeg", codec="rgb", augment=_pixels, options={"crop": "full", "backend": "pil"}),
    Row(experiment="images", name="pixels", label="JPEG -> pixels {full}x{full}x3, libjpeg-turbo", shards="jpeg",
        codec="rgb", augment=_pixels, options={"crop": "full", "backend": "turbo"}, model="pixel-cnn",
        baseline=True),
    Row(experiment="images", name="pixels-small", label="JPEG -> pixels resampled {small}x{small}x3",
        shards="jpeg", codec="rgb", augment=_pixels, options={"crop": "small"}, model="grid-cnn",
        model_args={"in_channels": 3}, published="39%"),
    Row(experiment="images", name="latents", label="VAE latents {grid}x{grid}x4 int8", shards="vae", codec="vae",
        augment=_latents, model="grid-cnn", model_args={"in_channels": 4}, published="44%"),
    Row(experiment="images", name="dct", label="JPEG -> DCT 64+2x64 int16", shards="jpeg", **_JPEG_DCT,
        options={"crop": "full"}, model="dct-cnn"),
    Row(experiment="images", name="dct-pre", label="DCT 64+2x64 int16, pre-extracted", shards="coefficients",
        **_JPEG_DCT, options={"crop": "full"}),
    Row(experiment="images", name="dct-16-8", label="DCT 16+2x8 int16, pre-extracted", shards="coefficients-16-8",
        **_JPEG_DCT, options={"crop": "full", "keep": (16, 8)}, model="dct-cnn", model_args={"keep": (16, 8)}),
    Row(experiment="images", name="dct-24", label="DCT 16+2x4 int16 (24 channels), chroma upsampled, "
        "pre-extracted", shards="coefficients-24", **_JPEG_DCT, options={"crop": "full", "keep": (16, 4)},
        model="dct-cnn", model_args={"keep": (16, 4), "chroma": "upsample"}),
    # images ablation: the 24-channel DCT network's chroma layout
    Row(experiment="images", name="dct-24-late", label="DCT 16+2x4 int16, chroma joined late",
        shards="coefficients-24", **_JPEG_DCT, options={"crop": "full", "keep": (16, 4)}, model="dct-cnn",
        model_args={"keep": (16, 4), "chroma": "late"}, ablation="chroma joined after the first downsampling "
        "instead of upsampled onto the luma grid", ablation_of="dct-24"),
)
NAMES = tuple(r.name for r in ROWS)


def rows_of(experiment: str, names: tuple[str, ...] | None = None) -> list[Row]:
    return [r for r in ROWS if r.experiment == experiment and (names is None or r.name in names)]


def options(row: Row, sizes: Sizes) -> dict:
    """The row's load-time codec options with the size names filled in."""
    return {k: getattr(sizes, v) if k == "crop" else v for k, v in row.options.items()}


def label(row: Row, sizes: Sizes) -> str:
    return row.label.format(full=sizes.full, small=sizes.small, grid=sizes.grid)


def transforms(row: Row, sizes: Sizes, train: bool) -> list | None:
    """The row's augmentations (its ``augment`` recipe) with the sizes filled in; None: the codec's defaults."""
    return row.augment(sizes, options(row, sizes), train) if row.augment else None
