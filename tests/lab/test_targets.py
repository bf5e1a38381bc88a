"""Targets judged on rows that learnt nothing: a tie at chance accuracy is no result (the quick preset's one
epoch on tiny data used to mark targets met at 12.5% vs 12.5%)."""

from __future__ import annotations

from lossyload.lab import targets

from .test_report import image_rows, results, row, speech_rows

CHANCE_8 = 0.125  # 8 classes


def at_chance(rows: list[dict]) -> list[dict]:
    return [{**r, "test_accuracy": CHANCE_8, "test_accuracy_std": None, "runs": r["runs"][:1], "seeds": 1}
            if r["test_accuracy"] is not None else r for r in rows]


def test_targets_at_chance_accuracy_are_not_measured() -> None:
    lines = targets.evaluate(results(at_chance(speech_rows()), at_chance(image_rows())))
    verdicts = [line for line in lines if line.startswith("- ") and "where the accuracy goes" not in line]
    assert len(verdicts) == 5
    for line in verdicts:
        assert line.startswith("- **not measured (at chance: ") and "with 8 classes, chance 12.5%" in line, line
    assert not any(line.startswith("- met") for line in lines)


def test_one_row_at_chance_is_enough_and_others_are_judged() -> None:
    speech = [r if r["name"] != "vq-bnn" else row("speech", "vq-bnn", [0.13], 3.0) for r in speech_rows()]
    lines = targets.evaluate(results(speech, image_rows()))
    assert lines[0].startswith("- **not measured (at chance: vq-bnn 13.0% with 8 classes")
    images = [line for line in lines if "images:" in line]
    assert len(images) == 3 and not any("at chance" in line for line in images)  # trained rows: judged
