"""Audio through the whole pipeline: ``run_job`` / ``lossyload-shard`` on an audio class folder (and WebDataset
tars of audio), then ``LossyDataset``. ``vq``: the codebook fitted on the source, kept in the index, reused by
reruns, by ``--config-from`` and by a resumed run; ``encodec``: its codebook side file, checked at dataset
open; ``mel``: the float log-mel baseline."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lossyload import LossyDataset
from lossyload.media.audio import MelConfig, fit_clip, log_mel
from lossyload.codecs import create_codec
from lossyload.codecs.encodec import ASSET
from lossyload.codecs.vq import Vq
from lossyload.errors import LossyloadError, ShardError
from lossyload.index import Index
from lossyload.shard import ShardJob, job as job_module, run_job
from lossyload.commands.shard import main as shard_main
from lossyload.shard.job import config_from_dataset

from ..conftest import dataset_files, make_wds_tar, read_tar, write, audio_bytes

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]  # inside the encodec package
RATE = 16000


# ------------------------------------------------------------------------------------------- fixtures


def clip(cls: str, i: int, rate: int = RATE, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    """Two clearly different classes: "low" quiet low tones, "high" loud high tones in noise."""
    t = np.arange(int(round(rate * seconds))) / rate
    rng = np.random.default_rng((0 if cls == "low" else 1000) + i)
    if cls == "low":
        wave = 0.2 * np.sin(2 * np.pi * (150 + 20 * i) * t) + 0.003 * rng.standard_normal(t.shape)
    else:
        wave = 0.3 * np.sin(2 * np.pi * (2500 + 100 * i) * t) + 0.1 * rng.standard_normal(t.shape)
    return wave if channels == 1 else np.stack([wave, 0.5 * wave], axis=1)


GOOD = 12  # clips per class
SKIPPED = {"low/notes.wav": "not a readable audio file", "high/empty.wav": "empty: zero-length audio"}


def make_audio_folder(root: Path, per_class: int = GOOD, *, bad: bool = True, offset: int = 0) -> Path:
    for cls in ("low", "high"):
        for i in range(per_class):
            write(root / cls / f"clip_{i:03d}.wav", audio_bytes(clip(cls, i + offset)))
    if bad:
        write(root / "low" / "notes.wav", b"shopping list\n" * 10)  # not audio, named like audio
        write(root / "high" / "empty.wav", audio_bytes(np.zeros(0)))
        write(root / "high" / "cd_stereo.flac", audio_bytes(clip("high", 99, rate=44100, channels=2), 44100, "FLAC"))
    return root


def shard(src: Path | str, dest: Path, **kw) -> job_module.ShardSummary:
    kw.setdefault("shuffle", False)  # folder order: these tests find samples by position
    return run_job(ShardJob(src=str(src), dest=str(dest), progress=False, **kw))


def index_of(dest: Path) -> Index:
    return Index.from_json((dest / "index.json").read_text())


VQ_JOB = dict(codec="vq", config={"fit_samples": 16}, maxcount=8)


@pytest.fixture(scope="module")
def train_src(tmp_path_factory) -> Path:
    return make_audio_folder(tmp_path_factory.mktemp("audio") / "train")


@pytest.fixture(scope="module")
def vq_train(train_src: Path, tmp_path_factory) -> tuple[Path, job_module.ShardSummary]:
    dest = tmp_path_factory.mktemp("vq") / "train"
    return dest, shard(train_src, dest, **VQ_JOB)


@pytest.fixture
def no_fit(monkeypatch):
    def fit(self, samples):
        raise AssertionError("the codebook was fitted again")

    monkeypatch.setattr(Vq, "fit", fit)


def good_files(src: Path) -> list[tuple[str, int, Path]]:
    """(key, label, path) of the usable sources, in the job's order."""
    out = []
    for label, cls in enumerate(sorted(p.name for p in src.iterdir() if p.is_dir())):
        for p in sorted((src / cls).iterdir()):
            if f"{cls}/{p.name}" not in SKIPPED:
                out.append((f"{cls}/{p.stem}", label, p))
    return out


# ------------------------------------------------------------------------------------------- vq
def test_vq_job_fits_a_codebook_and_reports_what_it_did(train_src: Path, vq_train) -> None:
    dest, summary = vq_train
    index = index_of(dest)
    assert index.codec == "vq" and index.member == "vq.zst" and index.labels == ["high", "low"]
    book = np.asarray(index.config["codebook"])
    assert book.shape == (16, 4) and np.all(np.diff(book.mean(axis=1)) >= 0)
    assert index.config["fit_samples"] == 16 and index.assets == {}
    assert summary.samples == index.samples == 2 * GOOD + 1
    assert [s.samples for s in index.shards] == [8, 8, 8, 1]
    assert sorted(p.name for p in dest.iterdir()) == ["index.json"] + [f"shard-00000{i}.tar" for i in range(4)]
    # bad files are skipped with their reasons, in the summary and in the index
    assert summary.skipped == index.skipped
    assert index.skipped.keys() == {str(train_src / rel) for rel in SKIPPED}
    for rel, why in SKIPPED.items():
        assert why in index.skipped[str(train_src / rel)]
    # what fit_clip changed is recorded per sample in its shard, and counted in the summary
    transcoded = {k: v for s in index.shards for k, v in s.transcoded.items()}
    assert list(transcoded) == ["high/cd_stereo"]
    assert transcoded["high/cd_stereo"] == "downmixed: 2 channels to mono; resampled: 44100 Hz to 16000 Hz"
    assert summary.transcoded == Counter({"downmixed": 1, "resampled": 1})
    text = summary.format()
    assert "skipped 2" in text and "downmixed" in text and "resampled" in text


def test_summary_counts_transcoded_samples(vq_train) -> None:
    dest, summary = vq_train
    assert json.loads((dest / "index.json").read_text())["totals"]["transcoded"] == 1
    assert "\n  transcoded 1\n" in summary.format()


def test_vq_shards_hold_the_codes_of_the_stored_codebook(train_src: Path, vq_train) -> None:
    dest, _ = vq_train
    index = index_of(dest)
    codec = create_codec("vq", index.config)
    members = dict(m for s in index.shards for m in read_tar(dest / s.url))
    expected = good_files(train_src)
    assert set(members) == {f"{key}.{ext}" for key, _, _ in expected for ext in ("vq.zst", "cls")}
    for key, label, path in expected:
        assert members[f"{key}.cls"] == str(label).encode()
        assert members[f"{key}.vq.zst"] == codec.encode(path.read_bytes(), source=str(path)).payload, key
    # the two classes use the codebook differently (it was fitted on both)
    low = codec.decode(members["low/clip_000.vq.zst"])
    high = codec.decode(members["high/clip_000.vq.zst"])
    assert np.median(low) < np.median(high)


def test_vq_dataset_loads_bit_planes(train_src: Path, vq_train) -> None:
    dest, _ = vq_train
    ds = LossyDataset(str(dest), options={"output": "bits"}, batch_size=4)
    batches = list(ds)
    assert len(batches) == len(ds) == (2 * GOOD + 1) // 4
    for x, y in batches:
        assert isinstance(x, torch.Tensor) and x.dtype == torch.int8 and x.shape == (4, 4, 64, 64)
        assert set(torch.unique(x).tolist()) == {-1, 1}  # nothing masked: no default transforms
        assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    # in order, unshuffled: the first sample's bit-planes are its stored codes
    eval_ds = LossyDataset(str(dest), options={"output": "bits"}, train=False)
    bits, label = next(iter(eval_ds))
    codec = create_codec("vq", index_of(dest).config)
    key, first_label, path = good_files(train_src)[0]
    codes = codec.decode(codec.encode(path.read_bytes(), source=key).payload)
    rebuilt = sum(((bits[i].numpy().astype(int) + 1) // 2) << i for i in range(4))
    assert label == first_label
    np.testing.assert_array_equal(rebuilt, codes)
    crop = LossyDataset(str(dest), options={"output": "codes", "frames": 16}, batch_size=5)
    x, _ = next(iter(crop))
    assert x.dtype == torch.uint8 and x.shape == (5, 64, 16)


def test_rerun_is_a_no_op_without_fitting_again(train_src: Path, vq_train, no_fit) -> None:
    dest, first = vq_train
    before = dataset_files(dest)
    again = shard(train_src, dest, **VQ_JOB)  # the job config has no codebook; the index has one
    assert again.already_complete and again.samples == first.samples
    assert again.skipped == first.skipped
    assert dataset_files(dest) == before
    # the same job with its learned codebook given is the same too; another codebook is other settings
    config = config_from_dataset(str(dest), "vq")
    assert shard(train_src, dest, codec="vq", config=config, maxcount=8).already_complete
    other = {**config, "codebook": [[v + 1.0 for v in row] for row in config["codebook"]]}
    with pytest.raises(LossyloadError, match="other settings"):
        shard(train_src, dest, codec="vq", config=other, maxcount=8)
    with pytest.raises(LossyloadError, match="other settings"):
        shard(train_src, dest, codec="vq", config={"fit_samples": 32}, maxcount=8)
    assert dataset_files(dest) == before


def test_config_from_a_training_split_reuses_its_codebook(vq_train, tmp_path: Path, no_fit, capsys) -> None:
    dest, _ = vq_train
    train_config = index_of(dest).config
    config = config_from_dataset(str(dest), "vq")
    assert config == train_config
    with pytest.raises(LossyloadError, match="holds a 'vq' dataset, not 'mel'"):
        config_from_dataset(str(dest), "mel")
    val = make_audio_folder(tmp_path / "val", 2, bad=False, offset=50)
    summary = shard(val, tmp_path / "val_vq", codec="vq", config=config)
    assert summary.samples == 4
    assert index_of(tmp_path / "val_vq").config == train_config  # the same codebook, exactly
    # the same through the command line
    rc = shard_main([str(val), str(tmp_path / "val_cli"), "--codec", "vq", "--config-from", str(dest),
                     "--no-progress", "--keep-order"])
    assert rc == 0, capsys.readouterr().err
    assert index_of(tmp_path / "val_cli").config == train_config
    assert dataset_files(tmp_path / "val_cli") == dataset_files(tmp_path / "val_vq")
    # --set overrides what --config-from gives
    rc = shard_main([str(val), str(tmp_path / "val_z1"), "--codec", "vq", "--config-from", str(dest),
                     "--set", "zstd_level=1", "--no-progress"])
    assert rc == 0
    assert index_of(tmp_path / "val_z1").config == {**train_config, "zstd_level": 1}
    # a dataset of another codec is refused with a clear message
    assert shard_main([str(val), str(tmp_path / "x"), "--codec", "mel", "--config-from", str(dest),
                       "--no-progress"]) == 2
    assert "holds a 'vq' dataset, not 'mel'" in capsys.readouterr().err


class Interrupted(BaseException):
    """Stands for the process being stopped (like KeyboardInterrupt: not an Exception)."""


def test_interrupted_vq_job_resumes_with_the_saved_fit(train_src: Path, vq_train, tmp_path: Path,
                                                       monkeypatch) -> None:
    """Stopped right after the second shard's progress record (as ``test_job``'s "after-record" kill point, in
    process), the rerun reuses ``_progress/fit.json`` instead of fitting again and ends with the same files."""
    reference, _ = vq_train
    dest = tmp_path / "out"
    original = job_module._write_text

    def write_text(fs, path, text):
        original(fs, path, text)
        if path.endswith("_progress/000001.json"):
            raise Interrupted

    monkeypatch.setattr(job_module, "_write_text", write_text)
    with pytest.raises(Interrupted):
        shard(train_src, dest, **VQ_JOB)
    left = dataset_files(dest)
    assert "index.json" not in left and {"_progress/fit.json", "_progress/job.json"} <= set(left)
    assert {"shard-000000.tar", "shard-000001.tar"} <= set(left) and "shard-000002.tar" not in left
    saved = json.loads(left["_progress/fit.json"])
    assert saved["config"]["codebook"] == index_of(reference).config["codebook"]

    monkeypatch.setattr(job_module, "_write_text", original)
    monkeypatch.setattr(Vq, "fit", lambda self, samples: pytest.fail("the codebook was fitted again"))
    summary = shard(train_src, dest, **VQ_JOB)
    assert summary.resumed_shards == 2
    assert dataset_files(dest) == dataset_files(reference)  # same codebook, shards and index, no _progress


def test_fit_record_of_another_source_is_not_reused(train_src: Path, vq_train, tmp_path: Path) -> None:
    """A ``fit.json`` left by a run over another source content is not trusted: the rerun fits afresh."""
    reference, _ = vq_train
    dest = tmp_path / "out"
    fake = {"key": {"codec": "vq", "config": create_codec("vq", VQ_JOB["config"]).stored_config(), "source": "x"},
            "config": {**index_of(reference).config, "codebook": [[float(i)] * 4 for i in range(16)]}}
    write(dest / "_progress" / "fit.json", json.dumps(fake).encode())
    shard(train_src, dest, **VQ_JOB)
    assert index_of(dest).config == index_of(reference).config


# ------------------------------------------------------------------------------------------- encodec
@pytest.fixture(scope="module")
def encodec_set(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("encodec")
    src = make_audio_folder(root / "src", 2, bad=False)
    dest = root / "out"
    assert shard_main([str(src), str(dest), "--codec", "encodec", "--set", 'weights="random"', "--no-progress"]) == 0
    return src, dest


def test_encodec_job_writes_its_codebooks_beside_the_index(encodec_set) -> None:
    src, dest = encodec_set
    index = index_of(dest)
    assert index.codec == "encodec" and index.member == "ecq" and index.samples == 4
    assert index.config["weights"] == "random" and index.config["bandwidth"] == 6.0
    data = (dest / ASSET).read_bytes()
    assert index.assets == {ASSET: hashlib.sha256(data).hexdigest()}
    assert json.loads((dest / "index.json").read_text())["assets"] == {ASSET: hashlib.sha256(data).hexdigest()}
    books = np.load(io.BytesIO(data), allow_pickle=False)
    assert books.shape == (8, 1024, 128) and books.dtype == np.float32
    assert sorted(p.name for p in dest.iterdir()) == [ASSET, "index.json", "shard-000000.tar"]


def test_encodec_dataset_gives_codes_and_latents(encodec_set) -> None:
    _, dest = encodec_set
    (x, y), = list(LossyDataset(str(dest), batch_size=4))
    assert x.dtype == torch.int16 and x.shape == (4, 8, 75) and int(x.max()) < 1024 and y.shape == (4,)
    latents = list(LossyDataset(str(dest), options={"output": "latent"}, batch_size=2))
    assert len(latents) == 2
    for z, _ in latents:
        assert z.dtype == torch.float32 and z.shape == (2, 128, 75)
    # in order: the latent is the sum of the side file's codebook vectors picked by the codes
    codes = [c for c, _ in LossyDataset(str(dest), train=False)]
    lats = [z for z, _ in LossyDataset(str(dest), options={"output": "latent"}, train=False)]
    books = np.load(dest / ASSET)
    for c, z in zip(codes, lats):
        expected = books[np.arange(8)[:, None], c.numpy().astype(int)].sum(axis=0).T
        np.testing.assert_allclose(z.numpy(), expected, rtol=1e-5, atol=1e-5)
    low = LossyDataset(str(dest), options={"output": "latent", "bandwidth": 1.5}, train=False)
    z2, _ = next(iter(low))
    expected = books[np.arange(2)[:, None], codes[0].numpy()[:2].astype(int)].sum(axis=0).T
    np.testing.assert_allclose(z2.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_damaged_or_missing_side_file_is_refused_at_open(encodec_set, tmp_path: Path) -> None:
    _, dest = encodec_set
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    data = bytearray((copy / ASSET).read_bytes())
    data[-1] ^= 0x01  # one bit of one codebook value
    (copy / ASSET).write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"{ASSET}: sha256 does not match the index"):
        LossyDataset(str(copy), options={"output": "latent"})
    with pytest.raises(ShardError, match="sha256"):
        LossyDataset(str(copy))  # even for codes: the dataset as a whole does not match its index
    (copy / ASSET).unlink()
    with pytest.raises(ShardError, match=f"{ASSET}: side file named in the index is missing"):
        LossyDataset(str(copy), options={"output": "latent"})


def test_overwrite_removes_the_side_file(encodec_set, tmp_path: Path) -> None:
    src, dest = encodec_set
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    assert shard_main([str(src), str(copy), "--codec", "mel", "--no-progress"]) == 2  # other settings
    assert (copy / ASSET).exists()
    assert shard_main([str(src), str(copy), "--codec", "mel", "--overwrite", "--no-progress"]) == 0
    assert sorted(p.name for p in copy.iterdir()) == ["index.json", "shard-000000.tar"]
    assert index_of(copy).assets == {} and index_of(copy).codec == "mel"


def test_overwrite_replaces_a_dataset_whose_index_is_damaged(encodec_set, tmp_path: Path) -> None:
    src, dest = encodec_set
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    (copy / "index.json").write_text('{"version": 1, "codec": ')  # e.g. a copy that stopped short
    shard(src, copy, codec="mel", overwrite=True)
    assert index_of(copy).codec == "mel"


# ------------------------------------------------------------------------------------------- mel, tars
def test_mel_job_gives_float_log_mel_batches(train_src: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "mel"
    assert shard_main([str(train_src), str(dest), "--codec", "mel", "--maxcount", "10", "--no-progress",
                       "--keep-order"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2" in out and "resampled" in out
    index = index_of(dest)
    assert index.member == "flac" and index.samples == 2 * GOOD + 1
    assert index.skipped.keys() == {str(train_src / rel) for rel in SKIPPED}
    batches = list(LossyDataset(str(dest), batch_size=6))
    assert len(batches) == 4
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape == (6, 128, 128) and torch.isfinite(x).all()
    # in order (the first is the resampled stereo file): a 16 kHz 16-bit mono source is stored exactly
    (_, label0), (mel, label) = list(itertools.islice(LossyDataset(str(dest), train=False), 2))
    (_, first_label, _), (key, second_label, path) = good_files(train_src)[:2]
    assert key == "high/clip_000" and (label0, label) == (first_label, second_label)
    cfg = MelConfig()
    np.testing.assert_allclose(mel.numpy(), log_mel(fit_clip(path.read_bytes(), cfg, source=key)[0], cfg),
                               atol=1e-5)


def test_webdataset_tars_of_audio(tmp_path: Path) -> None:
    wav = audio_bytes(clip("low", 1))
    flac = audio_bytes(clip("high", 2), fmt="FLAC")
    make_wds_tar(tmp_path / "in" / "part-000.tar", [
        ("s/000", {"wav": wav, "cls": b"0"}),
        ("s/001", {"cls": b"1", "flac": flac}),
        ("s/002", {"wav": b"RIFF garbage", "cls": b"1"}),
        ("s/003", {"txt": b"a transcript", "cls": b"0"}),
        ("s/004", {"ogg": audio_bytes(clip("high", 3), fmt="OGG", subtype="VORBIS"), "cls": b"1"}),
    ])
    tar = tmp_path / "in" / "part-000.tar"
    summary = shard(tar, tmp_path / "out", codec="mel")
    assert summary.samples == 3
    index = index_of(tmp_path / "out")
    assert index.labels == ["0", "1"]
    assert index.skipped.keys() == {f"{tar}:s/002", f"{tar}:s/003"}
    assert "not a readable audio file" in index.skipped[f"{tar}:s/002"]
    assert "no image or audio member" in index.skipped[f"{tar}:s/003"]
    members = read_tar(tmp_path / "out" / "shard-000000.tar")
    assert [n for n, _ in members] == ["s/000.flac", "s/000.cls", "s/001.flac", "s/001.cls", "s/004.flac",
                                       "s/004.cls"]
    stored = sf.read(io.BytesIO(members[0][1]), dtype="float32")[0]
    np.testing.assert_array_equal(stored, sf.read(io.BytesIO(wav), dtype="float32")[0])  # 16 kHz 16-bit: as is
    xs = list(LossyDataset(str(tmp_path / "out"), train=False))
    assert [int(y) for _, y in xs] == [0, 1, 1]
    assert all(x.shape == (128, 128) and x.dtype == torch.float32 for x, _ in xs)
