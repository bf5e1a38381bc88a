"""``vq``: audio as 4-bit vector-quantized log-mel codes (the seed's BNN + VQ experiment).

A clip's log-mel spectrogram (``n_mels`` x ``frames``, 128 x 128 by default) is cut into non-overlapping
``block`` time-frequency blocks (2 x 2); each block is replaced by the index of its nearest vector in a
codebook of ``codebook_size`` (16) learned with mini-batch k-means on the training split. Codes are packed
two per byte (when they fit in 4 bits) and zstd-compressed. The codebook and the spectrogram settings are
part of the config stored in the index, so the shards describe themselves.

The canonical (augmentable) sample is an int16 code grid ``[n_mels/bf, frames/bt]`` where ``-1`` marks a
masked cell; outputs: ``codes`` (uint8, masked = ``codebook_size``), ``bits`` (int8 bit-planes in {-1, +1},
masked = 0: the binary input of a BNN) or ``vectors`` (float32 codebook vectors, masked = 0).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from ..media.audio import MelConfig, fit_clip, log_mel
from ..errors import CodecError, DecodeError, EncodeError, require
from .registry import register_codec
from .base import Codec, Encoded, TensorSpec

OUTPUTS = ("codes", "bits", "vectors")
MAX_FIT_VECTORS = 500_000  # block vectors k-means sees at most (a seeded subsample)
_LOCAL = threading.local()  # one zstd decompressor per thread (they are not thread-safe)


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_LOCAL, "dctx", None)
    if d is None:
        d = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return d



@dataclass(frozen=True, kw_only=True)
class VqConfig(MelConfig):
    codebook_size: int = 16
    block: tuple[int, int] = (2, 2)  # (mel bins, frames) per code
    codebook: tuple[tuple[float, ...], ...] | None = None  # codebook_size vectors of block[0]*block[1]; None: fit
    fit_samples: int = 2000  # clips of the source sampled to fit the codebook
    fit_seed: int = 0
    zstd_level: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        bf, bt = self.block
        if bf < 1 or bt < 1 or self.n_mels % bf or self.frames % bt:
            raise ValueError(f"block {self.block} must divide the spectrogram ({self.n_mels} x {self.frames})")
        if not 2 <= self.codebook_size <= 256:
            raise ValueError("codebook_size must be in 2..256 (codes are stored in at most 8 bits)")
        if self.codebook is not None:  # from JSON: lists of lists
            object.__setattr__(self, "codebook", tuple(tuple(float(x) for x in v) for v in self.codebook))
        if self.codebook is not None and (
            len(self.codebook) != self.codebook_size or any(len(v) != bf * bt for v in self.codebook)
        ):
            raise ValueError(f"codebook must hold {self.codebook_size} vectors of {bf * bt} values")
        if self.fit_samples < self.codebook_size:
            raise ValueError("fit_samples must be at least codebook_size")

    @property
    def grid(self) -> tuple[int, int]:
        return self.n_mels // self.block[0], self.frames // self.block[1]

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))


@dataclass(frozen=True, kw_only=True)
class VqOptions:
    output: str = "codes"  # "codes" | "bits" | "vectors"
    frames: int | None = None  # code frames of the default training crop (None: the whole clip)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}")


@register_codec
class Vq(Codec):
    name = "vq"
    no_dali_form = ("its members are zstd-compressed, 4-bit-packed codes: unpacking needs zstd and a bit unpacker "
                    "on the host")
    member = "vq.zst"
    Config = VqConfig
    Options = VqOptions
    fit_fields = ("codebook",)

    def __init__(self, config: VqConfig | None = None, options: VqOptions | None = None) -> None:
        super().__init__(config, options)
        cb = self.config.codebook
        self.codebook = None if cb is None else np.asarray(cb, np.float32)
        self._table = self._output_table()

    def _output_table(self) -> np.ndarray | None:
        """``[channels, codebook_size + 1]``: what each code (column c + 1) and the mask (column 0) become in
        the ``bits`` and ``vectors`` outputs (``codes`` needs none)."""
        k, out = self.config.codebook_size, self.options.output
        if out == "codes":
            return None
        if out == "bits":
            planes = 2 * ((np.arange(k)[None] >> np.arange(self.config.bits)[:, None]) & 1) - 1
            return np.concatenate([np.zeros((self.config.bits, 1)), planes], axis=1).astype(np.int8)
        if self.codebook is None:
            return np.zeros((self.config.block[0] * self.config.block[1], k + 1), np.float32)  # no codebook yet
        return np.concatenate([np.zeros((self.codebook.shape[1], 1), np.float32), self.codebook.T], axis=1)

    # -- shard time ---------------------------------------------------------------------------------------
    def needs_fit(self) -> bool:
        return self.codebook is None

    @property
    def fit_sample_count(self) -> int:
        return self.config.fit_samples

    def blocks(self, data: bytes, *, source: str) -> tuple[np.ndarray, list[str]]:
        """float32 ``[cells, bf*bt]`` block vectors of one source file, plus its clip notes."""
        clip, notes = fit_clip(data, self.config, source=source)
        return to_blocks(log_mel(clip, self.config), self.config.block), notes

    def fit(self, samples: list[tuple[str, bytes]]) -> Vq:
        """This codec with a codebook learned by mini-batch k-means on ``samples`` ((source, bytes) pairs;
        unusable ones are left out here and reported when they are encoded)."""
        MiniBatchKMeans = require("sklearn.cluster", "audio").MiniBatchKMeans

        vectors = []
        for source, data in samples:
            try:
                vectors.append(self.blocks(data, source=source)[0])
            except EncodeError:
                continue
        if not vectors:
            raise CodecError(f"vq: none of the {len(samples)} samples drawn to fit the codebook is usable audio")
        x = np.concatenate(vectors)
        if len(x) > MAX_FIT_VECTORS:
            x = x[np.random.default_rng(self.config.fit_seed).choice(len(x), MAX_FIT_VECTORS, replace=False)]
        k = self.config.codebook_size
        km = MiniBatchKMeans(n_clusters=k, random_state=self.config.fit_seed, batch_size=4096, n_init=3,
                             max_iter=100).fit(x)
        centers = km.cluster_centers_[np.argsort(km.cluster_centers_.mean(axis=1), kind="stable")]  # quiet -> loud
        codebook = tuple(tuple(round(float(v), 6) for v in row) for row in centers)
        return Vq(dataclasses.replace(self.config, codebook=codebook), self.options)

    def encode(self, data: bytes, *, source: str) -> Encoded:
        if self.codebook is None:
            raise CodecError("vq: no codebook; lossyload-shard fits one on the source, or pass --config-from a "
                             "vq dataset (e.g. the training split's)")
        vectors, notes = self.blocks(data, source=source)
        codes = nearest(vectors, self.codebook).reshape(self.config.grid)
        payload = zstandard.ZstdCompressor(level=self.config.zstd_level).compress(pack(codes, self.config.bits))
        return Encoded(payload, "; ".join(notes) or None)

    # -- load time ----------------------------------------------------------------------------------------
    def _unzstd(self, payload: bytes) -> bytes:
        h, w = self.config.grid
        try:
            # max_output_size only bounds frames without a content size; a stated size is allocated as is
            size = zstandard.frame_content_size(payload)
            if size > h * w:
                raise DecodeError(f"vq member states {size} bytes unpacked, more than the {h}x{w} code grid needs")
            return _dctx().decompress(payload, max_output_size=h * w)
        except zstandard.ZstdError as exc:
            raise DecodeError(f"vq member is not a zstd frame ({exc})") from exc

    def _check_codes(self, codes: np.ndarray) -> None:
        if self.config.codebook_size < 2**self.config.bits and codes.max() >= self.config.codebook_size:
            raise DecodeError(f"vq member holds code {codes.max()} >= codebook_size {self.config.codebook_size}")

    def decode(self, payload: bytes) -> np.ndarray:
        h, w = self.config.grid
        packed = self._unzstd(payload)
        codes = unpack(packed, self.config.bits, h * w)
        if codes is None:
            raise DecodeError(f"vq member holds {len(packed)} bytes, not the {h}x{w} code grid of this index")
        codes = codes.reshape(h, w)
        self._check_codes(codes)
        return codes

    def finalize(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        # bits / vectors: one table lookup (column 0 is the masked entry, code -1; column c + 1 is code c)
        out = self.options.output
        if out != "codes":
            return {out: np.take(self._table, codes + 1, axis=1)}
        result = codes.astype(np.uint8)  # cheaper than a lookup; masked cells fixed only where there are any
        masked = codes < 0
        if masked.any():
            result[masked] = self.config.codebook_size
        return {out: result}

    # -- batch path: zstd per member (it releases the GIL), one unpack and one lookup per batch --------------
    def batch_decoding(self) -> bool:
        return True

    def decode_many(self, payloads: list[bytes]) -> np.ndarray:
        """int16 ``[B, h, w]``: ``decode`` of each payload."""
        h, w = self.config.grid
        packed = [self._unzstd(p) for p in payloads]
        size = (h * w + 1) // 2 if self.config.bits <= 4 else h * w
        for p in packed:
            if len(p) != size:
                raise DecodeError(f"vq member holds {len(p)} bytes, not the {h}x{w} code grid of this index")
        codes = unpack_rows(np.frombuffer(b"".join(packed), np.uint8).reshape(len(payloads), size),
                            self.config.bits, h * w).reshape(len(payloads), h, w)
        if len(payloads):
            self._check_codes(codes)
        return codes

    def finalize_batch(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        out = self.options.output
        if out == "bits":  # the table's values computed: plane b is 2 * bit b - 1, masked cells 0
            shifts = np.arange(self.config.bits, dtype=np.uint8)[None, :, None, None]
            planes = ((codes.astype(np.uint8)[:, None] >> shifts) & 1).view(np.int8)
            planes *= 2
            planes -= 1
            masked = codes < 0
            if masked.any():
                planes *= ~masked[:, None]
            return {out: planes}
        if out != "codes":
            return {out: np.ascontiguousarray(np.take(self._table, codes + 1, axis=1).swapaxes(0, 1))}
        result = codes.astype(np.uint8)
        masked = codes < 0
        if masked.any():
            result[masked] = self.config.codebook_size
        return {out: result}

    # -- wire form: the code grid crosses (1 byte a cell), ``finish`` makes bit-planes or vectors there ---------
    def wire_form(self, transforms: list) -> bool:
        return self.options.output != "codes"  # codes: the output is the grid already

    def wire(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        return self.wire_batch(codes)

    def wire_batch(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """The (augmented) codes, -1 = masked: int8 when the codebook fits, else int16."""
        return {"codes": codes.astype(np.int8 if self.config.codebook_size <= 128 else np.int16)}

    def finish(self, wire: dict) -> dict:
        """:meth:`finalize_batch` of the code grid with torch operations on its device (the same values)."""
        import torch

        codes = wire["codes"]
        masked = codes < 0
        if self.options.output == "bits":
            shifts = torch.arange(self.config.bits, dtype=torch.uint8, device=codes.device)[None, :, None, None]
            planes = ((codes.to(torch.int16).to(torch.uint8)[:, None] >> shifts) & 1).to(torch.int8) * 2 - 1
            return {"bits": planes.masked_fill(masked[:, None], 0)}
        table = self._device_table(codes.device)
        return {"vectors": table[:, (codes.to(torch.int64) + 1)].transpose(0, 1).contiguous()}

    def finish_arrays(self, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`finalize_batch` of the code grid (int16: ``codes + 1`` must not wrap)."""
        return self.finalize_batch(wire["codes"].astype(np.int16))

    def _device_table(self, device):
        import torch

        tables = self.__dict__.setdefault("_tables", {})
        if str(device) not in tables:
            tables[str(device)] = torch.from_numpy(self._table).to(device)
        return tables[str(device)]

    def output_spec(self) -> dict[str, TensorSpec]:
        h, w = self.config.grid
        w = self.options.frames or w
        k = self.config.codebook_size
        if self.options.output == "codes":
            return {"codes": TensorSpec((h, w), "uint8", f"code per block (mel bins x frames), {k} = masked")}
        if self.options.output == "bits":
            return {"bits": TensorSpec((self.config.bits, h, w), "int8", "code bit-planes, LSB first: -1/+1, 0 = masked")}
        d = self.config.block[0] * self.config.block[1]
        return {"vectors": TensorSpec((d, h, w), "float32", "codebook vector per block (log-mel), 0 = masked")}

    def default_transforms(self, train: bool) -> list:
        from ..augment.codes import default_time_crop

        return default_time_crop(self.options.frames, train)


def to_blocks(spec: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """``[F, T]`` -> ``[(F/bf)*(T/bt), bf*bt]``, cells in row-major (frequency, time) order."""
    (f, t), (bf, bt) = spec.shape, block
    return spec.reshape(f // bf, bf, t // bt, bt).transpose(0, 2, 1, 3).reshape(-1, bf * bt)


def nearest(vectors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook vector (Euclidean) for each row of ``vectors``."""
    d = (codebook**2).sum(1)[None, :] - 2.0 * vectors @ codebook.T
    return d.argmin(axis=1).astype(np.uint8)


def pack(codes: np.ndarray, bits: int) -> bytes:
    """Codes as bytes: two per byte (high nibble first) when ``bits <= 4``, else one per byte."""
    flat = codes.astype(np.uint8).ravel()
    if bits > 4:
        return flat.tobytes()
    if flat.size % 2:
        flat = np.append(flat, 0)
    return ((flat[0::2] << 4) | flat[1::2]).astype(np.uint8).tobytes()


def unpack(data: bytes, bits: int, count: int) -> np.ndarray | None:
    """Inverse of :func:`pack`; ``None`` when ``data`` is not ``count`` codes long."""
    raw = np.frombuffer(data, np.uint8)
    if bits > 4:
        return raw.astype(np.int16) if raw.size == count else None
    if raw.size != (count + 1) // 2:
        return None
    out = np.empty((raw.size, 2), np.int16)  # shifts beat a byte-table lookup (fancy indexing) 4x here
    out[:, 0] = raw >> 4
    out[:, 1] = raw & 15
    return out.ravel()[:count]


def unpack_rows(raw: np.ndarray, bits: int, count: int) -> np.ndarray:
    """:func:`unpack` of each row of uint8 ``raw [B, bytes]``: int16 ``[B, count]``."""
    if bits > 4:
        return raw.astype(np.int16)
    out = np.empty((raw.shape[0], raw.shape[1], 2), np.int16)
    out[:, :, 0] = raw >> 4
    out[:, :, 1] = raw & 15
    return out.reshape(raw.shape[0], -1)[:, :count]
