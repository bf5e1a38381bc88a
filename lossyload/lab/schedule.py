"""When a training run stops, and its learning rate: train to the plateau of the validation accuracy.

A fixed epoch count favours the networks that converge fast (the float CNNs plateau in a few epochs, a binarized
network keeps improving for many more), so every trained row runs the same rule instead: linear warm-up over the
first epoch, then a constant learning rate; when the validation accuracy has not reached a new best for
``patience`` epochs, the learning rate drops by ``factor`` and training goes on from the best weights so far;
after ``drops`` drops, the next such plateau stops the run; ``max_epochs`` caps it. The run keeps the weights of
its best validation epoch, so its test accuracy is the one at that epoch. Without a validation split the run
trains ``max_epochs`` with a one-cycle schedule (warm-up, then cosine decay), as before.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class StopRule:
    max_epochs: int  # the cap
    patience: int = 3  # epochs without a new best validation accuracy before the learning rate drops / stop
    drops: int = 2  # learning-rate drops before a plateau stops the run
    factor: float = 0.2  # each drop multiplies the learning rate by this
    min_epochs: int = 1  # never stop before this many epochs

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.patience < 1 or self.drops < 0 or not 0 < self.factor < 1:
            raise ValueError(f"StopRule: need max_epochs >= 1, patience >= 1, drops >= 0, 0 < factor < 1, got {self}")


class Plateau:
    """The state of :class:`StopRule` over one run: feed it each epoch's validation accuracy (:meth:`update`)."""

    def __init__(self, rule: StopRule) -> None:
        self.rule = rule
        self.best, self.best_epoch, self.waited, self.dropped, self.epochs = float("-inf"), 0, 0, 0, 0
        self.stopped: str | None = None  # "plateau" | "cap" once the run is over

    def update(self, accuracy: float) -> str:
        """``"best"`` (a new best: keep these weights), ``"wait"``, ``"drop"`` (lower the learning rate and go
        back to the best weights) or ``"stop"``; once the run is over (a plateau after the last drop, or the cap),
        ``stopped`` says why."""
        self.epochs += 1
        action = "wait"
        if accuracy > self.best:
            self.best, self.best_epoch, self.waited, action = accuracy, self.epochs, 0, "best"
        else:
            self.waited += 1
            if self.waited >= self.rule.patience:
                if self.dropped < self.rule.drops:
                    self.dropped, self.waited, action = self.dropped + 1, 0, "drop"
                elif self.epochs >= self.rule.min_epochs:
                    self.stopped, action = "plateau", "stop"
        if self.stopped is None and self.epochs >= self.rule.max_epochs:
            self.stopped = "cap"
        return action


def warmup_lr(base: float, step: int, warmup_steps: int) -> float:
    """Linear warm-up from ``base / warmup_steps`` to ``base`` over the first ``warmup_steps`` steps."""
    return base * min(1.0, (step + 1) / max(warmup_steps, 1))
