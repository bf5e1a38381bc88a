"""JPEG DCT-domain data model and math.

The canonical decoded form of a JPEG (what the ``jpeg-dct`` codec's ``decode`` returns and what DCT-domain
augmentations transform) is :class:`DctCoefficients`:

* ``y``  int16 ``[K_y, Hb, Wb]``: luma, quantized, channel ``i`` holds frequency ``ZIGZAG[i]``
  (natural index ``u * 8 + v``, ``u`` vertical and ``v`` horizontal frequency) -- the ``K_y`` lowest
  frequencies in zigzag order; ``Hb``/``Wb`` are even (the 16x16 MCU grid of 4:2:0).
* ``c``  int16 ``[2, K_c, Hb // 2, Wb // 2]``: Cb and Cr on the 4:2:0 grid, quantized, zigzag order.
  All zero (neutral grey) for greyscale sources.
* ``qt`` uint16 ``[3, 64]``: quantization tables of Y, Cb, Cr in natural order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# ZIGZAG[i] is the natural index (u * 8 + v) of the i-th coefficient in JPEG zigzag order.
ZIGZAG = np.array(
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
        12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
        35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ],
    dtype=np.int64,
)
# INV_ZIGZAG[n] is the zigzag position of natural index n.
INV_ZIGZAG = np.argsort(ZIGZAG)


@dataclass
class DctCoefficients:
    """Quantized JPEG DCT coefficients of one image on the 4:2:0 grid (see the module docstring)."""

    y: np.ndarray
    c: np.ndarray
    qt: np.ndarray

    @property
    def keep(self) -> tuple[int, int]:
        """Number of kept (lowest, zigzag-order) coefficients of luma and chroma."""
        return int(self.y.shape[0]), int(self.c.shape[1])

    @property
    def blocks(self) -> tuple[int, int]:
        """Luma grid size ``(Hb, Wb)`` in 8x8 blocks."""
        return int(self.y.shape[1]), int(self.y.shape[2])

    def validate(self) -> None:
        """Raise ``ValueError`` if the arrays do not have the canonical shapes and dtypes."""
        ky, hb, wb = self.y.shape
        if self.y.dtype != np.int16 or self.c.dtype != np.int16:
            raise ValueError(f"coefficients must be int16, got {self.y.dtype}/{self.c.dtype}")
        if hb % 2 or wb % 2:
            raise ValueError(f"luma grid {hb}x{wb} is not a whole number of 16x16 MCUs")
        if self.c.ndim != 4 or self.c.shape[0] != 2 or self.c.shape[2:] != (hb // 2, wb // 2):
            raise ValueError(f"chroma shape {self.c.shape} does not fit luma grid {hb}x{wb}")
        if not (1 <= ky <= 64 and 1 <= self.c.shape[1] <= 64):
            raise ValueError(f"kept coefficients {self.keep} outside 1..64")
        if self.qt.shape != (3, 64):
            raise ValueError(f"quantization tables must be [3, 64], got {list(self.qt.shape)}")


# ----------------------------------------------------------------------------------------------------
# DCT math. Planes are ``[64, Hb, Wb]`` (natural order, dequantized) <-> pixels ``[8 Hb, 8 Wb]``.
# ----------------------------------------------------------------------------------------------------

_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


@functools.lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    k = np.arange(8)[:, None]
    n = np.arange(8)[None, :]
    d = np.sqrt(2.0 / 8.0) * np.cos((2 * n + 1) * k * np.pi / 16.0)
    d[0] = np.sqrt(1.0 / 8.0)
    d.setflags(write=False)
    return d


def dct_matrix() -> np.ndarray:
    """The 8x8 orthonormal DCT-II basis ``D`` (``D[k, n]``): JPEG's FDCT of a block is ``D @ B @ D.T``."""
    return _dct_matrix().copy()


def _check_table(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table)
    if table.shape != (64,):
        raise ValueError(f"quantization table must have shape [64], got {list(table.shape)}")
    return table


def dequantize(channels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Zigzag channels ``[K, ...]`` times ``table`` (natural ``[64]``) -> float32 ``[64, ...]`` natural order.

    Frequencies beyond the ``K`` kept ones are zero.
    """
    table = _check_table(table)
    k = channels.shape[0]
    if not 1 <= k <= 64:
        raise ValueError(f"number of coefficient channels must be in 1..64, got {k}")
    idx = ZIGZAG[:k]
    out = np.zeros((64, *channels.shape[1:]), dtype=np.float32)
    scale = table[idx].astype(np.float32).reshape((k,) + (1,) * (channels.ndim - 1))
    out[idx] = channels * scale
    return out


def quantize(natural: np.ndarray, table: np.ndarray, keep: int) -> np.ndarray:
    """Natural-order float ``[64, ...]`` -> int16 ``[keep, ...]`` zigzag, ``rint(x / table)`` clipped to int16."""
    table = _check_table(table)
    if natural.shape[0] != 64:
        raise ValueError(f"expected 64 natural-order coefficients, got {natural.shape[0]}")
    if not 1 <= keep <= 64:
        raise ValueError(f"keep must be in 1..64, got {keep}")
    if np.any(table == 0):
        raise ValueError("quantization table contains zeros")
    idx = ZIGZAG[:keep]
    scale = table[idx].astype(np.float64).reshape((keep,) + (1,) * (natural.ndim - 1))
    q = np.rint(natural[idx] / scale)
    return np.clip(q, _INT16_MIN, _INT16_MAX).astype(np.int16)


@functools.lru_cache(maxsize=1)
def _idct_kron() -> np.ndarray:
    """``K[(y, x), (u, v)] = D[u, y] D[v, x]``: the 2-D IDCT of one block as a 64x64 matrix."""
    d = _dct_matrix()
    k = np.kron(d.T, d.T).astype(np.float32)
    k.setflags(write=False)
    return k


def idct_plane(natural: np.ndarray) -> np.ndarray:
    """Dequantized natural-order ``[64, Hb, Wb]`` -> float32 pixels ``[8 Hb, 8 Wb]`` (no +128 level shift)."""
    if natural.ndim != 3 or natural.shape[0] != 64:
        raise ValueError(f"expected [64, Hb, Wb] coefficients, got {list(natural.shape)}")
    _, hb, wb = natural.shape
    flat = _idct_kron() @ natural.reshape(64, hb * wb).astype(np.float32, copy=False)
    pix = flat.reshape(8, 8, hb, wb).transpose(2, 0, 3, 1)  # [Hb, y, Wb, x]
    return np.ascontiguousarray(pix).reshape(8 * hb, 8 * wb)


def dct_plane(pixels: np.ndarray) -> np.ndarray:
    """Pixels ``[H, W]`` (multiples of 8, already level-shifted) -> float32 natural-order ``[64, H/8, W/8]``."""
    if pixels.ndim != 2 or pixels.shape[0] % 8 or pixels.shape[1] % 8:
        raise ValueError(f"pixel plane must be 2-D with sides multiple of 8, got {list(pixels.shape)}")
    hb, wb = pixels.shape[0] // 8, pixels.shape[1] // 8
    blocks = pixels.astype(np.float32, copy=False).reshape(hb, 8, wb, 8).transpose(1, 3, 0, 2)
    flat = _idct_kron().T @ np.ascontiguousarray(blocks).reshape(64, hb * wb)
    return flat.reshape(64, hb, wb)


@functools.lru_cache(maxsize=4)
def _resample_matrix(dy: int, dx: int) -> np.ndarray:
    """``M[k, (a, b, n)]``: DCT of the box-downsampled ``(dy, dx)`` group of blocks ``(a, b)``."""
    d = _dct_matrix()

    def axis_map(f: int) -> np.ndarray:
        # A[k, a, n]: output frequency k from input frequency n of sub-block a along one axis.
        pool = np.kron(np.eye(8), np.full((1, f), 1.0 / f))  # [8, 8 f]
        inverse = np.kron(np.eye(f), d.T)  # [8 f, 8 f], column (a, n) -> pixel
        return (d @ pool @ inverse).reshape(8, f, 8)

    ay, ax = axis_map(dy), axis_map(dx)
    m = np.einsum("uap,vbq->uvabpq", ay, ax).reshape(64, 64 * dy * dx).astype(np.float32)
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=4)
def _resample_tensor(dy: int, dx: int):
    import torch

    return torch.from_numpy(_resample_matrix(dy, dx).copy())


def resample_chroma(natural: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Exact DCT-domain box downsampling of ``[64, Hb, Wb]`` by ``(dy, dx)`` in {1, 2} -> ``[64, Hb/dy, Wb/dx]``.

    Equals ``dct_plane(box_downsample(idct_plane(natural)))`` but is one precomputed linear map.
    """
    if dy not in (1, 2) or dx not in (1, 2):
        raise ValueError(f"resampling factors must be 1 or 2, got ({dy}, {dx})")
    if natural.ndim != 3 or natural.shape[0] != 64:
        raise ValueError(f"expected [64, Hb, Wb] coefficients, got {list(natural.shape)}")
    _, hb, wb = natural.shape
    if hb % dy or wb % dx:
        raise ValueError(f"block grid {hb}x{wb} is not divisible by ({dy}, {dx})")
    if dy == dx == 1:
        return natural.astype(np.float32, copy=True)
    ho, wo = hb // dy, wb // dx
    x = natural.astype(np.float32, copy=False).reshape(64, ho, dy, wo, dx).transpose(2, 4, 0, 1, 3)
    # torch's matmul follows torch.set_num_threads (1 in DataLoader workers); numpy's BLAS would start its
    # own spinning thread pool in every worker process.
    import torch

    out = _resample_tensor(dy, dx) @ torch.from_numpy(np.ascontiguousarray(x).reshape(64 * dy * dx, ho * wo))
    return out.numpy().reshape(64, ho, wo)


# JFIF (ITU-R BT.601 full range) colour conversion.
_YCC_TO_RGB = np.array(
    [[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32
)
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)


def to_pixels(d: DctCoefficients) -> np.ndarray:
    """Decode to uint8 RGB ``[8 Hb, 8 Wb, 3]`` (float IDCT, nearest 2x chroma upsampling, JFIF colours)."""
    d.validate()
    qt = np.asarray(d.qt)
    y = idct_plane(dequantize(d.y, qt[0])) + 128.0
    cb, cr = (idct_plane(dequantize(d.c[i], qt[1 + i])) for i in (0, 1))
    h, w = y.shape
    quads = y.reshape(h // 2, 2, w // 2, 2)  # each chroma sample covers a 2x2 quad of luma
    rgb = np.empty((h, w, 3), dtype=np.float32)
    for i, (kb, kr) in enumerate(_YCC_TO_RGB[:, 1:]):
        term = (kb * cb + kr * cr)[:, None, :, None]  # chroma contribution at chroma resolution
        rgb[..., i] = (quads + term).reshape(h, w)
    return np.clip(np.rint(rgb, out=rgb), 0, 255).astype(np.uint8)


def from_pixels(
    rgb: np.ndarray, qt: np.ndarray, keep: tuple[int, int] = (64, 64)
) -> DctCoefficients:
    """Encode uint8 RGB ``[H, W, 3]`` (H, W multiples of 16): JFIF YCbCr, 2x2 chroma box average, DCT, quantize."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] % 16 or rgb.shape[1] % 16:
        raise ValueError(f"expected RGB [H, W, 3] with H, W multiples of 16, got {list(rgb.shape)}")
    qt = np.asarray(qt)
    if qt.shape != (3, 64):
        raise ValueError(f"quantization tables must be [3, 64], got {list(qt.shape)}")
    ycc = rgb.astype(np.float32) @ _RGB_TO_YCC.T  # Y in 0..255, Cb/Cr centred on 0
    h, w = rgb.shape[:2]
    y = quantize(dct_plane(ycc[..., 0] - 128.0), qt[0], keep[0])
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    c = np.stack([quantize(dct_plane(chroma[..., i]), qt[1 + i], keep[1]) for i in (0, 1)])
    return DctCoefficients(y=y, c=c, qt=qt.astype(np.uint16, copy=True))
