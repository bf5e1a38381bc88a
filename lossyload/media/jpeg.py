"""JPEG at the byte and coefficient level: preparing source bytes for a shard, reading quantized DCT
coefficients from bytes in memory, and the pre-extracted (zstd) coefficient encoding."""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from collections.abc import Callable

import numpy as np
import zstandard
from PIL import Image

from . import dct
from .dct import ZIGZAG, DctCoefficients
from ..errors import DecodeError, EncodeError

_ZZ_U, _ZZ_V = ZIGZAG // 8, ZIGZAG % 8
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
MAX_UNPACKED = 256 << 20  # bound on a decompressed coefficient member
_JCS_YCBCR = 3  # libjpeg J_COLOR_SPACE of YCbCr
_JCS_NAMES = {0: "unknown", 1: "greyscale", 2: "RGB", 3: "YCbCr", 4: "CMYK", 5: "YCCK"}


# ---------------------------------------------------------------- source bytes -> shard JPEG bytes
def check_source_options(*, quality: int, subsampling: str, resize: int | None) -> None:
    """Validate the shard-time JPEG options shared by the codecs that store JPEG bytes (``ValueError``)."""
    if subsampling not in SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {list(SUBSAMPLING)}")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be in 1..100")
    # a shard-time resize must leave at least one 8x8 block (smaller sources are skipped, not shrunk)
    if resize is not None and (not isinstance(resize, int) or resize < 8):
        raise ValueError(f"resize must be an integer short side of at least 8 px, got {resize!r}")


def prepare_jpeg(
    data: bytes, *, source: str, quality: int, subsampling: str, resize: int | None, max_pixels: int
) -> tuple[bytes, str | None]:
    """Return ``(jpeg_bytes, reason)``: the source bytes unchanged (``reason=None``) when they are a JPEG the
    coefficient reader handles and no resize applies, else a transcode at ``quality``/``subsampling`` and
    the reason. Raises :class:`EncodeError` naming ``source`` for inputs that cannot be used."""
    im = open_image(data, source, max_pixels)
    w, h = im.size
    reason = None
    if im.format not in ("JPEG", "MPO"):  # MPO: camera JPEGs with extra images appended (read as the first)
        reason = f"{(im.format or 'unknown').lower()} source"
    elif im.mode not in ("RGB", "L"):
        reason = f"{im.mode} JPEG"
    if resize is not None and min(w, h) > resize:
        reason = f"resized from {w}x{h}" + (f" ({reason})" if reason else "")
    if reason is None:
        try:
            read_coefficients(data)
            return data, None
        except DecodeError as exc:
            reason = f"coefficient reader failed: {exc}"
    return _transcode(im, quality=quality, subsampling=subsampling, resize=resize), reason


def open_image(data: bytes, source: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise EncodeError(f"image too large: {w}x{h} exceeds max_pixels={max_pixels}", source=source)
            if min(w, h) < 8:
                raise EncodeError(f"image {w}x{h} is smaller than one 8x8 DCT block", source=source)
            im.load()
    except EncodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise EncodeError(f"image too large: {exc}", source=source) from exc
    except Exception as exc:  # PIL raises many types for corrupt data
        if "cannot identify" in str(exc):
            raise EncodeError("not an image (unrecognised format)", source=source) from exc
        raise EncodeError(f"corrupt or truncated image ({type(exc).__name__}: {exc})", source=source) from exc
    return im


def eight_bit(im: Image.Image) -> Image.Image:
    """16-bit greyscale (PNG, TIFF) scaled to 8-bit "L" (PIL's convert would clip it to 0..255); else ``im``."""
    if im.mode.startswith("I;16"):
        return Image.fromarray(np.rint(np.asarray(im, np.float64) / 257.0).astype(np.uint8), "L")
    return im


def _transcode(im: Image.Image, *, quality: int, subsampling: str, resize: int | None) -> bytes:
    im = eight_bit(im)
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGBA").convert("RGB") if "A" in im.getbands() or im.mode == "P" else im.convert("RGB")
    if resize is not None and min(im.size) > resize:
        w, h = im.size
        s = resize / min(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality, subsampling=SUBSAMPLING[subsampling], optimize=False)
    return out.getvalue()


# ---------------------------------------------------------------- JPEG bytes -> coefficients
def _read_jpegio(data: bytes):
    import jpegio

    fd = os.memfd_create("lossyload-jpeg", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        return jpegio.read(f"/proc/self/fd/{fd}")
    except (RuntimeError, ValueError, OSError) as exc:
        raise DecodeError(f"not a readable JPEG: {exc}") from exc
    finally:
        os.close(fd)


def _blocks(arr: np.ndarray, rows: int, cols: int, keep: int, top: int = 0, left: int = 0) -> np.ndarray:
    """The block window ``[top, top+rows) x [left, left+cols)`` of jpegio's spatial coefficient layout
    ``[8*r, 8*c]`` as int16 ``[keep, rows, cols]`` in zigzag order; blocks outside the array are zero."""
    r, c = arr.shape[0] // 8, arr.shape[1] // 8
    r0, r1, c0, c1 = max(top, 0), min(top + rows, r), max(left, 0), min(left + cols, c)
    if r1 <= r0 or c1 <= c0:
        return np.zeros((keep, rows, cols), np.int16)
    view = arr[8 * r0 : 8 * r1, 8 * c0 : 8 * c1].reshape(r1 - r0, 8, c1 - c0, 8).transpose(1, 3, 0, 2)
    picked = view[_ZZ_U[:keep], _ZZ_V[:keep]]  # one gather: [keep, r1 - r0, c1 - c0]
    if (r1 - r0, c1 - c0) == (rows, cols):
        return picked.astype(np.int16)
    out = np.zeros((keep, rows, cols), np.int16)
    out[:, r0 - top : r1 - top, c0 - left : c1 - left] = picked
    return out


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (DHT, JPG and DAC share the range)


def frame_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` stated by the frame header of JPEG ``data``, found the way libjpeg finds it (bytes
    between segments skipped, segments skipped by their length); ``None`` when there is none before the scan."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while True:
        i = data.find(b"\xff", i)
        while 0 <= i < n - 1 and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i < 0 or i + 1 >= n:
            return None
        marker = data[i + 1]
        if marker in _SOF:
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if marker in (0xDA, 0xD9):  # scan or end of image: no frame header before it
            return None
        if marker == 0 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stuffed byte, TEM, RSTn: no length
            i += 2
        else:
            i += 2 + max(int.from_bytes(data[i + 2 : i + 4], "big"), 2)


def check_pixels(data: bytes, max_pixels: int) -> None:
    """:class:`DecodeError` when JPEG ``data`` states more than ``max_pixels`` pixels, before a decoder allocates
    them (a corrupt member of 1 KB can state 65535 x 65535)."""
    size = frame_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise DecodeError(f"JPEG states {size[1]}x{size[0]} pixels, more than max_pixels={max_pixels}")


Window = Callable[[int, int], tuple[int, int, int, int]]


def read_coefficients(data: bytes, keep: tuple[int, int] = (64, 64), window: Window | None = None,
                      max_pixels: int | None = None) -> DctCoefficients:
    """Quantized DCT coefficients of JPEG ``data`` on the 4:2:0 grid, without any inverse DCT.

    Baseline and progressive, greyscale (chroma all zero), 4:2:0, and 4:4:4 / 4:2:2 / 4:4:0 (chroma brought to
    the 4:2:0 grid by an exact DCT-domain box filter, then requantized with the image's chroma table).

    ``window(hm, wm) -> (top, left, height, width)``, given the image's size in 16x16 MCUs, picks an MCU window
    to extract (zero outside the image): the same result as cropping afterwards, without extracting the rest.
    A JPEG stating more than ``max_pixels`` pixels is refused before it is read."""
    if max_pixels is not None:
        check_pixels(data, max_pixels)
    j = _read_jpegio(data)
    comps = j.comp_info
    if len(comps) not in (1, 3):
        raise DecodeError(f"{len(comps)}-component JPEG (CMYK/YCCK) is not supported")
    if len(comps) == 3 and j.jpeg_color_space != _JCS_YCBCR:  # e.g. Adobe transform=0: components are R, G, B
        raise DecodeError(f"3-component JPEG in colour space {_JCS_NAMES.get(j.jpeg_color_space, j.jpeg_color_space)}, "
                          "not YCbCr")
    y = comps[0]
    hmax = max(c.h_samp_factor for c in comps)
    vmax = max(c.v_samp_factor for c in comps)
    if (y.h_samp_factor, y.v_samp_factor) != (hmax, vmax):
        raise DecodeError("luma is not the full-resolution component")
    hc, wc = -(-y.downsampled_height // 16), -(-y.downsampled_width // 16)
    top, left, hc, wc = window(hc, wc) if window else (0, 0, hc, wc)
    tables = [np.asarray(t, np.int64).reshape(64) for t in j.quant_tables]  # the defined ones, without their numbers
    if max(c.quant_tbl_no for c in comps) >= len(tables):
        raise DecodeError(f"quantization tables numbered {sorted({c.quant_tbl_no for c in comps})} with {len(tables)} "
                          "defined: only tables numbered from 0 up are supported")
    qt = np.ones((3, 64), np.uint16)
    qt[0] = tables[y.quant_tbl_no]
    yk = _blocks(j.coef_arrays[0], 2 * hc, 2 * wc, keep[0], 2 * top, 2 * left)
    c = np.zeros((2, keep[1], hc, wc), np.int16)
    for i in (1, 2) if len(comps) == 3 else ():
        ci = comps[i]
        qt[i] = tables[ci.quant_tbl_no]
        dx, dy = 2 * ci.h_samp_factor // hmax, 2 * ci.v_samp_factor // vmax
        if (2 * ci.h_samp_factor) % hmax or (2 * ci.v_samp_factor) % vmax or dx not in (1, 2) or dy not in (1, 2):
            raise DecodeError(f"unsupported chroma sampling {ci.h_samp_factor}x{ci.v_samp_factor} of {hmax}x{vmax}")
        if dx == dy == 1:
            c[i - 1] = _blocks(j.coef_arrays[i], hc, wc, keep[1], top, left)
        else:  # the box filter maps each dy x dx group of blocks to one block: window first, then filter
            if not qt[i].all():
                raise DecodeError(f"chroma quantization table {ci.quant_tbl_no} holds a zero: cannot requantize "
                                  f"{ci.h_samp_factor}x{ci.v_samp_factor} chroma to the 4:2:0 grid")
            full = _blocks(j.coef_arrays[i], hc * dy, wc * dx, 64, top * dy, left * dx)
            nat = dct.resample_chroma(dct.dequantize(full, qt[i]), dy, dx)
            c[i - 1] = dct.quantize(nat, qt[i], keep[1])
    return DctCoefficients(y=yk, c=c, qt=qt)


# ---------------------------------------------------------------- pre-extracted storage
# The payload is a compressed frame -- zstd (its own frame format) or lz4 (b"LZ4B", uint32 raw size, one lz4
# block) -- of: a 12-byte header (magic "LLD1", uint16 ky, kc, hb, wb, little-endian) and the raw little-endian
# arrays y int16 [ky, hb, wb], c int16 [2, kc, hb/2, wb/2], qt uint16 [3, 64]. No pickle, no parsing beyond
# the header; sizes are checked exactly and bounded before anything is allocated.
_MAGIC = b"LLD1"
_HEADER = struct.Struct("<4sHHHH")
_LZ4 = struct.Struct("<4sI")
COMPRESSIONS = ("zstd", "lz4")


def pack_coefficients(d: DctCoefficients, level: int = 3, compression: str = "zstd") -> bytes:
    """Serialise canonical coefficients for the pre-extracted storage variant."""
    d.validate()
    (ky, hb, wb), kc = d.y.shape, d.c.shape[1]
    raw = b"".join([_HEADER.pack(_MAGIC, ky, kc, hb, wb), d.y.astype("<i2").tobytes(), d.c.astype("<i2").tobytes(),
                    d.qt.astype("<u2").tobytes()])
    if compression == "lz4":
        import lz4.block

        return _LZ4.pack(b"LZ4B", len(raw)) + lz4.block.compress(raw, store_size=False)
    return zstandard.ZstdCompressor(level=level).compress(raw)


_LOCAL = threading.local()  # one zstd decompressor per thread: they are not thread-safe (thread workers)


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_LOCAL, "dctx", None)
    if d is None:
        d = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return d


def _decompress(payload: bytes) -> bytes:
    if payload[:4] == b"LZ4B":
        import lz4.block

        if len(payload) < _LZ4.size:
            raise DecodeError("bad pre-extracted coefficient member: short lz4 header")
        size = _LZ4.unpack_from(payload)[1]
        if size > MAX_UNPACKED:
            raise DecodeError(f"bad pre-extracted coefficient member: {size} bytes unpacked, more than {MAX_UNPACKED}")
        try:
            return lz4.block.decompress(payload[_LZ4.size:], uncompressed_size=size)
        except lz4.block.LZ4BlockError as exc:
            raise DecodeError(f"bad pre-extracted coefficient member: {exc}") from exc
    try:
        # max_output_size only bounds frames without a content size; a stated size is allocated as is
        size = zstandard.frame_content_size(payload)
        if size > MAX_UNPACKED:
            raise DecodeError(f"bad pre-extracted coefficient member: {size} bytes unpacked, more than {MAX_UNPACKED}")
        return _dctx().decompress(payload, max_output_size=MAX_UNPACKED)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"bad pre-extracted coefficient member: {exc}") from exc


def unpack_coefficients(payload: bytes) -> DctCoefficients:
    """Inverse of :func:`pack_coefficients` (either compression): exact size and shape checks."""
    raw = _decompress(payload)
    if len(raw) < _HEADER.size or raw[:4] != _MAGIC:
        raise DecodeError("bad pre-extracted coefficient member: no LLD1 header")
    _, ky, kc, hb, wb = _HEADER.unpack_from(raw)
    ny, nc = ky * hb * wb, 2 * kc * (hb // 2) * (wb // 2)
    if (len(raw) != _HEADER.size + 2 * (ny + nc + 192) or not (1 <= ky <= 64 and 1 <= kc <= 64)
            or not hb or not wb or hb % 2 or wb % 2):
        raise DecodeError(f"bad pre-extracted coefficient member: header {ky},{kc},{hb},{wb} does not fit {len(raw)} bytes")
    o = _HEADER.size
    y = np.frombuffer(raw, "<i2", ny, o).reshape(ky, hb, wb)
    c = np.frombuffer(raw, "<i2", nc, o + 2 * ny).reshape(2, kc, hb // 2, wb // 2)
    qt = np.frombuffer(raw, "<u2", 192, o + 2 * (ny + nc)).reshape(3, 64)
    return DctCoefficients(y=y, c=c, qt=qt)
