"""Weighted mixtures of shard sets: each epoch draws the sources in proportion to their weights (repeating a
small source with fresh shuffles, subsampling a large one so that successive epochs cover it), as a pure
function of (seed, epoch); each source keeps its own codec options, transforms, storage, cache and labels;
the outputs must have one spec; keys name the source; exact and elastic resume work as for one source."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

import lossyload
from lossyload import Source
from lossyload.errors import CodecError, LossyloadError
from lossyload.loader import plan
from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader

from .conftest import N_SAMPLES, build, rewrite
from .resume import check_resume
from .test_elastic import check_exactly_once

pytestmark = pytest.mark.usefixtures("one_thread")

N_B = 20
CROP = {"crop": 16}


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory) -> Path:
    """20 samples (3 shards of 7, 7, 6), another shard set of the same codec."""
    return build(tmp_path_factory, "mixb", N_B)


def mixture(a, b, *, rank: int = 0, world_size: int = 1, num_workers: int = 0, batch_size: int = 8,
            **kw) -> LossyLoader:
    kw.setdefault("options", CROP)
    kw.setdefault("shuffle_buffer", 6)
    srcs = [a if isinstance(a, Source) else Source(str(a), name="A"),
            b if isinstance(b, Source) else Source(str(b), name="B")]
    ds = LossyDataset(srcs, batch_size=batch_size, world=plan.World(rank=rank, world_size=world_size), **kw)
    return LossyLoader(ds, num_workers=num_workers, return_keys=True)


def keys_of(ld: LossyLoader) -> list[str]:
    return [k for _, _, ks in ld for k in ks]


def by_source(keys: list[str]) -> Counter:
    return Counter(k.split(":", 1)[0] for k in keys)


def test_make_loader_takes_a_weighted_list(jpeg_ds: Path, small_ds: Path):
    ld = lossyload.make_loader([str(jpeg_ds), str(small_ds)], weights=[3, 1], batch_size=8, options=CROP,
                               epoch_samples=200, return_keys=True)
    keys = keys_of(ld)
    names = [s.name for s in ld.dataset.sources]
    assert names == ["ds-0", "ds-1"]  # both folders are called "ds": told apart by their place
    assert len(keys) == 200 and by_source(keys) == {"ds-0": 150, "ds-1": 50}
    with pytest.raises(ValueError, match="weights= needs a list of sources"):
        lossyload.make_loader(str(jpeg_ds), weights=[1], batch_size=8)


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_weights_are_honoured_each_epoch_and_across_ranks(jpeg_ds: Path, small_ds: Path, epoch):
    """[3, 1] of 240 samples: B gives exactly 60 (25%) over the two ranks, each rank about a quarter; B's 20
    samples repeat 3 times each (fresh shard order each pass), A's 53 (180 / 53 = 3.4 passes, continuing
    where the last epoch stopped) 2 to 4 times."""
    got = []
    for rank in range(2):
        ld = mixture(jpeg_ds, small_ds, weights=[3, 1], epoch_samples=240, rank=rank, world_size=2)
        ld.set_epoch(epoch)
        mine = keys_of(ld)
        assert 0.22 <= by_source(mine)["B"] / len(mine) <= 0.28
        got += mine
    assert by_source(got) == {"A": 180, "B": 60}
    per = Counter(got)
    times = {name: [n for k, n in per.items() if k.startswith(name + ":")] for name in "AB"}
    assert set(times["B"]) == {3} and len(times["B"]) == N_B
    assert set(times["A"]) <= {2, 3, 4} and len(times["A"]) == N_SAMPLES


def test_batches_mix_the_sources(jpeg_ds: Path, small_ds: Path):
    ld = mixture(jpeg_ds, small_ds, weights=[1, 1], epoch_samples=80)
    mixed = [len(by_source(ks)) == 2 for _, _, ks in ld]
    assert sum(mixed) >= len(mixed) - 2


def test_a_subsampled_source_is_covered_by_successive_epochs(jpeg_ds: Path, small_ds: Path):
    """A gets 15 of a 30-sample epoch: epochs 0-2 hold 45 different A samples, epoch 3 completes the pass."""
    seen: list[str] = []
    for epoch in range(4):
        ld = mixture(jpeg_ds, small_ds, weights=[1, 1], epoch_samples=30, drop_last=False)
        ld.set_epoch(epoch)
        a = [k for k in keys_of(ld) if k.startswith("A:")]
        assert len(a) == 15
        seen += a
    assert len(set(seen[:45])) == 45
    assert set(seen) == {f"A:c{i:03d}/img" for i in range(N_SAMPLES)}


def test_order_is_a_pure_function_of_seed_and_epoch(jpeg_ds: Path, small_ds: Path):
    def epoch(e: int, seed: int = 0) -> list[str]:
        ld = mixture(jpeg_ds, small_ds, weights=[2, 1], epoch_samples=64, seed=seed)
        ld.set_epoch(e)
        return keys_of(ld)

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2) and epoch(1, seed=3) != epoch(1)


def test_exact_resume_of_a_mixture(jpeg_ds: Path, small_ds: Path):
    def make() -> LossyLoader:
        return mixture(jpeg_ds, small_ds, weights=[3, 1], epoch_samples=96)

    check_resume(make, stops=[0, 3, 7, 11])


def test_exact_resume_of_a_mixture_with_workers(jpeg_ds: Path, small_ds: Path):
    def make() -> LossyLoader:
        return mixture(jpeg_ds, small_ds, weights=[3, 1], epoch_samples=96, num_workers=2)

    check_resume(make, stops=[5])


def test_elastic_resume_of_a_mixture(jpeg_ds: Path, small_ds: Path):
    """2 ranks x batch 8 stopped after 2 batches, resumed by 3 ranks x batch 6 from rank 0's state."""
    kw = {"weights": [3, 1], "epoch_samples": 128}
    planned = [k for r in range(2) for k in keys_of(mixture(jpeg_ds, small_ds, rank=r, world_size=2, **kw))]
    head, state = [], None
    for r in range(2):
        ld = mixture(jpeg_ds, small_ds, rank=r, world_size=2, **kw)
        head += [k for _, _, ks in itertools.islice(ld, 2) for k in ks]
        state = state or json.loads(json.dumps(ld.state_dict()))
    tail = []
    for r in range(3):
        ld = mixture(jpeg_ds, small_ds, rank=r, world_size=3, batch_size=6, **kw)
        ld.load_state_dict(state)
        tail += keys_of(ld)
    # repeated samples are planned repeats (each source drawn more than it holds) or padding
    got, want = Counter(head + tail), Counter(planned)
    assert not want - got, "planned deliveries lost"
    assert sum((got - want).values()) < 3 * 6
    check_exactly_once(planned, head, tail, pad_limit=3 * 6 + sum(want.values()) - len(want))


def test_each_source_keeps_its_codec_options_and_labels(jpeg_ds: Path, small_ds: Path):
    """Eval mode (centre crop, no shuffle), the rgb codec over both: A decodes with libjpeg-turbo, B with PIL
    (its own options), B's labels mapped to 100 + label. Each row equals the row the source's own loader
    gives for that key."""
    labels_b = LossyDataset(str(small_ds)).labels
    opts = {"A": {"crop": 16, "backend": "turbo"}, "B": {"crop": 16, "backend": "pil"}}
    b = Source(str(small_ds), name="B", options=opts["B"], label_map={n: 100 + i for i, n in enumerate(labels_b)})
    ld = mixture(Source(str(jpeg_ds), name="A", options=opts["A"]), b, codec="rgb", train=False, weights=[1, 1],
                 epoch_samples=40)
    rows = {}
    for name, url in (("A", jpeg_ds), ("B", small_ds)):
        one = LossyLoader(LossyDataset(str(url), batch_size=8, codec="rgb", options=opts[name], train=False),
                          return_keys=True)
        for x, y, ks in one:
            rows.update({f"{name}:{k}": (x[i], int(y[i])) for i, k in enumerate(ks)})
    checked = Counter()
    for x, y, ks in ld:
        for i, k in enumerate(ks):
            want_x, want_y = rows[k]
            assert torch.equal(x[i], want_x), k
            assert int(y[i]) == (want_y + 100 if k.startswith("B:") else want_y), k
            checked[k[0]] += 1
    assert checked == {"A": 20, "B": 20}
    # the two backends really differ on some pixels: the check would see B decoded with A's options
    pil_vs_turbo = [not torch.equal(rows[k][0], rgb) for k, rgb in _turbo_rows(small_ds).items()]
    assert any(pil_vs_turbo)


def _turbo_rows(url: Path) -> dict:
    one = LossyLoader(LossyDataset(str(url), batch_size=8, codec="rgb", options={"crop": 16, "backend": "turbo"},
                                   train=False), return_keys=True)
    return {f"B:{k}": x[i] for x, _, ks in one for i, k in enumerate(ks)}


def test_sources_with_different_output_specs_are_refused(jpeg_ds: Path, small_ds: Path):
    with pytest.raises(CodecError, match=r"one output spec: source 'A' \(jpeg-dct\) gives .*source 'B' "
                                         r"\(jpeg-dct\) gives"):
        mixture(jpeg_ds, Source(str(small_ds), name="B", options={"crop": 16, "keep": [16, 8]}))
    with pytest.raises(CodecError, match=r"one output spec: .*source 'B' \(rgb\)"):
        mixture(jpeg_ds, Source(str(small_ds), name="B", codec="rgb", options={"crop": 16}))


def test_sources_whose_outputs_cannot_be_batched_are_refused(jpeg_ds: Path, small_ds: Path):
    """Same codec spec, but B's own transforms crop 32 px where A's default crops 16: found at the batch."""
    from lossyload.augment.dct import RandomCrop

    b = Source(str(small_ds), name="B", transforms=[RandomCrop(size=32, pad_if_needed=True)])
    ld = mixture(jpeg_ds, b, weights=[1, 1], epoch_samples=32)
    with pytest.raises(CodecError, match=r"cannot be batched together \(A: .*; B: "):
        keys_of(ld)


def test_a_label_map_must_cover_the_source(small_ds: Path, jpeg_ds: Path):
    with pytest.raises(LossyloadError, match=r"source 'B': label_map leaves labels unmapped: c001"):
        mixture(jpeg_ds, Source(str(small_ds), name="B", label_map={"c000": 0}))


def test_skips_are_counted_per_source(jpeg_ds: Path, small_ds: Path, tmp_path: Path):
    import shutil

    damaged = tmp_path / "b"
    shutil.copytree(small_ds, damaged)
    rewrite(damaged / "shard-000001.tar", lambda ms: [(n, d) for n, d in ms if n != "c008/img.jpg"])
    ld = mixture(jpeg_ds, Source(str(damaged), name="B"), weights=[1, 1], epoch_samples=40, on_error="skip")
    keys_of(ld)
    assert ld.skipped_by_source == {"A": 0, "B": 1} and "[c008/img]" in ld.skipped[0]


def test_traffic_and_cache_per_source_local_and_s3(jpeg_ds: Path, s3_server, tmp_path: Path):
    """A local source and one in the S3 server with a node-local cache of its own: the S3 source's shards are
    fetched once (epoch 0) and read from the cache after (epoch 1); the local source counts no traffic."""
    from lossyload.shard.job import ShardJob, run_job

    from .conftest import make_image_folder

    url = s3_server.bucket("mix-traffic") + "/ds"
    run_job(ShardJob(src=str(make_image_folder(tmp_path / "src", N_B)), dest=url, maxcount=7, progress=False,
                     storage_options=s3_server.storage_options))
    remote = Source(url, name="s3", storage_options=s3_server.storage_options, cache_dir=str(tmp_path / "cache"))
    ld = mixture(jpeg_ds, remote)  # default weights: the sources' sizes, each read whole every epoch
    first = keys_of(ld)
    assert len(first) == 72 and by_source(first)["s3"] in (19, 20)  # drop_last: 72 of the 53 + 20
    t0 = {k: vars(v).copy() for k, v in ld.source_traffic.items()}
    keys_of(ld)
    t1 = {k: vars(v).copy() for k, v in ld.source_traffic.items()}
    assert t0["A"] == t1["A"] == {"remote_bytes": 0, "cache_bytes": 0, "fetched": 0, "hits": 0}
    assert t0["s3"]["fetched"] == 3 and t0["s3"]["remote_bytes"] > 0 and t0["s3"]["hits"] == 0
    assert t1["s3"]["fetched"] == 0 and t1["s3"]["remote_bytes"] == 0 and t1["s3"]["hits"] == 3
    assert vars(ld.traffic) == t1["s3"]


def test_state_of_a_changed_mixture_is_refused_naming_what_changed(jpeg_ds: Path, small_ds: Path, coef_ds: Path):
    ld = mixture(jpeg_ds, small_ds, weights=[3, 1], epoch_samples=64)
    for _ in itertools.islice(ld, 2):
        pass
    state = json.loads(json.dumps(ld.state_dict()))
    with pytest.raises(LossyloadError, match=r"shares \(saved \[48, 16\], now \[32, 32\]\)"):
        mixture(jpeg_ds, small_ds, weights=[1, 1], epoch_samples=64).load_state_dict(state)
    with pytest.raises(LossyloadError, match=r"shards \(saved \['\w+', '(\w+)'\], now \['\w+', '(?!\1)\w+'\]\)"):
        mixture(jpeg_ds, coef_ds, weights=[3, 1], epoch_samples=64, options={"crop": 16}).load_state_dict(state)
