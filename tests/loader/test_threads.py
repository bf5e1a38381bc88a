"""Thread workers (``worker_type="thread"``): the same batches, order, skips and resume as process workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossyload import make_loader
from lossyload.errors import LossyloadError
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader

from .resume import batches, check_resume, same

pytestmark = pytest.mark.usefixtures("one_thread")

BS = 4
CROP = 16


def run(url: Path, **kw) -> list:
    kw.setdefault("options", {"crop": CROP})
    return batches(make_loader(str(url), batch_size=BS, return_keys=True, shuffle_buffer=5, **kw))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_threads_give_the_process_workers_batches(jpeg_ds: Path, workers: int) -> None:
    threads = run(jpeg_ds, num_workers=workers, worker_type="thread", seed=4)
    assert same(threads, run(jpeg_ds, num_workers=workers, seed=4))
    assert len(threads) == len(make_loader(str(jpeg_ds), batch_size=BS))


def test_threads_on_the_batch_path(coef_ds: Path) -> None:
    assert same(run(coef_ds, num_workers=2, worker_type="thread"), run(coef_ds, num_workers=2))


@pytest.mark.parametrize("stops", [[0, 3, 7, 14]])
def test_resume_with_thread_workers(jpeg_ds: Path, stops: list[int]) -> None:
    def make() -> LossyLoader:
        ds = LossyDataset(str(jpeg_ds), batch_size=BS, options={"crop": CROP}, shuffle_buffer=5, drop_last=False)
        return LossyLoader(ds, num_workers=2, worker_type="thread", return_keys=True)

    check_resume(make, stops=stops)


def test_a_worker_error_reaches_the_caller(tmp_path: Path, jpeg_ds: Path) -> None:
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(jpeg_ds, ds)
    (ds / "shard-000002.tar").write_bytes(b"x" * 100)  # unreadable: on_error="raise" stops the epoch
    with pytest.raises(LossyloadError, match="shard-000002.tar"):
        run(ds, num_workers=2, worker_type="thread", shuffle=False)


def test_worker_type_is_checked(jpeg_ds: Path) -> None:
    with pytest.raises(ValueError, match="worker_type"):
        make_loader(str(jpeg_ds), batch_size=BS, worker_type="fiber")
