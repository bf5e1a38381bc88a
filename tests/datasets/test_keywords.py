"""Tests of the offline ``keywords`` dataset (espeak-ng keyword spotting) and the Speech Commands import."""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lossyload.cli import main
from lossyload.datasets import KeywordsConfig, build_keywords, import_speech_commands
from lossyload.datasets.keywords import (
    WORDS,
    fit_length,
    make_noise,
    mix_at_snr,
    plan_clips,
    split_sizes,
    voice_name,
)
from lossyload.errors import LossyloadError, MissingDependencyError

from ..conftest import dataset_files

sf = pytest.importorskip("soundfile")
if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("espeak-ng and sox are needed: apt-get install espeak-ng sox", allow_module_level=True)

SMALL = KeywordsConfig(dialects=("en-us", "en-gb"), variants=("f3", "m1", "Alex"), seed=3)
VOICES = {voice_name(f"{d}+{v}") for d in SMALL.dialects for v in SMALL.variants}
TINY = KeywordsConfig(words=("yes", "no", "up"), dialects=("en-us",), variants=("f3", "m1", "Alex"))


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x**2)))


def _by_clip(root: Path) -> dict[str, bytes]:
    """``{"<word>/<voice>": bytes}`` whatever the split."""
    return {p.relative_to(root).as_posix().split("/", 1)[1]: p.read_bytes() for p in sorted(root.glob("*/*/*"))}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("keywords")
    return dest, build_keywords(dest, SMALL, workers=2, progress=False)


def test_files_are_one_second_16k_mono_pcm16(small_build: tuple[Path, dict]) -> None:
    dest, summary = small_build
    files = sorted(dest.glob("*/*/*.wav"))
    assert len(files) == len(VOICES) * len(WORDS) == sum(summary["totals"].values())
    for path in files:
        info = sf.info(path)
        found = (info.samplerate, info.channels, info.frames, info.subtype, info.format)
        assert found == (16000, 1, 16000, "PCM_16", "WAV")
        audio = sf.read(path, dtype="int16")[0]
        assert 28000 < np.abs(audio).max() < 30000  # peak-normalised to -1 dBFS, not clipped
    assert (dest / "README.txt").read_text().startswith("keywords: keyword spotting")
    assert json.loads((dest / "keywords.json").read_text())["summary"] == summary
    assert not (dest / ".keywords-partial").exists()


def test_splits_are_by_voice(small_build: tuple[Path, dict]) -> None:
    dest, summary = small_build
    found = {split: {p.stem for p in (dest / split).glob("*/*")} for split in ("train", "validation", "test")}
    assert found == {split: set(voices) for split, voices in summary["voices"].items()}
    assert all(found.values())
    assert set.union(*found.values()) == VOICES
    assert sum(len(v) for v in found.values()) == len(VOICES)  # disjoint
    for split, voices in found.items():  # every voice says every word
        assert {p.relative_to(dest / split).as_posix() for p in (dest / split).glob("*/*")} == {
            f"{w}/{v}.wav" for w in WORDS for v in voices}


@pytest.mark.parametrize("n", [3, 4, 7, 10, 707])
def test_split_sizes(n: int) -> None:
    sizes = split_sizes(KeywordsConfig(), n)
    assert sum(sizes) == n and min(sizes) >= 1 and sizes[0] >= sizes[1]
    if n >= 100:
        assert abs(sizes[0] / n - 0.8) < 0.01


def test_build_is_deterministic_whatever_the_workers(small_build: tuple[Path, dict], tmp_path: Path) -> None:
    dest, summary = small_build
    assert build_keywords(tmp_path, SMALL, workers=1, progress=False) == summary
    assert dataset_files(tmp_path) == dataset_files(dest)


def test_other_seed_gives_other_audio(tmp_path: Path) -> None:
    a = build_keywords(tmp_path / "a", TINY, workers=1, progress=False)
    b = build_keywords(tmp_path / "b", replace(TINY, seed=1), workers=1, progress=False)
    clips_a, clips_b = _by_clip(tmp_path / "a"), _by_clip(tmp_path / "b")
    assert clips_a.keys() == clips_b.keys() and len(clips_a) == 9
    assert all(clips_a[k] != clips_b[k] for k in clips_a)
    assert sum(a["totals"].values()) == sum(b["totals"].values()) == 9


def test_plans_draw_within_ranges_and_cover_options() -> None:
    config = KeywordsConfig(dialects=("en-us", "en-gb", "en-029"), variants=tuple(f"m{i}" for i in range(1, 9)))
    plans = plan_clips(config, config.variants)
    assert len(plans) == 24 * 8 and plans == plan_clips(config, config.variants)
    assert all(20 <= p.pitch <= 80 and 120 <= p.speed <= 220 and 5 <= p.snr_db <= 30 for p in plans)
    assert {p.noise for p in plans} == {"white", "pink", "brown", "hum"}
    assert 0.35 < np.mean([p.reverb is not None for p in plans]) < 0.65
    assert all(p.label == sorted(WORDS).index(p.word) for p in plans)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 17.5, 30.0])
@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum"])
def test_mix_hits_the_snr(snr: float, kind: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speech = 0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(16000)
    noise = 5 * make_noise(rng, kind, 16000, 16000)
    mixed = mix_at_snr(speech, noise, snr)
    assert abs(_db(speech) - _db(mixed - speech) - snr) < 0.5
    # against the power of the word only (the rest of the clip silent)
    clip, where = fit_length(speech[:4000], 16000, 0.5)
    mixed = mix_at_snr(clip, noise, snr, speech_power=float(np.mean(clip[where] ** 2)))
    assert abs(_db(speech[:4000]) - _db(mixed - clip) - snr) < 0.5


def test_noise_colours() -> None:
    def low_share(x: np.ndarray) -> float:  # power share below 200 Hz
        p = np.abs(np.fft.rfft(x)) ** 2
        return float(p[:200].sum() / p.sum())

    kinds = ("white", "pink", "brown", "hum")
    shares = {k: low_share(make_noise(np.random.default_rng(1), k, 16000, 16000)) for k in kinds}
    assert shares["white"] < 0.05 < shares["pink"] < shares["brown"] and shares["hum"] > 0.8
    for kind in shares:
        x = make_noise(np.random.default_rng(2), kind, 8000, 16000)
        assert abs(np.mean(x**2) - 1) < 1e-9 and abs(np.mean(x)) < 1e-9


def test_fit_length_places_and_crops() -> None:
    word = np.arange(1, 101, dtype=float)
    for offset, start in ((0.0, 0), (0.999, 900), (0.5, 450)):
        clip, where = fit_length(word, 1000, offset)
        assert where == slice(start, start + 100) and np.array_equal(clip[where], word) and clip.sum() == word.sum()
    clip, where = fit_length(word, 40, 0.3)
    assert np.array_equal(clip, word[30:70]) and where == slice(0, 40)


def test_tars_members_labels_and_source(tmp_path: Path) -> None:
    from lossyload.shard.sources import open_source

    config = replace(TINY, tars=True, format="flac")
    summary = build_keywords(tmp_path / "a", config, workers=1, progress=False)
    assert not list((tmp_path / "a").glob("*/*/*"))
    labels = sorted(config.words)
    for split, voices in summary["voices"].items():
        with tarfile.open(tmp_path / "a" / f"{split}.tar") as tf:
            members = tf.getmembers()
            names = [m.name for m in members]
            assert all(m.mtime == 0 and m.uid == m.gid == 0 and m.uname == "" for m in members)
            expected = sorted(f"{w}/{v}" for w in config.words for v in voices)
            assert names == [f"{k}.{ext}" for k in expected for ext in ("flac", "cls")]
            for key in expected:
                assert tf.extractfile(f"{key}.cls").read() == str(labels.index(key.split("/")[0])).encode()
                audio, rate = sf.read(tf.extractfile(f"{key}.flac"), dtype="int16")
                assert rate == 16000 and audio.shape == (16000,)
        source = open_source(str(tmp_path / "a" / f"{split}.tar"))
        items = list(source.items)
        assert [(it.key, it.label) for it in items] == [(k, labels.index(k.split("/")[0])) for k in expected]
        assert all(it.error is None for it in items), items[0].error  # needs wav/flac in shard.sources
    assert build_keywords(tmp_path / "b", config, workers=1, progress=False) == summary
    assert dataset_files(tmp_path / "a") == dataset_files(tmp_path / "b")


def test_complete_build_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = build_keywords(tmp_path, TINY, workers=1, progress=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # neither espeak-ng nor sox is needed
    monkeypatch.setattr("lossyload.datasets.keywords.render_clip", _fail)
    assert build_keywords(tmp_path, TINY, workers=1, progress=False) == summary


def _fail(*args: object) -> bytes:
    raise AssertionError("a complete build was rebuilt")


def test_partial_or_other_build_is_redone(tmp_path: Path) -> None:
    summary = build_keywords(tmp_path, TINY, workers=1, progress=False)
    before = dataset_files(tmp_path)
    next(tmp_path.glob("train/*/*")).unlink()
    assert build_keywords(tmp_path, TINY, workers=1, progress=False) == summary
    assert dataset_files(tmp_path) == before
    other = replace(TINY, words=("go",))
    assert build_keywords(tmp_path, other, workers=1, progress=False)["labels"] == ["go"]
    assert {p.parent.name for p in tmp_path.glob("*/*/*")} == {"go"}


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_keywords(tmp_path, TINY, workers=1, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_missing_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingDependencyError, match="apt-get install espeak-ng sox"):
        build_keywords(tmp_path / "out", TINY, workers=1, progress=False)


def test_failing_espeak_names_voice_word_and_stderr(tmp_path: Path) -> None:
    config = replace(TINY, dialects=("xx-nonexistent",))
    with pytest.raises(LossyloadError, match=r"xx-nonexistent\+\w+, word '\w+'.*voice does not exist"):
        build_keywords(tmp_path, config, workers=1, progress=False)
    with pytest.raises(ValueError, match="unknown espeak-ng variants"):
        build_keywords(tmp_path / "v", replace(TINY, variants=("f3", "nope")), progress=False)


@pytest.mark.parametrize("kwargs", [
    {"words": ()}, {"words": ("yes", "yes")}, {"words": ("Yes",)}, {"dialects": ()}, {"max_voices": 2},
    {"split": (0.9, 0.1, 0.0)}, {"split": (0.5, 0.2, 0.2)}, {"seed": -1}, {"sample_rate": 100},
    {"seconds": 0}, {"pitch": (80, 20)}, {"speed": (10, 100)}, {"snr_db": (30.0, 5.0)}, {"reverb": 1.5},
    {"format": "mp3"},
])
def test_config_is_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        KeywordsConfig(**kwargs)


def _speech_commands(root: Path) -> Path:
    rate, rng = 16000, np.random.default_rng(0)
    for word in ("yes", "no", "wow"):
        for name in ("aa01_nohash_0", "aa01_nohash_1", "bb02_nohash_0", "cc03_nohash_0", "dd04_nohash_0"):
            (root / word).mkdir(parents=True, exist_ok=True)
            sf.write(root / word / f"{name}.wav", (rng.standard_normal(800) * 1000).astype(np.int16), rate)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav", np.zeros(1600, np.int16), rate)
    (root / "validation_list.txt").write_text("yes/bb02_nohash_0.wav\nno/bb02_nohash_0.wav\nwow/bb02_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc03_nohash_0.wav\nwow/dd04_nohash_0.wav\nno/cc03_nohash_0.wav\n")
    return root


def test_import_speech_commands(tmp_path: Path) -> None:
    src = _speech_commands(tmp_path / "sc")
    summary = import_speech_commands(src, tmp_path / "out", words=("yes", "no"), progress=False)
    files = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").glob("*/*/*")}
    assert files == {
        *(f"train/{w}/{n}.wav" for w in ("yes", "no") for n in ("aa01_nohash_0", "aa01_nohash_1", "dd04_nohash_0")),
        "validation/yes/bb02_nohash_0.wav", "validation/no/bb02_nohash_0.wav",
        "test/yes/cc03_nohash_0.wav", "test/no/cc03_nohash_0.wav",
    }
    for rel in files:
        assert (tmp_path / "out" / rel).read_bytes() == (src / rel.split("/", 1)[1]).read_bytes()
    assert summary["totals"] == {"train": 6, "validation": 2, "test": 2} and summary["labels"] == ["no", "yes"]
    assert summary["speakers"] == {"train": 2, "validation": 1, "test": 1}
    tars = import_speech_commands(src, tmp_path / "tars", words=("yes", "no"), tars=True, progress=False)
    with tarfile.open(tmp_path / "tars" / "test.tar") as tf:
        assert tf.getnames() == ["no/cc03_nohash_0.wav", "no/cc03_nohash_0.cls", "yes/cc03_nohash_0.wav",
                                 "yes/cc03_nohash_0.cls"]
        assert tf.extractfile("yes/cc03_nohash_0.cls").read() == b"1"
    assert tars["totals"] == summary["totals"]


def test_import_errors(tmp_path: Path) -> None:
    with pytest.raises(LossyloadError, match="not a directory"):
        import_speech_commands(tmp_path / "absent", tmp_path / "out", progress=False)
    src = _speech_commands(tmp_path / "sc")
    with pytest.raises(LossyloadError, match="no folder for word 'stop'"):
        import_speech_commands(src, tmp_path / "out", progress=False)
    (src / "testing_list.txt").unlink()
    with pytest.raises(LossyloadError, match="testing_list.txt"):
        import_speech_commands(src, tmp_path / "out", words=("yes",), progress=False)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["make-keywords", str(tmp_path / "kw"), "--voices", "3", "--workers", "1", "--quiet", "--seed", "2"]
    assert main(args) == 0
    assert "8 words" in capsys.readouterr().out
    assert len(list((tmp_path / "kw").glob("*/*/*.wav"))) == 3 * len(WORDS)
    src = _speech_commands(tmp_path / "sc")
    assert main(["make-keywords", str(tmp_path / "sc_out"), "--speech-commands", str(src), "--quiet"]) == 2
    assert "no folder for word" in capsys.readouterr().err
    assert main(["make-keywords", str(tmp_path / "x"), "--voices", "2", "--quiet"]) == 2
