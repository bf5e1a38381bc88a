"""The batch form of :class:`~lossyload.media.dct.DctCoefficients` and the batch crop the DCT transforms share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossyload.media.dct import DctCoefficients


@dataclass
class DctBatch:
    """A batch of coefficients of one grid size: ``y [B, Ky, Hb, Wb]``, ``c [B, 2, Kc, Hb/2, Wb/2]`` int16,
    ``qt [B, 3, 64]`` uint16 (the batch form of :class:`DctCoefficients`)."""

    y: np.ndarray
    c: np.ndarray
    qt: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def keep(self) -> tuple[int, int]:
        return int(self.y.shape[1]), int(self.c.shape[2])

    def sample(self, i: int) -> DctCoefficients:
        return DctCoefficients(y=self.y[i], c=self.c[i], qt=self.qt[i])


Ragged = DctBatch | list[DctCoefficients]


def as_batch(samples: list[DctCoefficients]) -> DctBatch | list[DctCoefficients]:
    """One :class:`DctBatch` when every sample has the same shapes, else the list."""
    if len({(d.y.shape, d.c.shape) for d in samples}) != 1:
        return samples
    return DctBatch(y=np.stack([d.y for d in samples]), c=np.stack([d.c for d in samples]),
                    qt=np.stack([np.asarray(d.qt, np.uint16) for d in samples]))


def samples(b: Ragged) -> list[DctCoefficients]:
    return b if isinstance(b, list) else [b.sample(i) for i in range(len(b))]


def fixed(b: Ragged, what: str) -> DctBatch:
    if isinstance(b, list):
        b = as_batch(b)
        if isinstance(b, list):
            raise ValueError(f"{what} needs samples of one grid size: put a crop first")
    return b


def batch_new(b: DctBatch, y: np.ndarray, c: np.ndarray) -> DctBatch:
    return DctBatch(y=y, c=c, qt=np.array(b.qt, copy=True))


def crop_batch(b: Ragged, top: np.ndarray, left: np.ndarray, height: int, width: int) -> DctBatch:
    """:func:`crop` of each sample at its own window, copied straight into one preallocated batch."""
    items = samples(b)
    ky, kc = items[0].keep if items else (1, 1)
    y = np.zeros((len(items), ky, 2 * height, 2 * width), np.int16)
    c = np.zeros((len(items), 2, kc, height, width), np.int16)
    qt = np.empty((len(items), 3, 64), np.uint16)
    for i, d in enumerate(items):
        hm, wm = d.y.shape[1] // 2, d.y.shape[2] // 2
        t, lf = int(top[i]), int(left[i])
        t0, t1, l0, l1 = max(t, 0), min(t + height, hm), max(lf, 0), min(lf + width, wm)
        qt[i] = d.qt
        if t1 > t0 and l1 > l0:
            ot, ol = t0 - t, l0 - lf
            y[i, :, 2 * ot : 2 * (ot + t1 - t0), 2 * ol : 2 * (ol + l1 - l0)] = d.y[:, 2 * t0 : 2 * t1, 2 * l0 : 2 * l1]
            c[i, :, :, ot : ot + t1 - t0, ol : ol + l1 - l0] = d.c[:, :, t0:t1, l0:l1]
    return DctBatch(y=y, c=c, qt=qt)


def grid(b: Ragged) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's size in MCUs: ``(hm [B], wm [B])``."""
    if isinstance(b, DctBatch):
        return np.full(len(b), b.y.shape[2] // 2), np.full(len(b), b.y.shape[3] // 2)
    return np.array([d.y.shape[1] // 2 for d in b]), np.array([d.y.shape[2] // 2 for d in b])
