"""Shared fixtures for the loader tests: small sharded datasets built once per session.

Every image is its own class (``c000`` .. ``c052``), so a sample's label *is* its global index in shard
order: labels identify samples in the loader's output.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lossyload.loader import plan
from lossyload.shard.job import ShardJob, run_job

N_SAMPLES = 53
MAXCOUNT = 7  # 53 samples -> 7 shards of 7 and one of 4
HEIGHT, WIDTH = 32, 48
SIZES = [MAXCOUNT] * (N_SAMPLES // MAXCOUNT) + [N_SAMPLES % MAXCOUNT]  # of jpeg_ds's shards


def make_image_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``root/cNNN/img.jpg``: one 48x32 colour JPEG per class, each with its own mean brightness."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(0, 256, size=3)
        noise = rng.integers(-40, 41, size=(HEIGHT, WIDTH, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        d = root / f"c{i:03d}"
        d.mkdir(parents=True)
        Image.fromarray(arr, "RGB").save(d / "img.jpg", quality=90)
    return root


def build(tmp_path_factory: pytest.TempPathFactory, name: str, n: int, **config) -> Path:
    src = make_image_folder(tmp_path_factory.mktemp(f"{name}-src"), n)
    dest = tmp_path_factory.mktemp(name) / "ds"
    # in folder order, so that a label is the sample's global index in shard order
    run_job(ShardJob(src=str(src), dest=str(dest), maxcount=MAXCOUNT, progress=False, config=config, shuffle=False))
    return dest


@pytest.fixture(scope="session")
def jpeg_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """53 samples of jpeg-dct with storage="jpeg", in 8 shards (7 x 7 + 4). Treat as read-only."""
    return build(tmp_path_factory, "jpeg", N_SAMPLES)


@pytest.fixture(scope="session")
def coef_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 samples of jpeg-dct with pre-extracted coefficients (storage="coefficients"). Read-only."""
    return build(tmp_path_factory, "coef", 10, storage="coefficients")


@pytest.fixture
def jpeg_copy(jpeg_ds: Path, tmp_path: Path) -> Path:
    """A private copy of ``jpeg_ds`` that a test may corrupt."""
    dest = tmp_path / "ds"
    shutil.copytree(jpeg_ds, dest)
    return dest


# ------------------------------------------------------------------------------------------- helpers


def planned_labels(
    rank: int, world_size: int, drop_last: bool, bs: int, *, seed: int, ep: int, shuffle: bool
) -> list[int]:
    """The labels the plan assigns to ``rank`` (in position order), from the shard sizes alone."""
    n = plan.samples_per_rank(N_SAMPLES, world_size, drop_last)
    nb = plan.batches_per_rank(N_SAMPLES, world_size, bs, drop_last)
    order = plan.shard_order(len(SIZES), seed=seed, epoch=ep, shuffle=shuffle)
    flat = [s * MAXCOUNT + i for s in order for i in range(SIZES[s])]
    return [flat[p % N_SAMPLES] for p in range(rank * n, rank * n + min(nb * bs, n))]


def rewrite(path: Path, edit) -> None:
    """Rewrite the tar at ``path`` with ``edit([(name, data)]) -> [(name, data)]`` applied to its members."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in edit(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
