"""Offline ``photos`` dataset: a small, honest "photo-of-origin" image-classification task.

Each class is one photograph bundled with scikit-image or scikit-learn; a sample is a random crop of it and
its label names the photo. Each photo is cut into tiles and some tiles per photo are test-only (and others
validation-only), so test and validation crops come from regions never trained on. The full description is ``TASK`` (also written to README.txt).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import io
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance
from tqdm import tqdm

from lossyload.errors import MissingDependencyError, require

TASK = """\
Task "photo-of-origin": each class is ONE photograph shipped inside scikit-image or scikit-learn; a sample
is a random crop of it and its label names the photograph. Each photo is cut into a grid x grid tile grid
and test_tiles seed-chosen tiles per photo are test-only, val_tiles others validation-only: every crop lies
inside a single tile of its own split, so a model is scored on regions of each photo it never saw (colour and texture statistics, not
memorised pixels). Crop: square-ish box (60-100% of the tile's short side, aspect 3:4..4:3), bicubic resize
to a random short side in short_side, random horizontal flip, brightness and contrast jitter of +-10%.
Caveats: the photos differ in resolution and some were JPEGs already, so sharpness and compression traces
are class cues too; one photo per class makes this a pipeline smoke test, not a benchmark.
Every random choice comes from a numpy Generator seeded by (seed, split, class index, sample index), so
the same config gives byte-identical files (given the same Pillow, libjpeg and zlib builds).
"""
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
_STREAMS = {"train": 0, "test": 1, "validation": 3}  # seed-stream tag of each split's samples
_TILE_STREAM = 2  # seed-stream tag of the test-tile choice
_VAL_TILE_STREAM = 4  # seed-stream tag of the validation-tile choice (among the tiles left for training)
STORAGE_MIX: tuple[tuple[str, float], ...] = (
    ("jpeg-420", 0.85),  # baseline JPEG, 4:2:0
    ("jpeg-progressive", 0.05),  # progressive JPEG, 4:2:0
    ("jpeg-444", 0.05),  # baseline JPEG, 4:4:4
    ("png", 0.03),
    ("jpeg-grey", 0.02),  # single-channel (mode L) JPEG
)
JPEG_QUALITY = (75, 95)  # inclusive range, every JPEG kind
Box = tuple[int, int, int, int]  # (left, top, right, bottom) in source pixels


@dataclass(frozen=True)
class PhotoSource:
    """One bundled photograph: class name, ``package:name`` to load, ``(width, height)``, stated origin."""

    name: str
    loader: str
    size: tuple[int, int]
    origin: str


SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("astronaut", "skimage:astronaut", (512, 512),
                "Eileen Collins, NASA Great Images; public domain (no known copyright restrictions)"),
    PhotoSource("chelsea", "skimage:chelsea", (451, 300), "Chelsea the cat, Stefan van der Walt; CC0"),
    PhotoSource("china", "sklearn:china.jpg", (640, 427), "Flickr user danielbuechele; CC BY 2.0"),
    PhotoSource("coffee", "skimage:coffee", (600, 400),
                "coffee cup, Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0"),
    PhotoSource("flower", "sklearn:flower.jpg", (640, 427), "Flickr user vultilion; CC BY 2.0"),
    PhotoSource("hubble_deep_field", "skimage:hubble_deep_field", (1000, 872),
                "Hubble eXtreme Deep Field, NASA/HubbleSite; public domain"),
    PhotoSource("immunohistochemistry", "skimage:immunohistochemistry", (512, 512),
                "IHC-stained colonic glands, CMMI; no known copyright restrictions"),
    PhotoSource("motorcycle", "skimage:stereo_motorcycle", (741, 500),
                "left view, Middlebury 2014 stereo benchmark (Scharstein et al.); no licence stated"),
    PhotoSource("retina", "skimage:retina", (1411, 1411),
                "fundus photograph, Mikael Haggstrom, Wikimedia Commons; CC0"),
    PhotoSource("rocket", "skimage:rocket", (640, 427), "DSCOVR launch on Falcon 9, SpaceX; public domain"),
)
CLASSES: tuple[str, ...] = tuple(s.name for s in SOURCES)


@dataclass(frozen=True, kw_only=True)
class PhotosConfig:
    """What to build. Changing any field changes the output (and invalidates a cached build)."""

    train_per_class: int = 200
    test_per_class: int = 50
    val_per_class: int = 0  # validation samples (early stopping), from val_tiles tiles apart from test's
    seed: int = 0
    short_side: tuple[int, int] = (128, 192)
    grid: int = 4
    test_tiles: int = 4
    val_tiles: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "short_side", tuple(self.short_side))
        lo, hi = self.short_side
        if min(self.train_per_class, self.test_per_class, self.val_per_class, self.seed) < 0:
            raise ValueError("PhotosConfig: counts and seed must be >= 0")
        if not 8 <= lo <= hi:
            raise ValueError(f"PhotosConfig: short_side must satisfy 8 <= min <= max, got {self.short_side}")
        if self.grid < 2 or not 1 <= self.test_tiles < self.grid * self.grid:
            raise ValueError(f"PhotosConfig: need grid >= 2 and 1 <= test_tiles < grid**2, got {self}")
        if not 0 <= self.val_tiles < self.grid * self.grid - self.test_tiles or (self.val_per_class and not self.val_tiles):
            raise ValueError(f"PhotosConfig: need 0 <= val_tiles < grid**2 - test_tiles, and val_tiles >= 1 for "
                             f"validation samples, got {self}")

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "short_side": list(self.short_side)}


@dataclass(frozen=True, kw_only=True)
class SamplePlan:
    """Everything needed to render one sample; ``box`` is (left, top, right, bottom) in source pixels."""

    split: str
    label: str
    index: int
    tile: int
    box: Box
    out_size: tuple[int, int]
    flip: bool
    brightness: float
    contrast: float
    storage: str
    quality: int

    @property
    def path(self) -> str:
        ext = "png" if self.storage == "png" else "jpg"
        return f"{self.split}/{self.label}/{self.label}_{self.index:05d}.{ext}"


def tile_boxes(size: tuple[int, int], grid: int) -> list[Box]:
    """The ``grid * grid`` tiles of an image of ``size`` (w, h), row-major, as (left, top, right, bottom)."""
    w, h = size
    xs = [w * i // grid for i in range(grid + 1)]
    ys = [h * i // grid for i in range(grid + 1)]
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(grid) for c in range(grid)]


@functools.lru_cache(maxsize=256)
def held_out_tiles(config: PhotosConfig, class_index: int) -> tuple[int, ...]:
    """The sorted tile indices of class ``class_index`` reserved for the test split."""
    rng = np.random.default_rng([config.seed, _TILE_STREAM, class_index])
    chosen = rng.choice(config.grid * config.grid, size=config.test_tiles, replace=False)
    return tuple(sorted(int(t) for t in chosen))


@functools.lru_cache(maxsize=256)
def validation_tiles(config: PhotosConfig, class_index: int) -> tuple[int, ...]:
    """The sorted tile indices of class ``class_index`` reserved for the validation split (none of the test's)."""
    test = held_out_tiles(config, class_index)
    rest = [t for t in range(config.grid * config.grid) if t not in test]
    rng = np.random.default_rng([config.seed, _VAL_TILE_STREAM, class_index])
    return tuple(sorted(int(t) for t in rng.choice(rest, size=config.val_tiles, replace=False)))


def split_tiles(config: PhotosConfig, split: str, class_index: int) -> tuple[int, ...]:
    """The tiles of class ``class_index`` whose crops make ``split``."""
    test, val = held_out_tiles(config, class_index), validation_tiles(config, class_index)
    if split == "test":
        return test
    if split == "validation":
        return val
    return tuple(t for t in range(config.grid**2) if t not in test and t not in val)


def _crop_box(rng: np.random.Generator, tile: Box) -> Box:
    left, top, right, bottom = tile
    tw, th = right - left, bottom - top
    side = min(tw, th) * rng.uniform(0.6, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = min(tw, max(1, round(side * aspect**0.5)))
    h = min(th, max(1, round(side / aspect**0.5)))
    x = left + int(rng.integers(0, tw - w + 1))
    y = top + int(rng.integers(0, th - h + 1))
    return (x, y, x + w, y + h)


def _out_size(rng: np.random.Generator, box: Box, short_side: tuple[int, int]) -> tuple[int, int]:
    w, h = box[2] - box[0], box[3] - box[1]
    s = int(rng.integers(short_side[0], short_side[1] + 1))
    return (round(s * w / h), s) if w >= h else (s, round(s * h / w))


def plan_sample(config: PhotosConfig, split: str, class_index: int, index: int) -> SamplePlan:
    """Draw sample ``index`` of class ``class_index`` in ``split``; pure and deterministic."""
    rng = np.random.default_rng([config.seed, _STREAMS[split], class_index, index])
    source, tiles = SOURCES[class_index], split_tiles(config, split, class_index)
    tile = tiles[int(rng.integers(len(tiles)))]
    box = _crop_box(rng, tile_boxes(source.size, config.grid)[tile])
    return SamplePlan(
        split=split, label=source.name, index=index, tile=tile, box=box,
        out_size=_out_size(rng, box, config.short_side), flip=bool(rng.random() < 0.5),
        brightness=float(rng.uniform(0.9, 1.1)), contrast=float(rng.uniform(0.9, 1.1)),
        storage=str(rng.choice([name for name, _ in STORAGE_MIX], p=[share for _, share in STORAGE_MIX])),
        quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
    )


def plan_samples(config: PhotosConfig, split: str) -> list[SamplePlan]:
    """All samples of ``split`` ("train", "validation" or "test"), class by class."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    count = {"train": config.train_per_class, "validation": config.val_per_class, "test": config.test_per_class}[split]
    return [plan_sample(config, split, c, i) for c in range(len(SOURCES)) for i in range(count)]


def _sklearn_image(name: str) -> Image.Image:
    """A scikit-learn sample image, read as ``load_sample_image`` does but without its slow import."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("'sklearn' is not installed: pip install 'lossyload[data]'")
    with Image.open(Path(spec.submodule_search_locations[0], "datasets", "images", name)) as image:
        return image.convert("RGB")


def load_source(source: PhotoSource) -> Image.Image:
    """Load a bundled photo as RGB with no network access; checks its size against ``source.size``."""
    package, name = source.loader.split(":")
    if package == "sklearn":
        image = _sklearn_image(name)
    else:
        array = getattr(require("skimage.data", "data"), name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle: (left, right, disp)
        image = Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    if image.size != source.size:
        raise ValueError(f"{source.loader}: expected size {source.size}, got {image.size}")
    return image


def render_sample(photo: Image.Image, plan: SamplePlan) -> bytes:
    """Crop, resize, flip, jitter and encode one sample as ``plan`` says."""
    image = photo.resize(plan.out_size, Image.Resampling.BICUBIC, box=plan.box)
    if plan.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Contrast(image).enhance(plan.contrast)
    image = ImageEnhance.Brightness(image).enhance(plan.brightness)
    buffer = io.BytesIO()
    if plan.storage == "png":
        image.save(buffer, format="PNG")
    elif plan.storage == "jpeg-grey":
        image.convert("L").save(buffer, format="JPEG", quality=plan.quality)
    else:
        subsampling = 0 if plan.storage == "jpeg-444" else 2
        progressive = plan.storage == "jpeg-progressive"
        image.save(buffer, format="JPEG", quality=plan.quality, subsampling=subsampling, progressive=progressive)
    return buffer.getvalue()


def _summary(config: PhotosConfig, plans: dict[str, list[SamplePlan]], nbytes: int) -> dict[str, Any]:
    return {
        "task": "photo-of-origin",
        "classes": list(CLASSES),
        "counts": {split: len(p) for split, p in plans.items()},
        "per_class": {"train": config.train_per_class, "validation": config.val_per_class,
                      "test": config.test_per_class},
        "storage": {split: dict(sorted(Counter(s.storage for s in p).items())) for split, p in plans.items()},
        "test_tiles": {name: list(held_out_tiles(config, c)) for c, name in enumerate(CLASSES)},
        "validation_tiles": {name: list(validation_tiles(config, c)) for c, name in enumerate(CLASSES)},
        "bytes": nbytes,
    }


def _readme(config: PhotosConfig, summary: dict[str, Any]) -> str:
    g = config.grid
    lines = [
        "photos: photo-of-origin classification, built offline by lossyload.datasets.photos",
        "",
        *TASK.splitlines(),
        "",
        f"config: {json.dumps(config.to_json())}",
        f"counts: {json.dumps(summary['counts'])}, per class {json.dumps(summary['per_class'])}",
        f"storage mix drawn per sample: {json.dumps(dict(STORAGE_MIX))}, JPEG quality {list(JPEG_QUALITY)}",
        f"storage counts: {json.dumps(summary['storage'])}",
        "",
        "classes: source, origin and licence as stated by scikit-image / scikit-learn, test tiles (T), "
        "validation tiles (V):",
    ]
    for c, s in enumerate(SOURCES):
        cells = "".join("T" if t in held_out_tiles(config, c) else "V" if t in validation_tiles(config, c) else "."
                        for t in range(g * g))
        rows = " / ".join(cells[r * g:(r + 1) * g] for r in range(g))
        lines.append(f"  {s.name}: {s.loader} {s.size[0]}x{s.size[1]}; {s.origin}; tiles {rows}")
    return "\n".join(lines) + "\n"


def _cached_summary(dest: Path, config: PhotosConfig) -> dict[str, Any] | None:
    try:
        record = json.loads((dest / "photos.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("version") != FORMAT_VERSION or record.get("config") != config.to_json():
        return None
    found = {split: sum(1 for p in (dest / split).glob("*/*") if p.is_file()) for split in SPLITS}
    found = {split: n for split, n in found.items() if split in record["summary"]["counts"]}
    return record["summary"] if found == record["summary"]["counts"] else None


def _prepare(dest: Path) -> None:
    """Empty ``dest`` of a previous (possibly partial) photos build; refuse to touch anything else."""
    marker = dest / ".photos-partial"
    if dest.exists() and any(dest.iterdir()):
        if not ((dest / "photos.json").exists() or marker.exists()):
            raise FileExistsError(f"{dest}: not empty and not a photos build; refusing to overwrite")
        for split in SPLITS:
            shutil.rmtree(dest / split, ignore_errors=True)
        (dest / "photos.json").unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _write_all(dest: Path, plans: list[SamplePlan], progress: bool) -> int:
    photos: dict[str, Image.Image] = {}
    nbytes = 0
    for plan in tqdm(plans, desc="make-photos", unit="img", disable=not progress):
        if plan.label not in photos:
            photos[plan.label] = load_source(SOURCES[CLASSES.index(plan.label)])
        data = render_sample(photos[plan.label], plan)
        path = dest / plan.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        nbytes += len(data)
    return nbytes


def build_photos(dest: str | os.PathLike[str], config: PhotosConfig = PhotosConfig(), *,
                 progress: bool = True) -> dict[str, Any]:
    """Write the ImageFolder tree ``dest/{train,validation,test}/<class>/`` plus README.txt; return the summary
    (no ``validation/`` when ``val_per_class`` is 0).

    A complete build of the same config (``dest/photos.json``, written last) is reused as is.
    """
    dest = Path(dest)
    cached = _cached_summary(dest, config)
    if cached is not None:
        return cached
    _prepare(dest)
    plans = {split: plan_samples(config, split) for split in SPLITS if split != "validation" or config.val_per_class}
    nbytes = _write_all(dest, [p for split in plans for p in plans[split]], progress)
    summary = _summary(config, plans, nbytes)
    (dest / "README.txt").write_text(_readme(config, summary))
    record = {"version": FORMAT_VERSION, "config": config.to_json(), "summary": summary}
    (dest / "photos.json").write_text(json.dumps(record, indent=1) + "\n")
    (dest / ".photos-partial").unlink()
    return summary
