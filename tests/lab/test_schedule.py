"""The plateau rule: when a run drops its learning rate, when it stops, and which epoch it keeps."""

from __future__ import annotations

import pytest

from lossyload.lab.schedule import Plateau, StopRule, warmup_lr


def feed(rule: StopRule, scores: list[float]) -> tuple[Plateau, list[str]]:
    plateau, actions = Plateau(rule), []
    for s in scores:
        actions.append(plateau.update(s))
        if plateau.stopped:
            break
    return plateau, actions


def test_a_plateau_drops_the_rate_then_stops_at_the_best_epoch() -> None:
    rule = StopRule(max_epochs=100, patience=2, drops=1)
    plateau, actions = feed(rule, [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.69, 0.9, 0.9])
    assert actions == ["best", "best", "wait", "drop", "best", "wait", "stop"]
    assert (plateau.best, plateau.best_epoch, plateau.epochs, plateau.stopped) == (0.7, 5, 7, "plateau")


def test_the_cap_stops_a_run_that_still_improves() -> None:
    plateau, actions = feed(StopRule(max_epochs=4, patience=2), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert actions == ["best"] * 4 and plateau.stopped == "cap" and plateau.best_epoch == 4


def test_min_epochs_keeps_a_run_going_past_an_early_plateau() -> None:
    plateau, _ = feed(StopRule(max_epochs=10, patience=1, drops=0, min_epochs=5), [0.5, 0.4, 0.4, 0.4, 0.4, 0.4])
    assert plateau.epochs == 5 and plateau.stopped == "plateau" and plateau.best_epoch == 1


def test_no_improvement_ever_still_stops() -> None:
    plateau, actions = feed(StopRule(max_epochs=50, patience=3, drops=2), [0.125] * 50)
    assert plateau.stopped == "plateau" and actions.count("drop") == 2 and plateau.epochs == 1 + 3 * 3


@pytest.mark.parametrize("bad", [{"max_epochs": 0}, {"patience": 0}, {"drops": -1}, {"factor": 1.0}])
def test_bad_rules_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        StopRule(**{"max_epochs": 5, **bad})


def test_warmup_reaches_the_base_rate_after_its_steps() -> None:
    assert [warmup_lr(1.0, s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
