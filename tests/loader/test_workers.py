"""Persistent process workers, the shared-memory hand-over, the wire form and the device path.

Process workers start once and serve every epoch (the epoch and resume state handed to them), giving the
batches thread workers give; batches cross in preallocated slots (a slot not yet copied is never overwritten:
that batch goes inline); ``device="cpu"`` gives the host path's batches; ``num_workers="auto"`` resolves."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from lossyload import make_loader
from lossyload.loader import auto
from lossyload.loader.batch import Built
from lossyload.loader import handover
from lossyload.loader.handover import Handover
from lossyload.shard.job import ShardJob, run_job

from ..codecs.test_contract import VQ_CODEBOOK, tone_noise
from ..conftest import audio_bytes
from .conftest import make_image_folder
from .resume import batches, check_resume, same

pytestmark = pytest.mark.usefixtures("one_thread")

BS = 4


@pytest.fixture(scope="module")
def vae_ds(tmp_path_factory) -> Path:
    """14 int8 latent samples (tiny random VAE, 64 px, 2 views: the default transforms pick one) in 3 shards."""
    src = make_image_folder(tmp_path_factory.mktemp("vae-src"), 14)
    dest = tmp_path_factory.mktemp("vae") / "ds"
    run_job(ShardJob(src=str(src), dest=str(dest), codec="vae", maxcount=5, progress=False,
                     config={"model": "random:tiny", "resolution": 64, "fit_samples": 8, "views": 2}))
    return dest


@pytest.fixture(scope="module")
def vq_ds(tmp_path_factory) -> Path:
    """12 one-second clips as 4-bit VQ codes in 3 shards."""
    src = tmp_path_factory.mktemp("vq-src")
    for i in range(12):
        d = src / f"w{i % 3}"
        d.mkdir(exist_ok=True)
        (d / f"{i}.wav").write_bytes(audio_bytes(tone_noise(16000, 1.0, 300 + 40 * i, i)))
    dest = tmp_path_factory.mktemp("vq") / "ds"
    run_job(ShardJob(src=str(src), dest=str(dest), codec="vq", maxcount=5, progress=False,
                     config={"codebook": VQ_CODEBOOK}))
    return dest


def epochs(ld, n: int = 3) -> list[list]:
    return [batches(ld) for _ in range(n)]


def test_process_workers_persist_and_give_the_thread_workers_batches(jpeg_ds: Path) -> None:
    ld = make_loader(str(jpeg_ds), batch_size=BS, num_workers=2, return_keys=True, seed=3)
    got, pids = [], []
    for _ in range(3):
        got.append(batches(ld))
        pids.append(sorted(p.pid for p in multiprocessing.active_children()))
    assert len(pids[0]) == 2 and pids[0] == pids[1] == pids[2]  # the same two processes every epoch
    threads = make_loader(str(jpeg_ds), batch_size=BS, num_workers=2, worker_type="thread", return_keys=True,
                          seed=3)
    want = epochs(threads)
    assert all(same(a, b) for a, b in zip(got, want))
    assert [k for k, _, _ in got[0]] != [k for k, _, _ in got[1]]  # epochs differ: the epoch reached them
    ld.close()
    assert not multiprocessing.active_children()


def test_persistent_workers_follow_set_epoch_and_a_loaded_state(jpeg_ds: Path) -> None:
    make = lambda: make_loader(str(jpeg_ds), batch_size=BS, num_workers=2, return_keys=True, seed=1)  # noqa: E731
    ref = make()
    ref.set_epoch(4)
    reference = batches(ref)
    ld = make()
    batches(ld)  # epoch 0: the workers are running
    ld.set_epoch(4)
    assert same(batches(ld), reference)
    first = make()
    first.set_epoch(4)
    head = batches(first, 5)
    state = json.loads(json.dumps(first.state_dict()))
    ld.load_state_dict(state)  # into the running workers
    assert same(head + batches(ld), reference)


def test_resume_with_persistent_workers_on_the_wire_form(vae_ds: Path) -> None:
    check_resume(lambda: make_loader(str(vae_ds), batch_size=BS, num_workers=2, return_keys=True, device="cpu"),
                 stops=(1, 2))


@pytest.mark.parametrize("workers", [1, 2])
def test_latents_cross_as_int8_to_a_device_and_equal_the_host_path(vae_ds: Path, workers: int) -> None:
    procs = make_loader(str(vae_ds), batch_size=BS, num_workers=workers, return_keys=True, device="cpu")
    assert procs.dataset.wire_form()
    threads = make_loader(str(vae_ds), batch_size=BS, num_workers=workers, worker_type="thread", return_keys=True)
    assert not threads.dataset.wire_form()  # no device: the workers finish the batches
    a, b = epochs(procs, 2), epochs(threads, 2)
    assert all(same(x, y) for x, y in zip(a, b))
    assert a[0][0][1].dtype == torch.float32


@pytest.mark.parametrize("case", ["vae", "vq-bits", "rgb", "jpeg-dct"])
def test_process_workers_hand_over_the_wire_form_which_this_process_finishes(vae_ds: Path, vq_ds: Path,
                                                                             jpeg_ds: Path, case: str) -> None:
    url, kw = {"vae": (vae_ds, {}), "vq-bits": (vq_ds, {"options": {"output": "bits"}}),
               "rgb": (jpeg_ds, {"codec": "rgb", "options": {"crop": 24}}),
               "jpeg-dct": (jpeg_ds, {"options": {"crop": 16}})}[case]
    procs = make_loader(str(url), batch_size=BS, num_workers=1, return_keys=True, **kw)
    threads = make_loader(str(url), batch_size=BS, num_workers=1, worker_type="thread", return_keys=True, **kw)
    assert procs.dataset.wire_form() == (case != "jpeg-dct")  # int16 coefficients: nothing narrower to send
    assert not threads.dataset.wire_form()  # threads finish their batches: nothing crosses a process boundary
    got, want = epochs(procs, 2), epochs(threads, 2)
    assert all(same(a, b) for a, b in zip(got, want))
    x, y = got[0][0][1], want[0][0][1]
    assert all(a.dtype == b.dtype for a, b in zip(*((v.values() if isinstance(v, dict) else [v]) for v in (x, y))))


@pytest.mark.parametrize("case", ["vae", "vq-bits", "vq-vectors", "rgb", "jpeg-dct"])
@pytest.mark.parametrize("workers", [0, 2])
def test_device_cpu_equals_the_host_path(vae_ds: Path, vq_ds: Path, jpeg_ds: Path, case: str, workers: int) -> None:
    url, kw = {"vae": (vae_ds, {}), "vq-bits": (vq_ds, {"options": {"output": "bits"}}),
               "vq-vectors": (vq_ds, {"options": {"output": "vectors"}}),
               "rgb": (jpeg_ds, {"codec": "rgb", "options": {"crop": 24}}),
               "jpeg-dct": (jpeg_ds, {"options": {"crop": 16}})}[case]
    host = make_loader(str(url), batch_size=BS, return_keys=True, **kw)
    dev = make_loader(str(url), batch_size=BS, return_keys=True, num_workers=workers, device="cpu", **kw)
    assert dev.dataset.wire_form() == (case != "jpeg-dct")  # coefficients are int16 already
    if workers:
        host = make_loader(str(url), batch_size=BS, return_keys=True, num_workers=workers, worker_type="thread", **kw)
    assert same(batches(host), batches(dev))


def built(i: int, n: int = 3) -> Built:
    return Built({"a": np.full((n, 2), i, np.int8), "b": np.arange(n, dtype=np.float32) + i},
                 np.arange(n) + i, [f"k{i}"] * n)


def test_handover_slots_are_reused_only_once_copied() -> None:
    h = Handover(1, slots=2)

    def check(item, i: int, n: int = 3) -> None:
        [(xs, labels, report)] = h.unpack(item)
        assert xs["a"].dtype == torch.int8 and (xs["a"] == i).all() and xs["a"].shape == (n, 2)
        assert torch.equal(xs["b"], torch.arange(n, dtype=torch.float32) + i) and report == {"n": i}
        assert torch.equal(labels, torch.arange(n) + i)

    first = [h.pack(0, [(built(i), {"n": i})]) for i in range(2)]
    assert [p[0] for p in first] == ["slot", "slot"]
    assert [k for k, _, _ in first[0][5]] == [0, 1] and first[1][5] == []  # every buffer, made and sent at once
    late = h.pack(0, [(built(2), {"n": 2})])
    assert late[0] == "inline"  # slot 0 still holds group 0, not copied yet
    for i, p in enumerate(first):
        check(p, i)
    check(late, 2)
    again = h.pack(0, [(built(3), {"n": 3})])  # the lowest free slot (0, copied): reused, not sent again
    assert again[0] == "slot" and again[2] == 0 and again[5] == []
    held = h.pack(0, [(built(4), {"n": 4})])  # slot 1, while slot 0 is not copied yet
    assert held[0] == "slot" and held[2] == 1 and held[5] == []
    check(again, 3)
    check(held, 4)
    bigger = h.pack(0, [(built(5, n=999), {"n": 5})])  # slot 0, too small now: a new buffer, sent
    assert bigger[0] == "slot" and bigger[2] == 0 and [(k, v) for k, v, _ in bigger[5]] == [(0, 2)]
    check(bigger, 5, n=999)
    dropped = h.pack(0, [(built(6), {"n": 6})])  # slot 0 again: its new buffer was received, not sent again
    assert dropped[2] == 0 and dropped[5] == []
    h.read()  # a new pass: every earlier item has left the queue (this one unread)
    assert h.pack(0, [(built(7), {"n": 7})])[0] == "slot"
    unread = Handover(1, slots=2)  # a pass whose first item never reached the main process
    unread.pack(0, [(built(0), {"n": 0})])
    unread.read()
    resent = unread.pack(0, [(built(1), {"n": 1})])
    assert [k for k, _, _ in resent[5]] == [0, 1]  # the buffers go again with the next pass's first item
    [(xs, _, _)] = unread.unpack(resent)
    assert (xs["a"] == 1).all()


@pytest.mark.parametrize("mode", handover.MODES)
def test_quick_batches_cross_in_groups_the_first_alone(monkeypatch, mode: str) -> None:
    h = Handover(1, slots=2, mode=mode)
    monkeypatch.setattr(handover, "GROUP_SECONDS", 60.0)
    monkeypatch.setattr(handover, "GROUP_BATCHES", 3)
    pairs = [(built(i), {"n": i}) for i in range(6)] + [(None, {"n": 6})]  # the share ran out before batch 6
    groups = list(h.grouped(0, iter(pairs)))
    assert [len(g[6] if g[0] == "slot" else g[1]) for g in groups] == [1, 3, 3]
    out = [b for g in groups for b in h.unpack(g)]
    assert [r["n"] for _, _, r in out] == list(range(7)) and out[-1][:2] == (None, None)
    assert all((xs["a"] == i).all() and torch.equal(ys, torch.arange(3) + i) for i, (xs, ys, _) in enumerate(out[:6]))
    monkeypatch.setattr(handover, "GROUP_BATCHES", 16)
    monkeypatch.setattr(handover, "GROUP_BYTES", 20)  # each batch (6 + 12 + 24 bytes) closes its group
    assert len(list(h.grouped(0, iter(pairs[:3])))) == 3


def test_auto_picks_workers_from_the_codec_cost_and_the_cores(vae_ds: Path, jpeg_ds: Path, monkeypatch) -> None:
    light = make_loader(str(vae_ds), batch_size=BS, num_workers="auto", worker_type="auto")
    heavy = make_loader(str(jpeg_ds), batch_size=BS, num_workers="auto", worker_type="auto", codec="rgb",
                        options={"crop": 24})
    cores = auto.cores()
    assert (light.num_workers, light.worker_type) == auto.resolve(light.dataset, "auto", "auto")
    assert light.num_workers == (min(cores, 2) if cores > 1 else 0) and heavy.num_workers == (cores if cores > 1 else 0)
    monkeypatch.setattr(auto, "cores", lambda: 16)
    assert auto.resolve(light.dataset, "auto", "auto") == (2, "process")
    assert auto.resolve(heavy.dataset, "auto", "auto") == (16, "process")
    monkeypatch.setattr(auto, "cores", lambda: 1)
    assert auto.resolve(heavy.dataset, "auto", "auto")[0] == 0
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(str(vae_ds), batch_size=BS, num_workers="many")
