"""Shared fixture builders: every image, folder and tar a test uses is made here, in ``tmp_path``."""

from __future__ import annotations

import functools
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# gcsfs reads this at import: the GCS emulator does not answer its hierarchical-namespace probes (60 s stalls)
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


# ------------------------------------------------------------------------------------------- pixels
def synthetic_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image with photo-like content: detailed luma, smooth chroma, a little noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    luma = 128 + 50 * np.sin(xx / 5 + yy / 7 + phase[0]) + 15 * np.cos(yy / 3 + phase[1])
    luma += rng.normal(0.0, 3.0, luma.shape)
    cb = 40 * np.sin(xx / 17 + yy / 23 + phase[2])
    cr = 40 * np.cos(yy / 13 - xx / 19 + phase[0])
    rgb = np.stack([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb], -1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    arr = getattr(skimage.data, name)()
    arr.setflags(write=False)
    return arr


def photo(h: int, w: int, name: str = "chelsea", top: int = 0, left: int = 0) -> np.ndarray:
    """A real ``h x w`` RGB crop of a photograph bundled with scikit-image."""
    arr = _skimage_photo(name)
    assert top + h <= arr.shape[0] and left + w <= arr.shape[1], "crop outside the photo"
    return np.array(arr[top : top + h, left : left + w])


# ------------------------------------------------------------------------------------------- encoders
def jpeg_bytes(arr: np.ndarray, *, quality: int = 90, subsampling: int = 2, progressive: bool = False,
               mode: str | None = None, **kwargs) -> bytes:
    """Encode ``arr`` (uint8 [H, W, 3] or [H, W]) with PIL; ``subsampling`` 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0."""
    im = Image.fromarray(arr)
    if mode is not None:
        im = im.convert(mode)
    out = io.BytesIO()
    extra = {} if im.mode in ("L", "CMYK") else {"subsampling": subsampling}
    if "qtables" not in kwargs:  # PIL would scale given tables by the quality
        extra["quality"] = quality
    im.save(out, format="JPEG", progressive=progressive, optimize=False, **extra, **kwargs)
    return out.getvalue()


# Three distinct quantization tables (natural order): Y, Cb and Cr each get their own.
THREE_TABLES = [
    [int(v) for v in np.rint(1 + 0.4 * np.arange(64))],
    [int(v) for v in np.rint(2 + 0.5 * np.arange(64))],
    [int(v) for v in np.rint(3 + 0.6 * np.arange(64))],
]


def png_bytes(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------- datasets
def make_image_folder(root: Path, counts: dict[str, int], *, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """ImageFolder layout ``root/<class>/img_NNN.jpg`` with ``counts[class]`` distinct small JPEGs."""
    for ci, (cls, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            arr = synthetic_rgb(*size, seed=seed + 1000 * ci + i)
            write(root / cls / f"img_{i:03d}.jpg", jpeg_bytes(arr, quality=70 + (i % 25)))
    return root


def read_tar(path: Path) -> list[tuple[str, bytes]]:
    """``[(member name, bytes)]`` of a tar, in order, with the standard library."""
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def make_wds_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A WebDataset tar: for each ``(key, {ext: bytes})`` the members ``key.ext`` in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative POSIX name -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """Two classes, 7 + 5 small JPEGs."""
    return make_image_folder(tmp_path / "src", {"cat": 7, "dog": 5})


def audio_bytes(wave: np.ndarray, rate: int = 16000, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    """An audio file (WAV by default, 16-bit) of ``wave`` (``[frames]`` or ``[frames, channels]``)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def one_thread():
    """Audio tests run small spectrograms, k-means and convolutions: one thread is fastest, and does not stall
    (10-30x) when other processes keep the 2 cores busy. Restored afterwards."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 for the whole session (tests use their own buckets)."""
    from tests.servers import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """A fake-gcs-server on 127.0.0.1 for the whole session (tests use their own buckets)."""
    from tests.servers import GcsServer

    server = GcsServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket_name(request) -> str:
    """A bucket name unique to the test."""
    import hashlib

    return "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
