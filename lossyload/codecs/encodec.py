"""``encodec``: audio as EnCodec 24 kHz residual-vector-quantized codes (package ``encodec``).

Shard time runs EnCodec's encoder at ``bandwidth`` kbps (1.5 / 3 / 6 / 12 / 24: 2 / 4 / 8 / 16 / 32 RVQ
levels of 1024 codes, 75 frames per second) and stores the codes bit-packed at 10 bits. The codebooks of
the levels used are written beside the index (``encodec-codebooks.npy``), so the loader returns either the
codes or the continuous latent (the sum of the selected codebook vectors, ``[128, T]``) with numpy alone:
no EnCodec network runs at load time. The bandwidth can be lowered at load time (fewer levels).

Weights: ``weights="pretrained"`` loads the published checkpoint from the torch hub cache (or a path to the
``.th`` file); ``weights="random"`` is a random-initialised model for tests and offline demos (its codebooks
are initialised from a seeded reference signal, since EnCodec starts them at zero for k-means).

The canonical sample is int16 codes ``[levels, T]`` with ``-1`` marking masked or dropped entries; outputs
``codes`` (int16, masked = 1024) or ``latent`` (float32, masked entries contribute nothing).
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..media.audio import ClipConfig, fit_clip, resample
from ..errors import CodecError, DecodeError, require
from .registry import register_codec
from .base import Codec, Encoded, TensorSpec

MODEL_RATE = 24000
HOP = 320  # samples per frame: 75 frames per second
BINS = 1024
DIM = 128
LEVELS = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}  # kbps -> RVQ levels
CHECKPOINT = "encodec_24khz-d7cc33bc.th"
CHECKPOINT_URL = f"https://dl.fbaipublicfiles.com/encodec/v0/{CHECKPOINT}"
ASSET = "encodec-codebooks.npy"
_MAGIC = b"E"


@dataclass(frozen=True, kw_only=True)
class EncodecConfig(ClipConfig):
    model: str = "encodec_24khz"
    bandwidth: float = 6.0  # kbps
    weights: str = "pretrained"  # "pretrained" (torch hub cache) | "random" | path to the checkpoint file
    seed: int = 0  # weights="random": the model and codebook initialisation

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model != "encodec_24khz":
            raise ValueError("model must be 'encodec_24khz'")
        if float(self.bandwidth) not in LEVELS:
            raise ValueError(f"bandwidth must be one of {sorted(LEVELS)} kbps")

    @property
    def levels(self) -> int:
        return LEVELS[float(self.bandwidth)]

    @property
    def frames(self) -> int:
        return math.ceil(self.length * MODEL_RATE / self.sample_rate / HOP)


@dataclass(frozen=True, kw_only=True)
class EncodecOptions:
    output: str = "codes"  # "codes" | "latent"
    bandwidth: float | None = None  # load fewer RVQ levels than stored (None: all stored)
    frames: int | None = None  # code frames of the default training crop (None: the whole clip)

    def __post_init__(self) -> None:
        if self.output not in ("codes", "latent"):
            raise ValueError("output must be 'codes' or 'latent'")
        if self.bandwidth is not None and float(self.bandwidth) not in LEVELS:
            raise ValueError(f"bandwidth must be one of {sorted(LEVELS)} kbps")


@register_codec
class Encodec(Codec):
    name = "encodec"
    no_dali_form = ("its members are lossyload's custom bit-packed codes: unpacking needs lossyload's unpacker on "
                    "the host")
    member = "ecq"
    Config = EncodecConfig
    Options = EncodecOptions

    def __init__(self, config: EncodecConfig | None = None, options: EncodecOptions | None = None) -> None:
        super().__init__(config, options)
        bw = self.options.bandwidth
        self.levels = self.config.levels if bw is None else LEVELS[float(bw)]
        if self.levels > self.config.levels:
            raise CodecError(f"encodec: bandwidth {bw} kbps needs {self.levels} levels; the shards hold "
                             f"{self.config.levels} ({self.config.bandwidth} kbps)")
        self._table: np.ndarray | None = None

    # -- shard time ---------------------------------------------------------------------------------------
    def check_encoder(self) -> None:
        require("encodec", "audio")
        if self.config.weights != "random":
            checkpoint_path(self.config.weights)

    def encode(self, data: bytes, *, source: str) -> Encoded:
        torch = require("torch", "audio")
        clip, notes = fit_clip(data, self.config, source=source)
        wave = resample(clip, self.config.sample_rate, MODEL_RATE) if self.config.sample_rate != MODEL_RATE else clip
        model = load_model(self.config.weights, self.config.seed, self.config.bandwidth)
        with torch.inference_mode():
            codes = model.encode(torch.from_numpy(wave)[None, None])[0][0][0].numpy()
        return Encoded(pack_codes(codes), "; ".join(notes) or None)

    def assets(self) -> dict[str, bytes]:
        model = load_model(self.config.weights, self.config.seed, self.config.bandwidth)
        books = np.stack([layer._codebook.embed.numpy() for layer in model.quantizer.vq.layers[: self.config.levels]])
        buf = io.BytesIO()
        np.save(buf, books.astype(np.float32), allow_pickle=False)
        return {ASSET: buf.getvalue()}

    # -- load time ----------------------------------------------------------------------------------------
    def load_assets(self, assets: dict[str, bytes]) -> None:
        if ASSET not in assets:
            return
        try:
            books = np.load(io.BytesIO(assets[ASSET]), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise CodecError(f"encodec: {ASSET} is not a plain .npy array ({type(exc).__name__}: {exc})") from exc
        if books.shape != (self.config.levels, BINS, DIM) or books.dtype != np.float32:
            raise CodecError(f"encodec: {ASSET} holds {books.dtype}{list(books.shape)}, expected float32"
                             f"[{self.config.levels}, {BINS}, {DIM}]")
        table = books[: self.levels].reshape(-1, DIM)
        self._table = np.concatenate([table, np.zeros((1, DIM), np.float32)])  # last row: masked

    def decode(self, payload: bytes) -> np.ndarray:
        codes = unpack_codes(payload)
        if codes.shape != (self.config.levels, self.config.frames):
            raise DecodeError(f"encodec member holds codes {list(codes.shape)}, expected "
                              f"[{self.config.levels}, {self.config.frames}]")
        return codes[: self.levels].astype(np.int16)

    def finalize(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        if self.options.output == "codes":
            return {"codes": np.where(codes < 0, BINS, codes).astype(np.int16)}
        if self._table is None:
            raise CodecError(f"encodec: output='latent' needs the codebooks ({ASSET}) named in the index")
        index = codes + (np.arange(codes.shape[0]) * BINS)[:, None]
        index = np.where(codes < 0, len(self._table) - 1, index)
        return {"latent": np.ascontiguousarray(self._table[index].sum(axis=0).T)}

    # -- batch path: one header check, one 10-bit unpack and one lookup per batch ---------------------------
    def batch_decoding(self) -> bool:
        return True

    def decode_many(self, payloads: list[bytes]) -> np.ndarray:
        """int16 ``[B, levels, T]``: ``decode`` of each payload."""
        levels, t = self.config.levels, self.config.frames
        size = 4 + (levels * t * 10 + 7) // 8
        head = _MAGIC + bytes([levels]) + int(t).to_bytes(2, "little")
        for p in payloads:
            if len(p) != size or p[:4] != head:
                self.decode(p)  # raises the per-sample error
                raise DecodeError("encodec member does not hold the stored code grid")  # pragma: no cover
        raw = np.frombuffer(b"".join(payloads), np.uint8).reshape(len(payloads), size)[:, 4:]
        codes = unpack_rows(raw, levels * t).reshape(len(payloads), levels, t)
        return codes[:, : self.levels].astype(np.int16)

    def finalize_batch(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        if self.options.output == "codes":
            return {"codes": np.where(codes < 0, BINS, codes).astype(np.int16)}
        if self._table is None:
            raise CodecError(f"encodec: output='latent' needs the codebooks ({ASSET}) named in the index")
        index = codes + (np.arange(codes.shape[1]) * BINS)[None, :, None]
        index = np.where(codes < 0, len(self._table) - 1, index)
        return {"latent": np.ascontiguousarray(self._table[index].sum(axis=1).swapaxes(1, 2))}

    # -- wire form (``output="latent"``): the int16 codes cross, ``finish`` sums the codebook vectors there -----
    def wire_form(self, transforms: list) -> bool:
        return self.options.output == "latent"  # codes: the output is the codes already

    def wire(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        return {"codes": codes.astype(np.int16)}

    def wire_batch(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        return {"codes": codes.astype(np.int16)}

    def finish_arrays(self, wire: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`finalize_batch` of the codes: the host path's lookup and sum."""
        return self.finalize_batch(wire["codes"])

    def finish(self, wire: dict) -> dict:
        """:meth:`finalize_batch`'s lookup and sum with torch operations on the codes' device (float32 sums:
        equal to the host path within rounding)."""
        import torch

        codes = wire["codes"].to(torch.int64)
        if self._table is None:
            raise CodecError(f"encodec: output='latent' needs the codebooks ({ASSET}) named in the index")
        tables = self.__dict__.setdefault("_tables", {})
        if str(codes.device) not in tables:
            tables[str(codes.device)] = torch.from_numpy(self._table).to(codes.device)
        table = tables[str(codes.device)]
        index = codes + (torch.arange(codes.shape[1], device=codes.device) * BINS)[None, :, None]
        index = torch.where(codes < 0, len(table) - 1, index)
        return {"latent": table[index].sum(dim=1).transpose(1, 2).contiguous()}

    def output_spec(self) -> dict[str, TensorSpec]:
        t = self.options.frames or self.config.frames
        if self.options.output == "codes":
            return {"codes": TensorSpec((self.levels, t), "int16", f"RVQ codes (levels x frames), {BINS} = masked")}
        return {"latent": TensorSpec((DIM, t), "float32", "sum of the RVQ codebook vectors (EnCodec latent)")}

    def default_transforms(self, train: bool) -> list:
        from ..augment.codes import default_time_crop

        return default_time_crop(self.options.frames, train)


def pack_codes(codes: np.ndarray) -> bytes:
    """``[levels, T]`` codes < 1024 as a 4-byte header (magic, levels, T) and 10-bit little-endian fields."""
    levels, t = codes.shape
    bits = (codes.astype(np.uint16).ravel()[:, None] >> np.arange(10, dtype=np.uint16)) & 1
    body = np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return _MAGIC + bytes([levels]) + int(t).to_bytes(2, "little") + body


def unpack_codes(payload: bytes) -> np.ndarray:
    if len(payload) < 4 or payload[:1] != _MAGIC:
        raise DecodeError("encodec member does not start with the code header")
    levels, t = payload[1], int.from_bytes(payload[2:4], "little")
    n = levels * t
    body = np.frombuffer(payload, np.uint8, offset=4)
    if body.size != (n * 10 + 7) // 8:
        raise DecodeError(f"encodec member body is {body.size} bytes, not {levels}x{t} 10-bit codes")
    bits = np.unpackbits(body, bitorder="little")[: n * 10].reshape(n, 10).astype(np.uint16)
    return (bits << np.arange(10, dtype=np.uint16)).sum(axis=1, dtype=np.uint16).reshape(levels, t)


def checkpoint_path(weights: str) -> str:
    """The checkpoint file for ``weights`` ("pretrained": the torch hub cache); clear error when absent."""
    torch = require("torch", "audio")
    path = os.path.join(torch.hub.get_dir(), "checkpoints", CHECKPOINT) if weights == "pretrained" else weights
    if not os.path.isfile(path):
        raise CodecError(
            f"encodec: pretrained weights not found at {path}. Download {CHECKPOINT_URL} there (or run "
            "`python -c 'from encodec import EncodecModel; EncodecModel.encodec_model_24khz()'` once online), or "
            "pass the file with --set weights='\"/path/to/file.th\"'. For tests and offline demos only: "
            "--set weights='\"random\"' (a random-initialised model, not a real codec)."
        )
    return path


def choose_weights(choice: str) -> str:
    """``auto``: the pretrained checkpoint when it is in the torch hub cache, else a random-initialised model
    (said so on stdout); any other choice is returned as it is."""
    if choice != "auto":
        return choice
    try:
        checkpoint_path("pretrained")
        return "pretrained"
    except CodecError:
        print(f"encodec: no pretrained checkpoint ({CHECKPOINT}) in the torch hub cache: using a RANDOM-initialised "
              "EnCodec (its codes are not a real codec's)", flush=True)
        return "random"


@functools.lru_cache(maxsize=2)
def load_model(weights: str, seed: int, bandwidth: float):
    """The EnCodec 24 kHz model in eval mode at ``bandwidth`` (cached per process)."""
    torch = require("torch", "audio")
    encodec = require("encodec", "audio")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.nn.utils.weight_norm` is deprecated", FutureWarning)
        torch.manual_seed(seed)
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    if weights == "random":
        _init_codebooks(model, seed)
    else:
        path = checkpoint_path(weights)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.set_target_bandwidth(float(bandwidth))
    return model.eval()


def _init_codebooks(model, seed: int) -> None:
    """EnCodec's codebooks start at zero (k-means on the first training batch): draw each level's vectors
    from a normal fitted to that level's residuals on a seeded reference signal, so codes are not all 0."""
    torch = require("torch", "audio")
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(4 * MODEL_RATE) / MODEL_RATE
    ref = 0.05 * torch.randn(t.shape, generator=g) + 0.3 * torch.sin(2 * math.pi * 220 * t * (1 + t))
    with torch.inference_mode():
        residual = model.encoder(ref[None, None])[0].T  # [frames, 128]
        for layer in model.quantizer.vq.layers:
            book = layer._codebook
            embed = residual.mean(0) + residual.std(0) * torch.randn(BINS, DIM, generator=g)
            book.embed.copy_(embed)
            book.embed_avg.copy_(embed)
            book.inited.fill_(1)
            residual = residual - embed[book.quantize(residual)]


def unpack_rows(body: np.ndarray, n: int) -> np.ndarray:
    """uint16 ``[B, n]`` 10-bit codes of each row of ``body [B, bytes]`` (the layout of :func:`pack_codes`)."""
    b = body.shape[0]
    if n % 4 == 0:  # 4 codes in each 5 bytes: one little-endian 40-bit word
        five = body[:, : n // 4 * 5].reshape(b, n // 4, 5).astype(np.uint64)
        word = five[..., 0] | five[..., 1] << 8 | five[..., 2] << 16 | five[..., 3] << 24 | five[..., 4] << 32
        codes = (word[..., None] >> np.arange(0, 40, 10, dtype=np.uint64)) & 1023
        return codes.reshape(b, n).astype(np.uint16)
    bits = np.unpackbits(body, axis=1, bitorder="little")[:, : n * 10].reshape(b, n, 10).astype(np.uint16)
    return (bits << np.arange(10, dtype=np.uint16)).sum(axis=2, dtype=np.uint16)
