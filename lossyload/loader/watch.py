"""Dead loader workers, reported by the loader wherever the main thread is when the death is noticed.

torch's DataLoader raises a dead worker's ``RuntimeError`` from its SIGCHLD handler, at whatever line the
main thread is executing: during the user's training step that is an exception out of the user's own code,
which the loader cannot name. While a loader iterates, lossyload wraps that handler: a death noticed while
the loader waits for a batch is raised there as before (and becomes a :class:`~lossyload.errors.WorkerError`);
a death noticed anywhere else is held and raised by the loader's next step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class Watch:
    """One iterating loader: whether it is waiting for a batch, and a death noticed while it was not."""
    waiting: bool = False
    held: RuntimeError | None = None


_active: list[Watch] = []
_installed: dict[str, Any] = {}


def _handler(signum: int, frame: Any) -> None:
    previous = _installed["previous"]
    try:
        if callable(previous):
            previous(signum, frame)
    except RuntimeError as exc:
        if not _active or any(w.waiting for w in _active):
            raise  # inside the DataLoader's wait (torch turns it into its own error), or no loader iterating
        for w in _active:
            w.held = w.held or exc.with_traceback(None)  # not the interrupted frames


@contextmanager
def watching() -> Iterator[Watch]:
    """Hold worker deaths noticed outside the loader's wait for the loader's next step (main thread only;
    elsewhere torch installs no SIGCHLD handler either)."""
    w = Watch()
    main = threading.current_thread() is threading.main_thread()
    if main and not _active:
        previous = signal.getsignal(signal.SIGCHLD)
        if previous is not _handler:
            _installed["previous"] = previous
            signal.signal(signal.SIGCHLD, _handler)
    _active.append(w)
    try:
        yield w
    finally:
        _active.remove(w)
        if main and not _active and signal.getsignal(signal.SIGCHLD) is _handler:
            signal.signal(signal.SIGCHLD, _installed["previous"])
