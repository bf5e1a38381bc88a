"""The lab's one table of experiment rows: which shard set each representation is read from, with which codec
and load options, and which model (if any) learns from it.

``speech`` (seed 1): keyword spotting on 128x128 log-mel floats (a full-precision CNN, the baseline) against
VQ codes fed as +-1 bit-planes to a binarized network (and to the float CNN, an ablation), VQ codebook vectors
to the same CNN family, and the EnCodec continuous latent to a small 1-D CNN; the raw code rows are measured
for the loader only.

``images`` (seed 2 and the DCT-domain papers): MobileNetV2 on full-size pixels (the baseline, decoded by
libjpeg-turbo; PIL/torchvision's decode beside it for the loader), the same family on resampled pixels and on
VAE latents of the same grid, and a MobileNetV2 whose stem takes the JPEG's quantized luma/chroma DCT
coefficients (chroma late-concatenated), read from the JPEG or pre-extracted at shard time.

A preset (:mod:`lossyload.lab.presets`) picks rows, sizes and models from this table; the table itself has no
knobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..augment import dct as dct_aug
from ..augment import latent as latent_aug
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
    shards: str  # shard set (lossyload.lab.data.SHARD_SETS)
    codec: str
    options: dict = field(default_factory=dict)  # load-time codec options; "crop": "full"|"small" names a size
    model: str | None = None  # lossyload.lab.models name; None: measured for the loader only
    model_args: dict = field(default_factory=dict)
    baseline: bool = False  # the conventional decode-to-float row its experiment compares against
    published: str = ""  # the seed deck's figure for this row, quoted in the report
    epochs_factor: int = 1  # this row trains factor x the experiment's epochs (BNNs converge slowly)


ROWS = (
    Row(experiment="speech", name="mel", label="FLAC -> log-mel 128x128 float32", shards="mel", codec="mel",
        model="mel-cnn", baseline=True, published="84% · 119.52 MiB"),
    Row(experiment="speech", name="vq-codes", label="VQ 4-bit codes 64x64 uint8", shards="vq", codec="vq",
        options={"output": "codes"}),
    Row(experiment="speech", name="vq-bnn", label="VQ bit-planes 4x64x64 int8", shards="vq", codec="vq",
        options={"output": "bits"}, model="bnn", published="79% · 3.74 MiB", epochs_factor=2),
    Row(experiment="speech", name="vq-bits-cnn", label="VQ bit-planes 4x64x64 int8, float network", shards="vq", codec="vq",
        options={"output": "bits"}, model="vq-cnn"),
    Row(experiment="speech", name="vq-cnn", label="VQ codebook vectors 4x64x64 float32", shards="vq", codec="vq",
        options={"output": "vectors"}, model="vq-cnn"),
    Row(experiment="speech", name="encodec-codes", label="EnCodec RVQ codes 8x75 int16", shards="encodec",
        codec="encodec", options={"output": "codes"}),
    Row(experiment="speech", name="encodec", label="EnCodec latent 128x75 float32", shards="encodec",
        codec="encodec", options={"output": "latent"}, model="latent-cnn"),
    Row(experiment="images", name="pixels-pil", label="JPEG -> pixels {full}x{full}x3, PIL/torchvision",
        shards="jpeg", codec="rgb", options={"crop": "full", "backend": "pil"}),
    Row(experiment="images", name="pixels", label="JPEG -> pixels {full}x{full}x3, libjpeg-turbo", shards="jpeg",
        codec="rgb", options={"crop": "full", "backend": "turbo"}, model="mnv2-pixels", baseline=True),
    Row(experiment="images", name="pixels-small", label="JPEG -> pixels resampled {small}x{small}x3",
        shards="jpeg", codec="rgb", options={"crop": "small"}, model="mnv2-grid", model_args={"in_channels": 3},
        published="39%"),
    Row(experiment="images", name="latents", label="VAE latents {grid}x{grid}x4 int8",
        shards="vae", codec="vae", model="mnv2-grid", model_args={"in_channels": 4}, published="44%"),
    Row(experiment="images", name="dct", label="JPEG -> DCT 64+2x64 int16", shards="jpeg",
        codec="jpeg-dct", options={"crop": "full"}, model="mnv2-dct"),
    Row(experiment="images", name="dct-pre", label="DCT 64+2x64 int16, pre-extracted", shards="coefficients",
        codec="jpeg-dct", options={"crop": "full"}),
    Row(experiment="images", name="dct-16-8", label="DCT 16+2x8 int16, pre-extracted",
        shards="coefficients-16-8", codec="jpeg-dct", options={"crop": "full", "keep": (16, 8)}, model="mnv2-dct",
        model_args={"keep": (16, 8)}),
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
    """Augmentations: random crop + flip in each row's own domain for training, a centre view for testing;
    None: the codec's defaults (the audio rows)."""
    if row.codec == "rgb":
        s = options(row, sizes)["crop"]
        return [rgb_aug.RandomResizedCrop(size=s, scale=(0.35, 1.0)), rgb_aug.HFlip(p=0.5)] if train else [
            rgb_aug.ResizeCenterCrop(size=s)]
    if row.codec == "jpeg-dct":
        return [dct_aug.RandomCrop(size=sizes.full), dct_aug.HFlip(p=0.5)] if train else [
            dct_aug.CenterCrop(size=sizes.full)]
    if row.codec == "vae":
        return [latent_aug.RandomCrop(size=sizes.grid, padding=4), latent_aug.HFlip(p=0.5)] if train else []
    return None
