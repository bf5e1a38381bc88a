"""The loader's error policy on damaged shard sets: every sample it does not deliver is counted and named;
across ranks padding keeps every rank's batch count equal, in one process the epoch ends early instead."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import pytest

from lossyload import World, make_loader, open_dataset
from lossyload.errors import DecodeError, ShardError
from lossyload.loader import plan

from .conftest import MAXCOUNT, N_SAMPLES, planned_labels, rewrite

BS = 4

SHARD = "shard-000002.tar"  # labels 14..20
SHARD_LABELS = set(range(2 * MAXCOUNT, 3 * MAXCOUNT))


def shard_url(ds: Path, name: str = SHARD) -> str:
    return f"{ds}/{name}"


def member_offsets(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def truncate_mid_member(ds: Path) -> None:
    path = ds / SHARD
    m = member_offsets(path)["c017/img.jpg"]
    path.write_bytes(path.read_bytes()[: m.offset_data + m.size // 2])


def break_checksum(ds: Path) -> None:
    path = ds / SHARD
    m = member_offsets(path)["c017/img.jpg"]
    raw = bytearray(path.read_bytes())
    raw[m.offset + 20] ^= 0x55  # a byte of the header's name field
    path.write_bytes(bytes(raw))


CORRUPTIONS = {"truncated": truncate_mid_member, "checksum": break_checksum}


def run(ds: Path, *, world_size=1, num_workers=0, drop_last=False, on_error="skip", **kw):
    """{rank: (loader, [labels per batch])} for one epoch."""
    out = {}
    for r in range(world_size):
        ld = make_loader(str(ds), batch_size=BS, num_workers=num_workers, world=World(rank=r, world_size=world_size),
                         options={"crop": 32}, drop_last=drop_last, on_error=on_error, **kw)
        out[r] = (ld, [y.tolist() for _, y in ld])
    return out


@pytest.fixture(params=sorted(CORRUPTIONS))
def corrupt_ds(request, jpeg_copy: Path) -> Path:
    CORRUPTIONS[request.param](jpeg_copy)
    return jpeg_copy


def _lost(ds: Path) -> set[int]:
    """Labels of the damaged shard that an in-process full pass does not deliver."""
    ((ld, batches),) = run(ds, shuffle=False).values()
    return SHARD_LABELS - {y for b in batches for y in b}


def test_damaged_shard_loses_a_bounded_tail(corrupt_ds: Path):
    lost = _lost(corrupt_ds)
    assert set(range(17, 21)) <= lost <= set(range(16, 21))  # 14, 15 come before the damage


@pytest.mark.parametrize("num_workers,worker_type,drop_last", [(0, "process", False), (2, "process", False),
                                                            (2, "thread", False), (2, "thread", True)])
def test_skip_in_one_process_never_repeats(corrupt_ds: Path, num_workers, worker_type, drop_last):
    """World size 1: every readable sample once, none repeated; the epoch ends early by the batches the skips
    cost (``shortfall``), and delivered + skipped == planned."""
    lost = _lost(corrupt_ds)
    ((ld, batches),) = run(corrupt_ds, seed=3, num_workers=num_workers, worker_type=worker_type,
                           drop_last=drop_last).values()
    items = [y for b in batches for y in b]
    assert len(items) == len(set(items))  # no repeats
    assert ld.padded == ld.dataset.padded == 0
    assert ld.shortfall == len(ld) - len(batches) > 0
    url = shard_url(corrupt_ds)
    assert all(s.startswith(url + " [") for s in ld.skipped), ld.skipped
    if drop_last:  # full batches only: a worker's partial last batch is dropped, as drop_last drops a remainder
        assert all(len(b) == BS for b in batches) and set(items) <= set(range(N_SAMPLES)) - lost
        assert len(items) + len(ld.skipped) <= N_SAMPLES
    else:
        assert set(items) == set(range(N_SAMPLES)) - lost
        assert len(items) + len(ld.skipped) == N_SAMPLES == len(items) + len(lost)
        assert len(batches) == sum(-(-n // BS) for n in _worker_counts(num_workers, lost, seed=3))
    assert ld.epoch == 1
    # the next epoch's plan starts afresh at full length, and state_dict after the last batch says so
    assert ld.state_dict()["epoch"] == 1 and ld.state_dict()["workers"] == [[0, 0]] * max(1, num_workers)


def _worker_counts(num_workers: int, lost: set[int], seed: int) -> list[int]:
    """Readable samples in each worker's planned share (world size 1, no drop_last)."""
    n = max(1, num_workers)
    out = []
    flat = planned_labels(0, 1, False, BS, seed=seed, ep=0, shuffle=True)
    nb = -(-N_SAMPLES // BS)
    for w in range(n):
        share = flat[w * nb // n * BS:(w + 1) * nb // n * BS]
        out.append(sum(1 for y in share if y not in lost))
    return out


def test_skip_in_one_process_resumes_exactly(corrupt_ds: Path):
    """A state taken mid-epoch, after a worker ran short, resumes the same shortened epoch; a state taken after
    its last batch starts the next epoch."""
    def loader():
        return make_loader(str(corrupt_ds), batch_size=BS, num_workers=2, worker_type="thread", seed=3,
                           options={"crop": 32}, drop_last=False, on_error="skip")

    ld = loader()
    full, states = [], []
    for _, y in ld:
        full.append(y.tolist())
        states.append(ld.state_dict())
    assert ld.shortfall > 0
    for cut in (1, len(full) - 2):
        again = loader()
        again.load_state_dict(states[cut - 1])
        assert [y.tolist() for _, y in again] == full[cut:]
        assert again.shortfall == ld.shortfall and again.epoch == 1
    assert states[-1]["epoch"] == 1


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("world_size,drop_last", [(2, True), (3, False)])
def test_skip_accounting_across_ranks_and_workers(corrupt_ds: Path, world_size, drop_last, num_workers):
    lost = _lost(corrupt_ds)
    runs = run(corrupt_ds, world_size=world_size, drop_last=drop_last, num_workers=num_workers, seed=1)
    nb = plan.batches_per_rank(N_SAMPLES, world_size, BS, drop_last)
    url = shard_url(corrupt_ds)
    total_skips = 0
    for r, (ld, batches) in runs.items():
        want = planned_labels(r, world_size, drop_last, BS, seed=1, ep=0, shuffle=True)
        assert len(ld) == nb and len(batches) == nb  # equal batch counts despite the skips
        items = [y for b in batches for y in b]
        assert len(items) == len(want)  # padding refills exactly what was skipped
        assert all(len(b) == BS for b in batches[:-1])
        skipped_here = [y for y in want if y in lost]
        assert len(ld.skipped) == len(skipped_here)
        assert all(s.startswith(url + " [") for s in ld.skipped)
        # every planned sample that was readable was delivered
        assert set(items) == set(want) - lost
        assert ld.padded == len(ld.skipped)  # reported from the workers too
        total_skips += len(ld.skipped)
    planned_all = [
        y for r in range(world_size) for y in planned_labels(r, world_size, drop_last, BS, seed=1, ep=0, shuffle=True)
    ]
    assert total_skips == sum(1 for y in planned_all if y in lost)


def test_raise_names_the_shard(corrupt_ds: Path):
    with pytest.raises(ShardError) as e:
        run(corrupt_ds, on_error="raise")
    assert str(e.value).startswith(shard_url(corrupt_ds) + " [")


def test_raise_from_a_worker_process_keeps_type_and_url(jpeg_copy: Path):
    # (torch then takes ~5 s to shut down a worker that raised: one such test only)
    truncate_mid_member(jpeg_copy)
    with pytest.raises(ShardError, match=r"shard-000002\.tar \[sample #\d\]: shard unreadable after \d samples"):
        run(jpeg_copy, on_error="raise", num_workers=1)


def test_skips_are_logged_at_epoch_end(corrupt_ds: Path, caplog):
    with caplog.at_level("WARNING", logger="lossyload"):
        ((ld, _),) = run(corrupt_ds).values()
    assert f"skipped {len(ld.skipped)} samples" in caplog.text


# ------------------------------------------------------------------------------------------- per-sample damage


def test_garbage_jpeg_payload_is_skipped_by_key(jpeg_copy: Path):
    path = jpeg_copy / "shard-000004.tar"  # labels 28..34
    m = member_offsets(path)["c030/img.jpg"]
    raw = bytearray(path.read_bytes())
    raw[m.offset_data : m.offset_data + m.size] = b"\0" * m.size
    path.write_bytes(bytes(raw))
    ((ld, batches),) = run(jpeg_copy).values()
    items = [y for b in batches for y in b]
    assert sorted(items) == sorted(set(range(N_SAMPLES)) - {30})  # each once: one process repeats nothing
    assert len(batches) == len(ld) - ld.shortfall == -(-(N_SAMPLES - 1) // BS)
    (skip,) = ld.skipped
    assert skip.startswith(shard_url(jpeg_copy, "shard-000004.tar") + " [c030/img]: DecodeError")
    assert ld.dataset.padded == 0
    with pytest.raises(DecodeError, match=r"shard-000004\.tar \[c030/img\]"):
        run(jpeg_copy, on_error="raise")


@pytest.mark.parametrize("cls", [None, b"", b"abc", b"-3"])
def test_missing_or_bad_cls_is_skipped_by_key(jpeg_copy: Path, cls):
    def edit(members):
        if cls is None:
            return [(n, d) for n, d in members if n != "c036/img.cls"]
        return [(n, cls if n == "c036/img.cls" else d) for n, d in members]

    rewrite(jpeg_copy / "shard-000005.tar", edit)  # labels 35..41
    ((ld, batches),) = run(jpeg_copy).values()
    assert sorted(y for b in batches for y in b) == sorted(set(range(N_SAMPLES)) - {36})
    (skip,) = ld.skipped
    assert skip.startswith(shard_url(jpeg_copy, "shard-000005.tar") + " [c036/img]:")
    assert "'cls'" in skip
    with pytest.raises(ShardError, match=r"shard-000005\.tar \[c036/img\].*'cls'"):
        run(jpeg_copy, on_error="raise")


def test_sample_without_payload_member(jpeg_copy: Path):
    rewrite(jpeg_copy / "shard-000005.tar", lambda ms: [(n, d) for n, d in ms if n != "c037/img.jpg"])
    ((ld, batches),) = run(jpeg_copy).values()
    assert {y for b in batches for y in b} == set(range(N_SAMPLES)) - {37}
    (skip,) = ld.skipped
    assert "[c037/img]: no 'jpg' member (has ['cls'])" in skip


def test_shard_with_fewer_samples_than_indexed(jpeg_copy: Path):
    rewrite(jpeg_copy / "shard-000005.tar", lambda ms: [(n, d) for n, d in ms if not n.startswith("c041/")])
    ((ld, batches),) = run(jpeg_copy, shuffle=False).values()
    assert {y for b in batches for y in b} == set(range(N_SAMPLES)) - {41}
    (skip,) = ld.skipped
    assert skip.startswith(shard_url(jpeg_copy, "shard-000005.tar") + " [sample #6]:")
    assert "index says 7" in skip
    with pytest.raises(ShardError, match="shard-000005.tar"):
        run(jpeg_copy, on_error="raise")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shard_missing_on_disk(jpeg_copy: Path, num_workers):
    (jpeg_copy / "shard-000006.tar").unlink()  # labels 42..48
    url = shard_url(jpeg_copy, "shard-000006.tar")
    ((ld, batches),) = run(jpeg_copy, num_workers=num_workers).values()
    assert {y for b in batches for y in b} == set(range(N_SAMPLES)) - set(range(42, 49))
    assert sum(map(len, batches)) == N_SAMPLES - 7 and ld.padded == 0
    assert len(ld.skipped) == 7
    assert Counter(s.split("]")[0] for s in ld.skipped) == Counter(f"{url} [sample #{i}" for i in range(7))
    assert all("shard unreadable after 0 samples" in s for s in ld.skipped)
    if num_workers == 0:  # (a worker that raised takes torch ~5 s to shut down: see above)
        with pytest.raises(ShardError) as e:
            run(jpeg_copy, on_error="raise")
        assert str(e.value).startswith(f"{url} [sample #0]")


def test_worker_with_nothing_readable_fails_loudly(jpeg_copy: Path):
    """Skip mode cannot pad a worker that read nothing: it raises, naming what was skipped."""
    (jpeg_copy / "shard-000000.tar").unlink()
    # 8 ranks, no shuffle: rank r reads exactly shard r
    ds = open_dataset(str(jpeg_copy), batch_size=BS, shuffle=False, drop_last=False, on_error="skip",
                      world=World(rank=0, world_size=8), options={"crop": 32})
    with pytest.raises(ShardError, match=r"no sample .* could be read \(7 skipped; first: .*shard-000000\.tar"):
        list(ds)
    other = open_dataset(str(jpeg_copy), batch_size=BS, shuffle=False, drop_last=False, on_error="skip",
                         world=World(rank=1, world_size=8), options={"crop": 32})
    assert [y.tolist() for _, y in other] == [[7, 8, 9, 10], [11, 12, 13]]


def test_on_error_is_validated(jpeg_ds: Path):
    with pytest.raises(ValueError, match="on_error"):
        open_dataset(str(jpeg_ds), on_error="ignore")
