"""Fault injection: each damage is built on a private copy of ``jpeg_ds`` (53 samples ``c000/img`` .. ``c052/img``,
8 shards of 7 + 4, ``c{7k}`` .. ``c{7k+6}`` in shard ``k``), one epoch is streamed in order with
``on_error="skip"``, and the exact number of samples delivered (distinct keys, none repeated in one process),
skipped (each naming shard URL and key) and of batches the epoch ends short is checked, with delivered +
skipped == the planned samples (plus those a tar holds beyond its index's count, which are reported, never
delivered). With ``on_error="raise"`` the first bad sample is an
error naming shard URL and key.

Also: a loader worker killed mid-epoch, hostile members (pickles, unsafe names, huge sizes) and unsafe
indexes met through the dataset API."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import sys
import tarfile
import threading
import time
import tracemalloc
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from lossyload import make_loader, open_dataset
from lossyload.cli import main as cli_main
from lossyload.errors import DecodeError, IndexFormatError, LossyloadError, ShardError, WorkerError
from lossyload.index import Index
from lossyload.loader import watch

from .conftest import N_SAMPLES, build

pytestmark = pytest.mark.usefixtures("one_thread")

BS = 4
SHARD = "shard-000002.tar"  # c014/img .. c020/img


def key(i: int) -> str:
    return f"c{i:03d}/img"


ALL = [key(i) for i in range(N_SAMPLES)]


# ------------------------------------------------------------------------------------------- helpers


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def rewrite(ds: Path, edit, name: str = SHARD) -> None:
    """Rewrite shard ``name`` with ``edit([(member, bytes)]) -> [(member, bytes)]``; the index is kept."""
    path = ds / name
    path.write_bytes(tar_bytes(edit(tar_members(path))))


def offsets(ds: Path, name: str = SHARD) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(ds / name) as tar:
        return {m.name: m for m in tar.getmembers()}


def reindex(ds: Path, name: str = SHARD, samples: int | None = None) -> None:
    """Record shard ``name``'s current size and sha256 (and ``samples``) in the index."""
    index = Index.from_json((ds / "index.json").read_text())
    data = (ds / name).read_bytes()
    shards = [
        dataclasses.replace(s, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                            samples=s.samples if samples is None else samples) if s.url == name else s
        for s in index.shards
    ]
    (ds / "index.json").write_text(dataclasses.replace(index, shards=shards).to_json())


def url(ds: Path, name: str = SHARD) -> str:
    return f"{ds}/{name}"


def loader(ds: Path, on_error: str = "skip", **kw):
    kw = {"batch_size": BS, "shuffle": False, "drop_last": False, "train": False, "return_keys": True, **kw}
    return make_loader(str(ds), on_error=on_error, **kw)


def epoch(ds: Path, **kw):
    """``(loader, [keys in delivery order, padding included])`` of one in-order epoch in skip mode."""
    ld = loader(ds, **kw)
    keys = [k for _, y, ks in ld for k in ks]
    return ld, keys


_SKIP = re.compile(r"^(?P<url>\S+) \[(?P<key>[^\]]+)\]: (?P<reason>.*)$")


def parse_skips(skipped: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for s in skipped:
        m = _SKIP.match(s)
        assert m, f"skip entry does not name URL and key: {s!r}"
        out.append((m["url"], m["key"], m["reason"]))
    return out


@dataclass
class Expect:
    """What one in-order skip-mode epoch over a damaged copy must show."""

    lost: set[str]  # keys of the index's samples not delivered
    skips: list[tuple[str, str, str]]  # (shard name, key, regex the reason must match), in order
    extra: int = 0  # samples the tars hold beyond the index's count (reported as skips, not planned)
    planned: int = N_SAMPLES  # the index's sample count after the damage
    error: type[LossyloadError] = ShardError  # what on_error="raise" raises
    kw: dict = field(default_factory=dict)  # loader arguments


def check_epoch(ds: Path, want: Expect) -> tuple[int, int, int]:
    ld, keys = epoch(ds, **want.kw)
    delivered = set(keys)
    skips = parse_skips(ld.skipped)
    # exact: which keys came, which skips were reported (URL, key, reason), how many padded
    assert delivered == set(ALL) - want.lost, sorted(set(ALL) ^ delivered)
    assert [(u, k) for u, k, _ in skips] == [(url(ds, n), k) for n, k, _ in want.skips], ld.skipped
    for (_, _, reason), (_, _, pattern) in zip(skips, want.skips):
        assert re.search(pattern, reason), (reason, pattern)
    # one process: nothing repeated, the epoch ends the batches early that the lost samples would have filled
    assert len(keys) == len(delivered) and ld.padded == 0
    assert len(ld) == -(-want.planned // BS) and ld.shortfall == len(ld) - -(-len(keys) // BS)
    assert len(delivered) + len(skips) == want.planned + want.extra
    return len(delivered), len(skips), ld.shortfall


def check_raise(ds: Path, want: Expect) -> None:
    shard, first, _ = want.skips[0]
    with pytest.raises(LossyloadError) as e:
        list(loader(ds, on_error="raise", **want.kw))
    assert type(e.value) is want.error
    assert str(e.value).startswith(f"{url(ds, shard)} [{first}]: "), str(e.value)


# ------------------------------------------------------------------------------------------- damages
# Each takes a fresh copy, damages it and returns what an in-order epoch must show.


def corrupt_payload(ds: Path) -> Expect:
    """c016's JPEG bytes overwritten from its start (length kept): the codec refuses it."""
    m = offsets(ds)["c016/img.jpg"]
    raw = bytearray((ds / SHARD).read_bytes())
    raw[m.offset_data : m.offset_data + 64] = b"\xaa" * 64
    (ds / SHARD).write_bytes(bytes(raw))
    return Expect({key(16)}, [(SHARD, key(16), "^DecodeError: ")], error=DecodeError)


def truncated_mid_member(ds: Path) -> Expect:
    """Cut halfway through c017's JPEG: c014, c015 are delivered; c016 (complete, but the reader only knows a
    sample ended when the next key's member arrives) and c017..c020 are lost, counted by position."""
    m = offsets(ds)["c017/img.jpg"]
    (ds / SHARD).write_bytes((ds / SHARD).read_bytes()[: m.offset_data + m.size // 2])
    return Expect({key(i) for i in range(16, 21)},
                  [(SHARD, f"sample #{i}", r"shard unreadable after 2 samples: .*truncated tar member")
                   for i in range(2, 7)])


def truncated_in_member_at_block(ds: Path) -> Expect:
    """Cut at a 512-byte block boundary inside c017's JPEG data."""
    m = offsets(ds)["c017/img.jpg"]
    assert m.size > 512
    (ds / SHARD).write_bytes((ds / SHARD).read_bytes()[: m.offset_data + 512])
    return Expect({key(i) for i in range(16, 21)},
                  [(SHARD, f"sample #{i}", r"unreadable after 2 samples: .*truncated tar member \(512 of")
                   for i in range(2, 7)])


def truncated_between_members(ds: Path) -> Expect:
    """Cut just before c018's first header (a block boundary, no end-of-archive marker): reads as a shard
    of 4 samples; the 3 the index also lists are counted."""
    m = offsets(ds)["c018/img.jpg"]
    (ds / SHARD).write_bytes((ds / SHARD).read_bytes()[: m.offset])
    return Expect({key(i) for i in range(18, 21)},
                  [(SHARD, f"sample #{i}", "shard has 4 samples, index says 7") for i in range(4, 7)])


def missing_payload(ds: Path) -> Expect:
    rewrite(ds, lambda ms: [(n, d) for n, d in ms if n != "c019/img.jpg"])
    return Expect({key(19)}, [(SHARD, key(19), r"no 'jpg' member \(has \['cls'\]\)")])


def missing_cls(ds: Path) -> Expect:
    rewrite(ds, lambda ms: [(n, d) for n, d in ms if n != "c015/img.cls"])
    return Expect({key(15)}, [(SHARD, key(15), "missing or invalid 'cls' member")])


def _with_duplicate(ms):
    """c014's members again after c016's (not adjacent to the first c014)."""
    first = [(n, d) for n, d in ms if n.startswith("c014/")]
    at = max(i for i, (n, _) in enumerate(ms) if n.startswith("c016/")) + 1
    return ms[:at] + first + ms[at:]


def duplicate_key(ds: Path) -> Expect:
    """Index unchanged (7): the second c014 takes one of the 7 positions, so c020 is past the index's count
    and reported as a sample the index does not list."""
    rewrite(ds, _with_duplicate)
    return Expect({key(20)}, [(SHARD, key(14), r"duplicate key \(also sample #0 of this shard\)"),
                              (SHARD, key(20), "shard has 8 samples, index says 7: samples the index does not list")],
                  extra=1)


def duplicate_key_reindexed(ds: Path) -> Expect:
    """Index updated to the tar's 8 samples: only the second c014 is skipped (and padded)."""
    rewrite(ds, _with_duplicate)
    reindex(ds, samples=8)
    return Expect(set(), [(SHARD, key(14), r"duplicate key \(also sample #0 of this shard\)")], planned=N_SAMPLES + 1)


def split_key(ds: Path) -> Expect:
    """Members c015.jpg, c016.jpg, c015.cls, c016.cls: four groups of two keys. The first two lack their
    cls, the last two repeat a key; c019 and c020 are then past the index's 7."""
    def edit(ms):
        d = dict(ms)
        order = ["c015/img.jpg", "c016/img.jpg", "c015/img.cls", "c016/img.cls"]
        rest = [(n, b) for n, b in ms if n not in order]
        return rest[:2] + [(n, d[n]) for n in order] + rest[2:]

    rewrite(ds, edit)
    assert [n for n, _ in tar_members(ds / SHARD)][:6] == ["c014/img.jpg", "c014/img.cls", "c015/img.jpg",
                                                           "c016/img.jpg", "c015/img.cls", "c016/img.cls"]
    dup = r"duplicate key \(also sample #{} of this shard\)"
    return Expect({key(15), key(16), key(19), key(20)},
                  [(SHARD, key(15), "missing or invalid 'cls'"), (SHARD, key(16), "missing or invalid 'cls'"),
                   (SHARD, key(15), dup.format(1)), (SHARD, key(16), dup.format(2)),
                   (SHARD, key(19), "shard has 9 samples, index says 7"), (SHARD, key(20), "shard has 9 samples")],
                  extra=2)


def extra_samples(ds: Path) -> Expect:
    """Two samples appended to the shard, the index unchanged: reported by key, not delivered."""
    def edit(ms):
        d = dict(ms)
        return ms + [("x000/img.jpg", d["c014/img.jpg"]), ("x000/img.cls", b"1"),
                     ("x001/img.jpg", d["c015/img.jpg"]), ("x001/img.cls", b"2")]

    rewrite(ds, edit)
    reason = "shard has 9 samples, index says 7: samples the index does not list"
    return Expect(set(), [(SHARD, "x000/img", reason), (SHARD, "x001/img", reason)], extra=2)


def empty_shard_listed_three(ds: Path) -> Expect:
    (ds / SHARD).write_bytes(tar_bytes([]))
    reindex(ds, samples=3)
    return Expect({key(i) for i in range(14, 21)},
                  [(SHARD, f"sample #{i}", "shard has 0 samples, index says 3") for i in range(3)],
                  planned=N_SAMPLES - 7 + 3)


def flipped_byte_verified(ds: Path) -> Expect:
    """One payload byte changed, length kept, read with verify=True: the whole shard is refused before any of
    its samples is delivered; the other shards are delivered."""
    m = offsets(ds)["c018/img.jpg"]
    raw = bytearray((ds / SHARD).read_bytes())
    raw[m.offset_data + m.size // 2] ^= 0x01
    (ds / SHARD).write_bytes(bytes(raw))
    return Expect({key(i) for i in range(14, 21)},
                  [(SHARD, f"sample #{i}", "shard unreadable after 0 samples: .*sha256 does not match the index "
                                           r"\(verify\)") for i in range(7)],
                  kw={"verify": True})


def grown_shard_verified(ds: Path) -> Expect:
    """Bytes appended after the end-of-archive marker, read with verify=True: a size mismatch."""
    with open(ds / SHARD, "ab") as f:
        f.write(b"\0" * 512)
    return Expect({key(i) for i in range(14, 21)},
                  [(SHARD, f"sample #{i}", r"more than \d+ bytes, index says \d+ \(verify\)") for i in range(7)],
                  kw={"verify": True})


def unsafe_parent_name(ds: Path) -> Expect:
    """A member named ``../c016/img.jpg``: the tar is refused from there on (like a framing error)."""
    rewrite(ds, lambda ms: [("../" + n if n == "c016/img.jpg" else n, d) for n, d in ms])
    return Expect({key(i) for i in range(15, 21)},
                  [(SHARD, f"sample #{i}", r"unreadable after 1 samples: .*unsafe member name '\.\./c016/img\.jpg'")
                   for i in range(1, 7)])


def unsafe_absolute_name(ds: Path) -> Expect:
    rewrite(ds, lambda ms: [("/tmp/" + n if n == "c016/img.jpg" else n, d) for n, d in ms])
    return Expect({key(i) for i in range(15, 21)},
                  [(SHARD, f"sample #{i}", r"unreadable after 1 samples: .*unsafe member name '/tmp/c016/img\.jpg'")
                   for i in range(1, 7)])


DAMAGES = {f.__name__: f for f in [
    corrupt_payload, truncated_mid_member, truncated_in_member_at_block, truncated_between_members,
    missing_payload, missing_cls, duplicate_key, duplicate_key_reindexed, split_key, extra_samples,
    empty_shard_listed_three, flipped_byte_verified, grown_shard_verified,
    unsafe_parent_name, unsafe_absolute_name,
]}

# (delivered, skipped, batches short of len(loader)) of each damage's epoch: the figures the Expect tables
# above imply, spelled out
FIGURES = {
    "corrupt_payload": (52, 1, 1),
    "truncated_mid_member": (48, 5, 2),
    "truncated_in_member_at_block": (48, 5, 2),
    "truncated_between_members": (50, 3, 1),
    "missing_payload": (52, 1, 1),
    "missing_cls": (52, 1, 1),
    "duplicate_key": (52, 2, 1),
    "duplicate_key_reindexed": (53, 1, 0),
    "split_key": (49, 6, 1),
    "extra_samples": (53, 2, 0),
    "empty_shard_listed_three": (46, 3, 1),
    "flipped_byte_verified": (46, 7, 2),
    "grown_shard_verified": (46, 7, 2),
    "unsafe_parent_name": (47, 6, 2),
    "unsafe_absolute_name": (47, 6, 2),
}


def test_a_shard_listed_with_no_samples_is_refused(jpeg_copy: Path):
    """The shard tool never lists an empty shard, and a shard listed with 0 samples would never be opened: had
    it samples, they would be lost without a count. Such an index is refused when it is read."""
    (jpeg_copy / SHARD).write_bytes(tar_bytes([]))
    reindex(jpeg_copy, samples=0)
    with pytest.raises(IndexFormatError, match=f"shard #2 \\('{SHARD}'\\): samples = 0 is out of range"):
        open_dataset(str(jpeg_copy))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damage_is_counted_exactly(jpeg_copy: Path, damage: str):
    want = DAMAGES[damage](jpeg_copy)
    assert check_epoch(jpeg_copy, want) == FIGURES[damage]
    if want.skips:
        check_raise(jpeg_copy, want)
    else:  # nothing to raise about
        assert sum(len(k) for *_, k in loader(jpeg_copy, on_error="raise")) == want.planned


def test_verify_on_a_clean_set_delivers_everything(jpeg_ds: Path):
    ld, keys = epoch(jpeg_ds, verify=True)
    assert keys == ALL and ld.skipped == [] and ld.padded == 0


def test_flipped_byte_goes_unnoticed_without_verify(jpeg_copy: Path):
    """The control for ``flipped_byte_verified``: a mid-scan bit flip still decodes, so only verify catches it."""
    flipped_byte_verified(jpeg_copy)
    ld, keys = epoch(jpeg_copy)
    assert keys == ALL and ld.skipped == []


def test_extra_samples_are_reported_once_across_workers(jpeg_copy: Path):
    """bs=3, 2 workers: worker 0 reads shard 3 [0, 6), worker 1 [6, 7) and the two samples past the index's 7
    (only the reader whose range ends the shard reports them)."""
    def edit(ms):
        d = dict(ms)
        return ms + [("x000/img.jpg", d["c021/img.jpg"]), ("x000/img.cls", b"1"),
                     ("x001/img.jpg", d["c022/img.jpg"]), ("x001/img.cls", b"2")]

    rewrite(jpeg_copy, edit, "shard-000003.tar")
    ld, keys = epoch(jpeg_copy, batch_size=3, num_workers=2)
    assert sorted(keys) == ALL  # each once (the workers' batches interleave)
    assert [(u, k) for u, k, _ in parse_skips(ld.skipped)] == [(url(jpeg_copy, "shard-000003.tar"), "x000/img"),
                                                                (url(jpeg_copy, "shard-000003.tar"), "x001/img")]
    assert ld.padded == 0


# ------------------------------------------------------------------------------------------- raw-array codec


@pytest.fixture(scope="module")
def coef_set(tmp_path_factory) -> Path:
    """10 samples with pre-extracted coefficients (zstd ``dct.zst`` members: LLD1 header + int16 arrays)."""
    return build(tmp_path_factory, "faults-coef", 10, storage="coefficients")


def _edit_raw(payload: bytes, edit) -> bytes:
    raw = zstandard.ZstdDecompressor().decompress(payload)
    return zstandard.ZstdCompressor().compress(edit(raw))


def test_raw_arrays_with_wrong_shape_or_length(coef_set: Path, tmp_path: Path):
    """Members whose header shape does not fit the stored bytes, one int16 byte short, or not zstd at all:
    each is skipped by key (3 of 10), the rest delivered."""
    from lossyload.media.jpeg import _HEADER

    ds = tmp_path / "ds"
    shutil.copytree(coef_set, ds)
    name = "shard-000000.tar"

    def bigger_grid(raw):  # header says hb + 2 blocks: the bytes do not fit the shape
        magic, ky, kc, hb, wb = _HEADER.unpack_from(raw)
        return _HEADER.pack(magic, ky, kc, hb + 2, wb) + raw[_HEADER.size:]

    edits = {"c001/img.dct.zst": lambda p: _edit_raw(p, bigger_grid),
             "c003/img.dct.zst": lambda p: _edit_raw(p, lambda raw: raw[:-1]),
             "c005/img.dct.zst": lambda p: zlib.compress(p)}
    rewrite(ds, lambda ms: [(n, edits[n](d) if n in edits else d) for n, d in ms], name)
    ld = make_loader(str(ds), batch_size=BS, shuffle=False, drop_last=False, train=False, on_error="skip",
                     return_keys=True)
    keys = [k for *_, ks in ld for k in ks]
    bad = [key(1), key(3), key(5)]
    assert set(keys) == {key(i) for i in range(10)} - set(bad) and len(keys) == 7
    skips = parse_skips(ld.skipped)
    assert [(u, k) for u, k, _ in skips] == [(url(ds, name), k) for k in bad]
    assert all(r.startswith("DecodeError: bad pre-extracted coefficient member") for *_, r in skips), skips
    assert "does not fit" in skips[0][2] and "does not fit" in skips[1][2]
    assert ld.padded == 0 and ld.shortfall == 1  # one process: 7 samples in 2 batches, not 3
    with pytest.raises(DecodeError, match=rf"^{re.escape(url(ds, name))} \[c001/img\]: .*does not fit"):
        list(make_loader(str(ds), batch_size=BS, shuffle=False, train=False, on_error="raise"))


# ------------------------------------------------------------------------------------------- a killed worker


class Slow:
    """A transform that takes ``seconds`` per sample: the workers are slower than the main loop, so the main
    process spends its time waiting on them (as in real training, the other way round, see below)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, x, rng):
        time.sleep(self.seconds)
        return x


class Deadline:
    """``with Deadline(s):`` fails the test (instead of hanging the session) when the block takes > ``s``."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def _alarm(self, signum, frame):
        raise TimeoutError(f"no result within {self.seconds} s: hung")

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def slow_loader(ds: Path, **kw):
    ld = loader(ds, num_workers=2, shuffle=True, seed=5, shuffle_buffer=8, **kw)
    ld.dataset.transforms.append(Slow(0.01))
    return ld


def _main_thread_waits_on_workers(main: int) -> bool:
    """The main thread is blocked inside the DataLoader's queue wait (not in the loader's or the test's code)."""
    frame = sys._current_frames().get(main)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names) and names[0] == "select" and "_try_get_data" in names


def _children_gone(seconds: float) -> bool:
    end = time.monotonic() + seconds
    while multiprocessing.active_children():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_killed_worker_is_a_worker_error_and_the_state_resumes_the_epoch(jpeg_ds: Path):
    with Deadline(60):
        reference = [ks for *_, ks in slow_loader(jpeg_ds)]
        assert sorted(k for ks in reference for k in ks) == ALL and len(reference) == 14
        ld = slow_loader(jpeg_ds)
        it = iter(ld)
        got = [next(it)[2]]
        workers = multiprocessing.active_children()
        assert len(workers) == 2
        victim = max(workers, key=lambda p: p.pid)
        main = threading.main_thread().ident
        killed: list[float] = []

        def kill_while_waiting():
            end = time.monotonic() + 20
            while not _main_thread_waits_on_workers(main):
                assert time.monotonic() < end
                time.sleep(0.002)
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(time.monotonic())

        killer = threading.Thread(target=kill_while_waiting, daemon=True)
        killer.start()
        with pytest.raises(WorkerError) as e:
            for *_, ks in it:
                got.append(ks)
        noticed = time.monotonic() - killed[0]
        message = str(e.value)
        del e, it  # the traceback holds the DataLoader iterator: let it shut the other worker down
        killer.join()
        assert noticed < 3, f"the dead worker was noticed after {noticed:.1f} s"
        assert re.match(rf"epoch 0: a loader worker died after {len(got)} of 14 batches \(.*{victim.pid}.*\); "
                        "state_dict\\(\\) taken now resumes the epoch exactly", message), message
        assert 1 <= len(got) < 14 and got == reference[: len(got)]
        state = json.loads(json.dumps(ld.state_dict()))  # as saved to disk
        assert state["epoch"] == 0 and sum(b for b, _ in state["workers"]) == len(got)
        assert _children_gone(10), "the surviving worker was not shut down"

        fresh = slow_loader(jpeg_ds)
        fresh.load_state_dict(state)
        rest = [ks for *_, ks in fresh]
    assert got + rest == reference  # the same batches, none lost or repeated
    assert sorted(k for ks in got + rest for k in ks) == ALL
    assert fresh.skipped == [] and fresh.padded == 0 and fresh.epoch == 1
    print(f"\nworker killed after {len(got)} batches; WorkerError {noticed:.3f} s later")


@pytest.mark.parametrize("at", [1, 6])
def test_worker_dying_during_the_training_step_is_a_worker_error_at_the_next_step(jpeg_ds: Path, at: int):
    """torch notices the death in its SIGCHLD handler while the caller's code runs: the loader holds it and
    raises a WorkerError at its next step, with the batches delivered so far and a state that resumes."""
    with Deadline(60):
        reference = [ks for *_, ks in slow_loader(jpeg_ds)]
        ld = slow_loader(jpeg_ds)
        it = iter(ld)
        got = [next(it)[2] for _ in range(at)]
        victim = max(multiprocessing.active_children(), key=lambda p: p.pid)
        os.kill(victim.pid, signal.SIGKILL)
        time.sleep(1)  # "the training step": the worker dies meanwhile, and SIGCHLD arrives here
        with pytest.raises(WorkerError, match=rf"died after {at} of 14 batches \(.*{victim.pid}"):
            next(it)
        del it
        assert _children_gone(10), "the surviving worker was not shut down"
        state = json.loads(json.dumps(ld.state_dict()))
        fresh = slow_loader(jpeg_ds)
        fresh.load_state_dict(state)
        rest = [ks for *_, ks in fresh]
    assert got + rest == reference


def test_the_loader_wraps_sigchld_only_while_it_iterates(jpeg_ds: Path):
    """During the epoch lossyload's handler wraps torch's; after it, torch's own handler is back."""
    during = {signal.getsignal(signal.SIGCHLD) for _ in slow_loader(jpeg_ds)}
    assert during == {watch._handler}
    after = signal.getsignal(signal.SIGCHLD)
    assert after is not watch._handler and callable(after)  # torch's, installed by its first worker loader


def test_state_saved_after_a_damaged_epoch_starts_the_next_epoch_clean(jpeg_copy: Path):
    missing_cls(jpeg_copy)
    ld, _ = epoch(jpeg_copy)
    assert len(ld.skipped) == 1 and (ld.padded, ld.shortfall) == (0, 1)
    state = json.loads(json.dumps(ld.state_dict()))  # saved at the end of epoch 0
    assert state["epoch"] == 1 and state["workers"] == [[0, 0]]
    list(ld)  # epoch 1, uninterrupted
    fresh = loader(jpeg_copy)
    fresh.load_state_dict(state)
    list(fresh)  # epoch 1, after a restart
    assert fresh.epoch == ld.epoch == 2
    assert (len(fresh.skipped), fresh.shortfall) == (len(ld.skipped), ld.shortfall) == (1, 1)
    assert state["skipped"] == [] and state["padded"] == 0


def test_cls_outside_the_labels_is_skipped_like_an_invalid_one(jpeg_copy: Path):
    rewrite(jpeg_copy, lambda ms: [(n, b"53" if n == "c017/img.cls" else d) for n, d in ms])  # labels: 0..52
    ld = loader(jpeg_copy)
    labels = [int(v) for _, y, _ in ld for v in y]
    assert max(labels) < len(ld.dataset.labels) == N_SAMPLES
    assert [k for _, k, _ in parse_skips(ld.skipped)] == [key(17)]


def test_verify_against_an_index_claiming_a_huge_shard_is_a_counted_skip(jpeg_copy: Path):
    index = Index.from_json((jpeg_copy / "index.json").read_text())
    shards = [dataclasses.replace(s, bytes=10**15) if s.url == SHARD else s for s in index.shards]
    (jpeg_copy / "index.json").write_text(dataclasses.replace(index, shards=shards).to_json())
    ld, keys = epoch(jpeg_copy, verify=True)
    assert set(keys) == set(ALL) - {key(i) for i in range(14, 21)}
    assert len(ld.skipped) == 7 and all("index says 1000000000000000 (verify)" in s for s in ld.skipped)


# ------------------------------------------------------------------------------------------- hostile content


class _Opens:
    """Unpickling this calls ``open(path, "w")``: a file appears if anything unpickles a member."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickle_members_are_never_unpickled(jpeg_copy: Path, tmp_path: Path, capsys):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Opens(str(probe)))).close()
    assert probe.exists()  # the payload is hostile: unpickling it does create the file
    marker = tmp_path / "owned"
    payload = pickle.dumps(_Opens(str(marker)))

    def edit(ms):
        out = []
        for n, d in ms:
            out.append((n, d))
            if n.endswith(".cls"):
                k = n[: -len(".cls")]
                out += [(f"{k}.pickle", payload), (f"{k}.pth", payload), (f"{k}.pyd", payload)]
        return out

    rewrite(jpeg_copy, edit)
    reindex(jpeg_copy)  # a set that claims to be sound: only the extra members are unusual
    assert sum(n.endswith(".pyd") for n, _ in tar_members(jpeg_copy / SHARD)) == 7
    for kw in ({}, {"verify": True}, {"num_workers": 2}):
        ld, keys = epoch(jpeg_copy, **kw)
        assert sorted(keys) == ALL and ld.skipped == [], kw
    assert cli_main(["verify", str(jpeg_copy), "--no-progress"]) == 0
    assert cli_main(["verify", str(jpeg_copy), "--no-progress", "--no-decode"]) == 0
    assert " 53 samples" in capsys.readouterr().out
    assert not marker.exists()


def test_huge_member_header_is_refused_without_allocating(jpeg_copy: Path):
    """c016's JPEG header says 10 GB (GNU base-256 size): the reader refuses it without reading or allocating."""
    m = offsets(jpeg_copy)["c016/img.jpg"]
    raw = bytearray((jpeg_copy / SHARD).read_bytes())
    h = raw[m.offset : m.offset + 512]
    h[124:136] = b"\x80" + (10 * 10**9).to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    raw[m.offset : m.offset + 512] = h
    (jpeg_copy / SHARD).write_bytes(bytes(raw))
    assert tarfile.TarInfo.frombuf(bytes(h), "utf-8", "surrogateescape").size == 10 * 10**9  # a valid header
    want = Expect({key(i) for i in range(15, 21)},
                  [(SHARD, f"sample #{i}", "unreadable after 1 samples: .*member declares 10000000000 bytes, "
                                           "more than the 1073741824 allowed") for i in range(1, 7)])
    tracemalloc.start()
    try:
        figures = check_epoch(jpeg_copy, want)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert figures == (47, 6, 2)
    assert peak < 64 << 20, f"peak {peak:,} bytes"
    check_raise(jpeg_copy, want)


def _index_edit(ds: Path, edit) -> None:
    d = json.loads((ds / "index.json").read_text())
    edit(d)
    (ds / "index.json").write_text(json.dumps(d))


UNSAFE_INDEXES = {
    "pipe": (lambda d, m: d["shards"][2].update(url=f"pipe:touch {m}"), "shard URL"),
    "absolute": (lambda d, m: d["shards"][2].update(url=f"{m.parent}/outside/shard-000002.tar"), "shard URL"),
    "parent": (lambda d, m: d["shards"][2].update(url="../outside/shard-000002.tar"), "shard URL"),
    "asset": (lambda d, m: d["assets"].update({"../outside/shard-000002.tar": "0" * 64}), "shard URL"),
    "version": (lambda d, m: d.update(version=2), "unsupported index version 2"),
}


@pytest.mark.parametrize("case", [*UNSAFE_INDEXES, "not-json"])
def test_unsafe_or_malformed_index_is_refused_by_the_dataset(jpeg_copy: Path, case: str):
    """(``test_index.py`` covers the parser; here the refusal happens on a real dataset whose escaping URLs lead
    to an existing, valid shard, before anything is opened or run.)"""
    marker = jpeg_copy.parent / "owned"
    outside = jpeg_copy.parent / "outside"
    outside.mkdir()
    (outside / "shard-000002.tar").write_bytes((jpeg_copy / SHARD).read_bytes())
    if case == "not-json":
        (jpeg_copy / "index.json").write_text((jpeg_copy / "index.json").read_text()[:-20])
        message = "not valid JSON"
    else:
        edit, message = UNSAFE_INDEXES[case]
        _index_edit(jpeg_copy, lambda d: edit(d, marker))
    for make in (lambda: open_dataset(str(jpeg_copy)), lambda: loader(jpeg_copy)):
        with pytest.raises(IndexFormatError, match=message) as e:
            make()
        assert str(e.value).startswith(f"{jpeg_copy}/index.json: ")
    assert not marker.exists()
