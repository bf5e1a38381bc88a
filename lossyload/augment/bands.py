"""SpecAugment's band draws, shared by the code-grid masks (:mod:`.codes`) and the log-mel masks (:mod:`.mel`):
``count`` bands of 0..``max_width`` entries along an axis of ``length``, drawn per sample or for a batch."""

from __future__ import annotations

import numpy as np


def draw(rng: np.random.Generator, count: int, max_width: int, length: int) -> dict[str, np.ndarray]:
    """One sample's bands: ``{"start": [count], "width": [count]}`` (each band's width, then its start)."""
    widths, starts = [], []
    for _ in range(count):
        width = int(rng.integers(0, max_width + 1))
        widths.append(width)
        starts.append(int(rng.integers(0, max(length - width, 0) + 1)))
    return {"start": np.array(starts, np.int64), "width": np.array(widths, np.int64)}


def draw_batch(rng: np.random.Generator, n: int, count: int, max_width: int, length: int) -> dict[str, np.ndarray]:
    """``n`` samples' bands: ``{"start": [n, count], "width": [n, count]}``."""
    width = rng.integers(0, max_width + 1, size=(n, count))
    start = rng.integers(0, np.maximum(length - width, 0) + 1)
    return {"start": start, "width": width}


def batch_mask(length: int, p: dict, axis: int) -> np.ndarray:
    """Where :func:`draw_batch`'s bands fall in a ``[B, rows, frames]`` batch: bool ``[B, 1, frames]`` (``axis``
    1) or ``[B, rows, 1]`` (``axis`` 0), ``length`` the size of that axis."""
    pos = np.arange(length)[None, None, :]
    start, width = np.asarray(p["start"])[..., None], np.asarray(p["width"])[..., None]
    masked = ((pos >= start) & (pos < start + width)).any(axis=1)  # [B, length]
    return masked[:, None, :] if axis == 1 else masked[:, :, None]
