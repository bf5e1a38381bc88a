"""The one-run benchmark's bookkeeping: which rows it measures, the ratio to the conventional pipeline of the
same modality and setting, and the targets table (the measurement itself is ``benchmarks.common.measure``)."""

from __future__ import annotations

from benchmarks import run
from benchmarks.run import REPS, Setting, annotate, rows_for, table, targets


def fake_results(rows: list[tuple], rate_of) -> list[dict]:
    """What ``measure`` returns, with samples/s given by ``rate_of(rep, setting)``."""
    out = []
    for label, _, codec, (rep, s) in rows:
        r = rate_of(rep, s)
        out.append({"representation": label, "samples_per_s": r, "spread": [r / 2, r * 2],
                    "cpu_ms_per_sample": 1.0, "input_bytes_per_sample": 10 if codec else 0,
                    "stored_bytes_per_sample": 1000.0, "first_batch_s": 0.1 if codec else None})
    return out


SETTINGS = [Setting("local", 0), Setting("local", 2), Setting("s3", 0)]


def test_rows_cover_every_representation_and_setting_once() -> None:
    rows = rows_for(SETTINGS)
    labels = [label for label, *_ in rows]
    assert len(labels) == len(set(labels))
    loaders = [rep for rep in REPS if rep.codec]
    limits = [rep for rep in REPS if not rep.codec]
    assert len(rows) == len(loaders) * len(SETTINGS) + len(limits) * 2  # read limits: once per storage
    assert {variant for _, variant, *_ in rows} == {f"{rep.shards}/{s}" for rep in REPS for s in ("local", "s3")}
    conventional = {rep.modality for rep in REPS if rep.conventional}
    assert conventional == {rep.modality for rep in REPS} == {"image", "audio"}


def test_ratios_are_to_the_conventional_pipeline_of_the_same_modality_and_setting() -> None:
    rows = rows_for(SETTINGS)
    speeds = {"rgb · libjpeg-turbo": 100.0, "mel · WAV -> log-mel float32": 50.0}

    def rate_of(rep, s):
        return speeds.get(rep.label, 1000.0) * (2 if s.workers else 1) * (0.5 if s.storage == "s3" else 1)

    results = fake_results(rows, rate_of)
    annotate(results, rows)
    got = {(r["label"], r["storage"], r["workers"]): r for r in results}
    assert got[("vae · int8 4x32x32, flip", "local", 2)]["ratio"] == 1000 * 2 / (100 * 2)
    assert got[("vq · bit-planes int8", "s3", 0)]["ratio"] == 1000 * 0.5 / (50 * 0.5)
    assert got[("rgb · libjpeg-turbo", "s3", 0)]["ratio"] == 1.0
    assert got[("read limit · int8 shards", "local", 0)]["ratio"] == 1000 / 100  # limits: their samples/s
    assert got[("vq · bit-planes int8", "local", 0)]["mb_per_s"] == 1000 * 1000 / 1e6
    text = table(results)
    assert text.count("\n") == len(results) + 1 and "| 20.00x |" in text


def test_targets_say_met_or_missed_with_the_figure() -> None:
    rows = rows_for([Setting("local", 0)])

    def rate_of(rep, s):
        return {"rgb · libjpeg-turbo": 100.0, "mel · WAV -> log-mel float32": 100.0, "vq · bit-planes int8": 2500.0,
                "encodec 6 kbps · codes int16": 1900.0, "read limit · int8 shards": 4000.0}.get(rep.label, 3000.0)

    results = fake_results(rows, rate_of)
    annotate(results, rows)
    text = targets(results)
    assert "| vq >= 40x | 25.00x MISSED |" in text
    assert "| vae latents >= 40x | 30.00x MISSED |" in text
    assert "| jpeg-dct pre-extracted >= 8x | 30.00x met |" in text
    assert "| latent loader >= 80% of the read limit | 75% MISSED |" in text  # 3000 / 4000
    assert len(text.splitlines()) == 2 + len(run.TARGETS) + 1


def test_workers_and_storage_targets_compare_within_the_run() -> None:
    settings = [Setting("local", 0), Setting("local", 1, "thread"), Setting("local", 1, "process"),
                Setting("s3", 0), Setting("s3", 1, "thread"), Setting("s3", 1, "process")]
    rows = rows_for(settings)

    def rate_of(rep, s):
        speed = {0: 1000.0, 1: 1100.0 if s.kind == "thread" else 500.0}[s.workers]
        return speed * (0.6 if s.storage == "s3" else 1)

    results = fake_results(rows, rate_of)
    annotate(results, rows)
    workers = run.worker_targets(results)
    assert "| vae · int8 4x32x32, flip | 0.50x MISSED | 1.10x met | 0.50x MISSED | 1.10x met |" in workers
    assert workers.splitlines()[0].count("/ 0w") == 4
    storage = run.storage_targets(results)
    assert "| vq · bit-planes int8 | 60% MISSED | 60% MISSED | 60% MISSED |" in storage
    assert run.storage_targets([r for r in results if r["storage"] == "local"]) == "(no S3 rows in this run)"


def test_workers_table_flags_decode_bound_rows_and_auto_and_device_settings() -> None:
    settings = [Setting("local", 0), Setting("local", 2, "process"), Setting("local", "auto", "auto"),
                Setting("local", 0, "process", "cuda")]
    assert [s.name for s in settings] == ["0w", "2w process", "auto", "0w -> cuda"]
    rows = rows_for(settings)

    def rate_of(rep, s):
        return {0: 1000.0, 2: 950.0, "auto": 880.0}[s.workers] * (3 if s.device else 1)

    results = fake_results(rows, rate_of)
    annotate(results, rows)
    workers = run.worker_targets(results)
    assert workers.splitlines()[0].count("/ 0w") == 2  # the device row is not a worker setting
    assert "| vae · int8 4x32x32, flip | 0.95x met | 0.88x MISSED |" in workers
    assert "| rgb · libjpeg-turbo | 0.95x met, not faster | 0.88x MISSED, not faster |" in workers
    text = run.transfer_table({"vae · int8": (16384.0, 4096.0)})
    assert "| vae · int8 | 16,384 | 4,096 | 4.0x |" in text


def test_workers_table_pairs_the_repetitions() -> None:
    zero = {"samples_per_s": 100.0, "rates": [100.0, 50.0, 200.0]}
    two = {"samples_per_s": 100.0, "rates": [90.0, 60.0, 180.0]}  # every repetition under the same load as 0w's
    assert run.paired(two, zero) == (0.9, 0.9, 1.2)
    assert run.paired({"samples_per_s": 50.0}, zero) == (0.5, 0.5, 0.5)
