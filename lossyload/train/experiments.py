"""The seeds' experiments as rows: which shard set, codec and model each representation trains with, and the
data each experiment needs (the bundled sets by default, or real datasets by path).

``speech`` (seed 1): keyword spotting on 128x128 log-mel floats (a full-precision CNN, the baseline) against
VQ codes fed as +-1 bit-planes to a binarized network, VQ codebook vectors to the same CNN family, and the
EnCodec continuous latent to a small 1-D CNN.

``images`` (seed 2 and the DCT-domain papers): MobileNetV2 on 224x224 pixels (the baseline), the same family
on 64x64 resampled pixels and on 64x64x4 VAE latents, and a MobileNetV2 whose stem takes the JPEG's
quantized luma/chroma DCT coefficients (chroma late-concatenated).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from ..augment import dct as dct_aug
from ..augment import latent as latent_aug
from ..augment import rgb as rgb_aug
from ..shard import ShardJob, run_job
from ..shard.job import config_from_dataset

EXPERIMENTS = ("speech", "images")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Input sizes of the image rows (``quick`` shrinks them for CI)."""

    full: int = 224  # pixel baseline crop, and the DCT row's crop
    small: int = 64  # resampled pixels
    resolution: int = 512  # pixels the VAE encodes: latents of resolution / 8
    resize: int = 256  # shard-time short side of the JPEGs the pixel and DCT rows read

    @classmethod
    def quick(cls) -> Sizes:
        return cls(full=64, small=32, resolution=128, resize=80)


@dataclass(frozen=True, kw_only=True)
class Row:
    experiment: str  # "speech" | "images"
    name: str  # short id, used by --rows
    label: str  # the report's label
    baseline: bool  # the conventional decode-to-float row its experiment compares against
    shards: str  # shard set: "mel", "vq", "encodec", "jpeg", "vae"
    codec: str
    options: dict
    model: str  # key of build_model
    seed: str = ""  # the seed's figure for this row, for the report
    epochs_factor: int = 1  # this row trains factor x the experiment's epochs (BNNs converge slowly)


ROWS = (
    Row(experiment="speech", name="mel", label="log-mel 128x128 float32 · CNN", baseline=True, shards="mel",
        codec="mel", options={}, model="mel-cnn", seed="84% · 119.52 MiB"),
    Row(experiment="speech", name="vq-bnn", label="VQ bit-planes 4x64x64 · BNN", baseline=False, shards="vq",
        codec="vq", options={"output": "bits"}, model="bnn", seed="79% · 3.74 MiB", epochs_factor=2),
    Row(experiment="speech", name="vq-cnn", label="VQ codebook vectors 4x64x64 · CNN", baseline=False,
        shards="vq", codec="vq", options={"output": "vectors"}, model="vq-cnn"),
    Row(experiment="speech", name="encodec", label="EnCodec latent 128x75 · 1-D CNN", baseline=False,
        shards="encodec", codec="encodec", options={"output": "latent"}, model="latent-cnn"),
    Row(experiment="images", name="pixels", label="pixels {full}x{full}x3 · MobileNetV2", baseline=True,
        shards="jpeg", codec="rgb", options={"crop": "full"}, model="mnv2-pixels"),
    Row(experiment="images", name="pixels-small", label="pixels resampled {small}x{small}x3 · MobileNetV2-64",
        baseline=False, shards="jpeg", codec="rgb", options={"crop": "small"}, model="mnv2-grid", seed="39%"),
    Row(experiment="images", name="latents", label="VAE latents {grid}x{grid}x4 int8 · MobileNetV2-64",
        baseline=False, shards="vae", codec="vae", options={}, model="mnv2-grid", seed="44%"),
    Row(experiment="images", name="dct", label="JPEG DCT 64+2x64 · DCT-MobileNetV2", baseline=False,
        shards="jpeg", codec="jpeg-dct", options={"crop": "full"}, model="mnv2-dct"),
)


def rows_of(experiment: str, names: tuple[str, ...] | None = None) -> list[Row]:
    return [r for r in ROWS if r.experiment == experiment and (names is None or r.name in names)]


def options(row: Row, sizes: Sizes) -> dict:
    """The row's load-time codec options with the size names filled in."""
    return {k: getattr(sizes, v) if k == "crop" else v for k, v in row.options.items()}


def label(row: Row, sizes: Sizes) -> str:
    return row.label.format(full=sizes.full, small=sizes.small, grid=sizes.resolution // 8)


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
        return [latent_aug.RandomCrop(size=sizes.resolution // 8, padding=4), latent_aug.HFlip(p=0.5)] if train else []
    return None


def build_model(row: Row, classes: int, width_mult: float) -> nn.Module:
    """A fresh model for ``row`` (seed torch first for a reproducible initialisation)."""
    from ..models import GridNet, LatentNet1d

    if row.model == "mel-cnn":
        return GridNet(1, classes, stem_stride=2)
    if row.model == "vq-cnn":
        return GridNet(4, classes)
    if row.model == "latent-cnn":
        return LatentNet1d(128, classes)
    if row.model == "bnn":
        from ..bnn import BinaryNet

        return BinaryNet(4, classes)
    from ..mobilenet import DctMobileNetV2, mobilenet_grid, mobilenet_pixels

    if row.model == "mnv2-pixels":
        return mobilenet_pixels(classes, width_mult=width_mult)
    if row.model == "mnv2-grid":
        return mobilenet_grid(classes, in_channels=4 if row.codec == "vae" else 3, width_mult=width_mult)
    return DctMobileNetV2(classes, keep=(64, 64), width_mult=width_mult)


# -- data ---------------------------------------------------------------------------------------------------
def speech_shards(data: str | None, out: str, *, quick: bool, encodec_weights: str, workers: int) -> dict[str, str]:
    """``{"train-mel": url, "test-vq": url, ...}``: the keyword clips (``data``: a folder with train/ and test/
    class subfolders, e.g. an imported Speech Commands; None: the bundled set, a small build when ``quick``)
    sharded with each audio codec. Complete shard sets of the same settings are reused."""
    from ..demo_audio import AudioDemoConfig, prepare_data, shard_all

    if data is None and quick:
        from ..datasets.keywords import KeywordsConfig, build_keywords

        data = os.path.join(out, "keywords-quick")
        build_keywords(data, KeywordsConfig(max_voices=5, dialects=("en-us",)), workers=workers, progress=False)
    cfg = AudioDemoConfig(data=data, out=out, encodec_weights=encodec_weights, shard_workers=workers)
    return shard_all(cfg, *prepare_data(cfg))


def image_shards(data: str | None, out: str, sizes: Sizes, *, quick: bool, vae: str, workers: int) -> dict[str, str]:
    """``{"train-jpeg": url, "test-vae": url, ...}``: an ImageFolder root (train/ and val/ or test/, e.g.
    Imagenette; None: the bundled photo set at 512-640 px, a small build when ``quick``) as JPEG shards
    resized to ``sizes.resize`` (read by the pixel and DCT rows) and as VAE latents of ``sizes.resolution``
    pixels (the test split with the training split's recorded quantization)."""
    from ..datasets.photos import PhotosConfig
    from ..demo import image_splits

    photos = PhotosConfig(train_per_class=4, test_per_class=2, short_side=(128, 160)) if quick else \
        PhotosConfig(short_side=(512, 640))
    train_dir, test_dir = image_splits(data, os.path.join(out, "photos-quick" if quick else "photos-512"), photos)
    urls: dict[str, str] = {}
    for split, src in (("train", train_dir), ("test", test_dir)):
        for kind in ("jpeg", "vae"):  # the vae sets are the latent demo's (reused when made with the same settings)
            name = f"images-{split}-jpeg{sizes.resize}" if kind == "jpeg" else f"latent-{split}-vae"
            dest = urls[f"{split}-{kind}"] = os.path.join(out, "shards", name)
            codec, config = ("jpeg-dct", {"resize": sizes.resize}) if kind == "jpeg" else (
                "vae", {"model": vae, "resolution": sizes.resolution})
            if kind == "vae" and split == "test":
                config = config_from_dataset(urls["train-vae"], "vae")
            summary = run_job(ShardJob(src=src, dest=dest, codec=codec, config=config, maxcount=500,
                                       workers=workers, progress=not quick))
            print(summary.format(), flush=True)
    return urls
