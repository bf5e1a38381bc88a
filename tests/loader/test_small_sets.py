"""A shard set smaller than one batch: the training loader (``drop_last``) would yield no batch at all, which
it says when it is made (as the DALI backend does) instead of running empty epochs; the evaluation loader gives
the partial batch; a loader with nothing planned reports epoch 0, not 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossyload import make_loader
from lossyload.errors import ShardError
from lossyload.index import INDEX_NAME

from .conftest import N_SAMPLES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_training_loader_without_a_full_batch_is_an_error(jpeg_ds: Path) -> None:
    """Before: zero batches per epoch, without a word (and errors only iterating shows stayed hidden)."""
    with pytest.raises(ShardError, match=f"{N_SAMPLES} samples over 1 rank\\(s\\) leave no full batch of 64 "
                                         r"\(drop_last, the default with train=True\): pass drop_last=False"):
        make_loader(str(jpeg_ds), batch_size=64, options={"crop": 32})


def test_the_partial_batch_when_asked_for(jpeg_ds: Path) -> None:
    for ld in (make_loader(str(jpeg_ds), batch_size=64, options={"crop": 32}, drop_last=False),
               make_loader(str(jpeg_ds), batch_size=64, options={"crop": 32}, train=False)):
        assert len(ld) == 1 and [len(y) for _, y in ld] == [N_SAMPLES]


def test_a_fresh_loader_with_nothing_planned_is_at_epoch_0(jpeg_copy: Path) -> None:
    """Before: a fresh zero-batch loader's state_dict() said epoch 1."""
    d = json.loads((jpeg_copy / INDEX_NAME).read_text())
    d["shards"], _ = [], d.pop("totals")
    (jpeg_copy / INDEX_NAME).write_text(json.dumps(d))
    ld = make_loader(str(jpeg_copy), batch_size=8, options={"crop": 32})
    assert len(ld) == 0 and ld.state_dict()["epoch"] == 0
    assert list(ld) == [] and ld.state_dict()["epoch"] == 1  # after a pass over the (empty) epoch


def test_a_crop_larger_than_the_images_says_how_much_is_padding(jpeg_ds: Path, caplog, monkeypatch) -> None:
    """Before: a jpeg-dct crop larger than the image was zero-padded without a word (crop 512 on small photos:
    72% of the blocks zero). Now one warning per process says so, with the share of zero blocks."""
    import logging

    from lossyload.augment import dct

    monkeypatch.setattr(dct, "_PADDED", set())
    caplog.set_level(logging.WARNING, logger="lossyload")
    for train in (True, False):
        ld = make_loader(str(jpeg_ds), batch_size=8, options={"crop": 64}, train=train)
        assert sum(len(y) for _, y in ld) == len(ld) * 8 if train else N_SAMPLES
    said = [r.getMessage() for r in caplog.records if "zero-padded" in r.getMessage()]
    # 48x32 px images in a 64 px crop: 3x2 of 4x4 blocks of 16 px are image, 62.5% padding
    assert len(said) == 1 and "jpeg-dct crop 64 px: an image of 48x32 px (width x height) is smaller" in said[0]
    assert "(62% of the crop's blocks zero)" in said[0] or "(63% of the crop's blocks zero)" in said[0]
    caplog.clear()
    list(make_loader(str(jpeg_ds), batch_size=8, options={"crop": 32}, train=False))
    assert not [r for r in caplog.records if "zero-padded" in r.getMessage()]  # 32 px fits: nothing said


def test_a_crop_larger_than_the_shard_time_resize_is_an_error(tmp_path_factory) -> None:
    from lossyload.errors import CodecError

    from .conftest import build

    ds = build(tmp_path_factory, "resized", 3, resize=32)  # every short side is at most 32 px
    with pytest.raises(CodecError, match=r"crop 48 px is larger than every image's short side \(at most 32 px, the "
                                         r"shard-time resize\).*options=\{'crop': 32\}"):
        make_loader(str(ds), batch_size=2, options={"crop": 48})
    assert sum(len(y) for _, y in make_loader(str(ds), batch_size=2, options={"crop": 32}, train=False)) == 3
