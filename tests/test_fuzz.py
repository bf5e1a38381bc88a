"""Fuzzing the parsers of untrusted bytes: the tar reader, ``index.json`` and every codec's ``decode`` (and
``decode_window``) on random bytes and on mutated valid inputs. Each either succeeds or raises a
:class:`LossyloadError` subclass -- never another exception, never a hang (hypothesis ``deadline``), never a read
or allocation sized by a corrupt header.

Every run tests the same examples (``derandomize``; ``LOSSYLOAD_FUZZ_SCALE=50`` for a long random run); the
inputs the fuzzer once broke are pinned as examples or tests."""

from __future__ import annotations

import functools
import io
import json
import os
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lossyload.codecs import create_codec, list_codecs
from lossyload.errors import DecodeError, IndexFormatError, LossyloadError, ShardError
from lossyload.index import Index, ShardInfo
from lossyload.loader import tario

from .conftest import audio_bytes, jpeg_bytes, synthetic_rgb

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # float16 NaN/inf payloads: exp overflow


SCALE = float(os.environ.get("LOSSYLOAD_FUZZ_SCALE", "1"))  # examples x SCALE; random (not derandomized) if not 1


def fuzz(max_examples: int, deadline_ms: int = 500):
    return settings(max_examples=max(1, round(max_examples * SCALE)), deadline=deadline_ms, derandomize=SCALE == 1,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                          HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------- mutations
# Half of the edit positions fall in the first 64 bytes, where most formats keep their header.
POS = st.one_of(st.integers(0, 63), st.integers(0, 1 << 20))


def edits(pos: st.SearchStrategy[int] = POS, max_ops: int = 4) -> st.SearchStrategy[list[tuple]]:
    op = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(1, 255)),
        st.tuples(st.just("set"), pos, st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    )
    return st.lists(op, min_size=1, max_size=max_ops)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """``data`` with the edits ``ops`` applied in turn (positions wrap around the current length)."""
    b = bytearray(data)
    for kind, *args in ops:
        n = len(b)
        if kind == "flip" and n:
            b[args[0] % n] ^= args[1]
        elif kind == "set" and n:
            b[args[0] % n] = args[1]
        elif kind == "truncate":
            del b[args[0] % (n + 1):]
        elif kind == "insert":
            i = args[0] % (n + 1)
            b[i:i] = args[1]
        elif kind == "delete" and n:
            i = args[0] % n
            del b[i : i + args[1]]
        elif kind == "extend":
            b += args[0]
    return bytes(b)


# ------------------------------------------------------------------------------------------- tar
class Probe(io.BytesIO):
    """A shard stream that fails the test when the reader asks for a negative or oversized read: a corrupt
    header must never size a read (an allocation, for buffered files) beyond ``max_member``."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def read(self, n: int | None = -1) -> bytes:
        assert n is not None and 0 <= n <= self.limit, f"tario asked for read({n})"
        return super().read(n)


MAX_MEMBER = 4096  # small, so corrupt sizes hit the bound often


def read_shard(data: bytes, max_member: int = MAX_MEMBER) -> list[dict]:
    """All samples of ``data``, or ``[]`` after a :class:`ShardError` (anything else propagates)."""
    try:
        return list(tario.samples(Probe(data, max(max_member, tario.BLOCK)), "fuzz.tar", max_member))
    except ShardError as exc:
        assert "fuzz.tar" in str(exc)
        return []


def _make_tar(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name: str, data: bytes = b"", **kw) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for k, v in kw.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data))

        add("dir", type=tarfile.DIRTYPE)
        add("dir/a.jpg", bytes(range(256)) * 2 + b"tail")  # crosses a block boundary
        add("dir/a.cls", b"3")
        add("dir/link.jpg", type=tarfile.SYMTYPE, linkname="a.jpg")
        if fmt != tarfile.USTAR_FORMAT:
            add("long/" + "n" * 120 + ".jpg", b"long name")  # GNU 'L' or pax 'path' record
        add("b.jpg", b"")
        add("b.cls", b"12")
    return buf.getvalue()


TARS = {fmt: _make_tar(getattr(tarfile, fmt)) for fmt in ("GNU_FORMAT", "PAX_FORMAT", "USTAR_FORMAT")}


def header_offsets(data: bytes) -> list[int]:
    """Offsets of the headers of a valid tar."""
    out, off = [], 0
    while off + tario.BLOCK <= len(data) and data[off : off + tario.BLOCK] != bytes(tario.BLOCK):
        out.append(off)
        size = int(data[off + 124 : off + 136].rstrip(b"\0 ") or b"0", 8)
        off += tario.BLOCK + -(-size // tario.BLOCK) * tario.BLOCK
    return out


def fix_checksums(data: bytes, offsets: list[int]) -> bytes:
    """Rewrite the checksum of the 512-byte blocks at ``offsets``, so corrupt fields get past the checksum."""
    b = bytearray(data)
    for off in offsets:
        if off + tario.BLOCK <= len(b):
            h = b[off : off + tario.BLOCK]
            b[off + 148 : off + 156] = b"%06o\0 " % (sum(h[:148]) + 256 + sum(h[156:]))
    return bytes(b)


def test_the_valid_tars_read_back() -> None:
    for fmt, raw in TARS.items():
        keys = ["dir/a", "b"] if fmt == "USTAR_FORMAT" else ["dir/a", "long/" + "n" * 120, "b"]
        assert [s["__key__"] for s in read_shard(raw, max_member=tario.MAX_MEMBER)] == keys
        assert len(header_offsets(raw)) >= 6


@fuzz(200, 200)
@given(data=st.binary(max_size=4096))
@example(data=b"\0" * 511)
@example(data=fix_checksums(b"x.jpg".ljust(124, b"\0") + b"-0000000001\0".ljust(388, b"\0"), [0]))  # size -1
def test_tar_reader_on_random_bytes(data: bytes) -> None:
    read_shard(data)
    read_shard(fix_checksums(data, range(0, len(data), tario.BLOCK)))  # past the checksum: the fields parse


@fuzz(250, 200)
@given(data=st.data(), fmt=st.sampled_from(sorted(TARS)), fix=st.booleans())
def test_tar_reader_on_mutated_tars(data, fmt: str, fix: bool) -> None:
    raw = TARS[fmt]
    offsets = header_offsets(raw)
    in_header = st.sampled_from(offsets).flatmap(lambda o: st.integers(o, o + tario.BLOCK - 1))
    bad = mutate(raw, data.draw(edits(st.one_of(in_header, st.integers(0, len(raw))))))
    read_shard(fix_checksums(bad, offsets) if fix else bad)


def test_a_member_declaring_a_huge_size_is_refused_before_any_read() -> None:
    for size_field in (b"%011o\0" % (tario.MAX_MEMBER + 1), b"\x80" + (1 << 80).to_bytes(11, "big")):
        head = fix_checksums(b"big.jpg".ljust(124, b"\0") + size_field + bytes(376), [0])
        with pytest.raises(ShardError, match="more than the"):
            list(tario.samples(Probe(head, tario.BLOCK), "fuzz.tar"))


def test_a_negative_member_size_is_a_shard_error() -> None:
    for size_field in (b"-0000000001\0", b"\xff" * 12):  # octal with a sign, GNU base-256 negative
        head = fix_checksums(b"neg.jpg".ljust(124, b"\0") + size_field + bytes(376), [0])
        with pytest.raises(ShardError, match="fuzz.tar: corrupt tar header"):
            list(tario.samples(Probe(head + bytes(2048), tario.BLOCK), "fuzz.tar"))


# ------------------------------------------------------------------------------------------- index
def valid_index() -> dict:
    index = Index(codec="jpeg-dct", config={"storage": "jpeg", "keep": [64, 64]}, labels=["cat", "dog"], member="jpg",
                  shards=[ShardInfo(url="shard-000000.tar", samples=3, bytes=30720, sha256="a" * 64,
                                    transcoded={"cat/x": "png source"}),
                          ShardInfo(url="sub/shard-000001.tar", samples=2, bytes=20480, sha256="b" * 64)],
                  skipped={"/src/bad.jpg": "not an image"}, assets={"books.npy": "c" * 64})
    return json.loads(index.to_json())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["..", "/abs", "pipe:x", "a\\b", "", "./a", "1e999", "NaN"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def load_index(text: str | bytes) -> None:
    try:
        Index.from_json(text, where="fuzz/index.json")
    except IndexFormatError as exc:
        assert "fuzz/index.json" in str(exc)


def test_the_valid_index_loads() -> None:
    assert Index.from_json(json.dumps(valid_index())).samples == 5


@fuzz(150, 300)
@given(text=st.text(max_size=200) | st.binary(max_size=200) | JSON.map(json.dumps))
@example(text="[" * 100_000)  # nesting beyond the interpreter's recursion limit
@example(text='{"version": 1, "labels": [' * 3000)
@example(text="1" * 5000)  # an integer beyond Python's int/str conversion limit
@example(text='{"version": 1e400}')
def test_index_on_random_documents(text) -> None:
    load_index(text)


@fuzz(200, 300)
@given(data=st.data(), as_text=st.booleans())
def test_index_with_mutated_values(data, as_text: bool) -> None:
    doc = valid_index()
    for _ in range(data.draw(st.integers(1, 3))):
        node = doc
        while True:  # walk down to a random value, then replace or delete it (or add a key beside it)
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            k = data.draw(st.sampled_from(keys))
            if isinstance(node[k], (dict, list)) and node[k] and data.draw(st.booleans()):
                node = node[k]
                continue
            action = data.draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                node[k] = data.draw(JSON)
            elif action == "delete":
                del node[k]
            elif isinstance(node, dict):
                node[data.draw(st.text(max_size=6))] = data.draw(JSON)
            else:
                node.append(data.draw(JSON))
            break
    text = json.dumps(doc)
    if as_text:
        text = mutate(text.encode(), data.draw(edits(st.integers(0, len(text)))))
    load_index(text)


@pytest.mark.parametrize("path, value", [
    (("shards", 0, "samples"), "Infinity"),
    (("shards", 0, "bytes"), "NaN"),
    (("shards", 1, "samples"), "1" * 5000),  # beyond Python's int/str conversion limit
    (("labels",), "[" * 5000 + "]" * 5000),  # beyond the recursion limit
    (("codec", "config"), "[[1, 2, 3]]"),
], ids=["inf-samples", "nan-bytes", "huge-int", "deep-labels", "config-pairs"])
def test_index_values_of_the_wrong_kind_are_index_format_errors(path, value: str) -> None:
    doc = valid_index()
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = "@@"
    with pytest.raises(IndexFormatError, match="fuzz/index.json: "):
        Index.from_json(json.dumps(doc).replace('"@@"', value), where="fuzz/index.json")


# ------------------------------------------------------------------------------------------- codecs
VQ_CODEBOOK = [[round(float(v), 3) for v in row]
               for row in np.linspace(-13.5, 3.5, 16)[:, None] + np.random.default_rng(7).normal(0.0, 0.5, (16, 4))]
VAE = {"model": "random:tiny", "resolution": 32, "latent_channels": 4, "downsample": 8, "scaling_factor": 0.5,
       "shift_factor": 0.1, "scale": [0.02] * 4, "offset": [0.0] * 4}
CLIP = {"sample_rate": 8000, "seconds": 0.25}


def _image() -> bytes:
    return jpeg_bytes(synthetic_rgb(32, 48, seed=3), quality=80)


def _tone(rate: int = 8000, seconds: float = 0.25) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return audio_bytes(0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.shape),
                       rate)


def _encodec_payload(codec) -> bytes:  # the model only runs at shard time: pack codes the way encode does
    from lossyload.codecs.encodec import pack_codes

    return pack_codes(np.random.default_rng(0).integers(0, 1024, (codec.config.levels, codec.config.frames)))


def _vae_payload(codec) -> bytes:  # likewise: the stored array, in the config's storage type
    c = codec.config
    shape = (c.views, c.planes, c.latent_channels, c.grid, c.grid)
    rng = np.random.default_rng(0)
    if c.storage == "float16":
        return rng.normal(0, 1, shape).astype(np.float16).tobytes()
    return rng.integers(-127, 128, shape).astype(np.int8).tobytes()


# name, config, options, payload maker (None: the codec's own encode of a real source)
CODECS = {
    "jpeg-dct": ("jpeg-dct", {}, {"crop": 32}, None),
    "jpeg-dct-444-progressive": ("jpeg-dct", {}, {"crop": 32},
                                 lambda c: jpeg_bytes(synthetic_rgb(32, 32, seed=4), subsampling=0, progressive=True)),
    "jpeg-dct-coefficients": ("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]}, {"crop": 32}, None),
    "jpeg-dct-coefficients-lz4": ("jpeg-dct", {"storage": "coefficients", "compression": "lz4"}, {"crop": 32}, None),
    "rgb-turbo": ("rgb", {}, {"backend": "turbo"}, None),
    "rgb-pil": ("rgb", {}, {"backend": "pil"}, None),
    "mel-flac": ("mel", CLIP, {}, None),
    "mel-wav": ("mel", {**CLIP, "format": "wav"}, {"output": "wave"}, None),
    "vq": ("vq", {**CLIP, "n_mels": 32, "frames": 32, "codebook": VQ_CODEBOOK}, {"output": "bits"}, None),
    "vq-256": ("vq", {**CLIP, "n_mels": 16, "frames": 16, "block": [1, 1], "codebook_size": 200,
                      "codebook": [[i / 10] for i in range(200)]}, {}, None),
    "encodec": ("encodec", {**CLIP, "weights": "random", "bandwidth": 3.0}, {"output": "codes"}, _encodec_payload),
    "vae-int8": ("vae", VAE, {}, _vae_payload),
    "vae-float16-std": ("vae", {**VAE, "storage": "float16", "scale": None, "offset": None, "store_std": True,
                                "views": 2}, {"scaled": False}, _vae_payload),
}


def test_every_registered_codec_is_fuzzed() -> None:
    assert {name for name, *_ in CODECS.values()} == set(list_codecs())


@functools.lru_cache(maxsize=None)
def built(case: str):
    """``(codec, valid payload, window)`` of a case; the payload decodes (and finalizes) cleanly."""
    name, config, options, make = CODECS[case]
    codec = create_codec(name, config, options)
    source = _image() if name in ("jpeg-dct", "rgb", "vae") else _tone()
    payload = make(codec) if make else codec.encode(source, source="fuzz").payload
    window = None
    if hasattr(codec, "decode_window"):
        from lossyload.augment.dct import RandomCrop

        crop, rng = RandomCrop(size=32), np.random.default_rng(0)
        window = lambda hm, wm: crop.window(hm, wm, rng)  # noqa: E731
    codec.finalize(codec.decode(payload))  # warm up (imports, tables, PIL's plugins) outside the deadline
    with pytest.raises(LossyloadError):
        codec.decode(b"junk!")
    if window:
        codec.finalize(codec.decode_window(payload, window))
    return codec, payload, window


@pytest.fixture
def case_codec(case: str):
    """``built(case)``, made before hypothesis starts timing examples."""
    return built(case)


def decode_all(case_codec, payload: bytes) -> None:
    """``decode`` (and ``decode_window``) of ``payload`` then ``finalize``: success or a LossyloadError."""
    codec, _, window = case_codec
    calls = [codec.decode] + ([functools.partial(codec.decode_window, window=window)] if window else [])
    for call in calls:
        try:
            sample = call(payload)
        except LossyloadError:
            continue
        codec.finalize(sample)  # what decode accepts must also finish as an output


CASES = sorted(CODECS)


@pytest.mark.parametrize("case", CASES)
def test_codec_decodes_its_valid_payload(case_codec) -> None:
    codec, payload, _ = case_codec
    assert codec.decode(payload) is not None


@pytest.mark.parametrize("case", CASES)
@fuzz(40)
@given(data=st.binary(max_size=2048))
@example(data=b"")
def test_codec_decode_of_random_bytes(case_codec, data: bytes) -> None:
    decode_all(case_codec, data)


@pytest.mark.parametrize("case", CASES)
@fuzz(60)
@given(ops=edits())
def test_codec_decode_of_mutated_payloads(case_codec, ops: list[tuple]) -> None:
    decode_all(case_codec, mutate(case_codec[1], ops))


def _zstd_frame_claiming(size: int, body: bytes = b"") -> bytes:
    """A zstd frame header stating content ``size`` (8-byte field, single segment), then ``body``."""
    return b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + size.to_bytes(8, "little") + body


@pytest.mark.parametrize("case", ["vq", "jpeg-dct-coefficients"])
def test_a_zstd_frame_claiming_a_huge_size_is_refused_before_allocating(case: str) -> None:
    codec, _, _ = built(case)
    with pytest.raises(DecodeError, match="bytes unpacked, more than"):
        codec.decode(_zstd_frame_claiming(1 << 50))


def test_vq_codes_out_of_the_codebook_stay_decode_errors() -> None:
    codec, payload, _ = built("vq-256")
    import zstandard

    raw = bytearray(zstandard.ZstdDecompressor().decompress(payload))
    raw[5] = 255
    with pytest.raises(DecodeError, match="code 255 >= codebook_size 200"):
        codec.decode(zstandard.ZstdCompressor().compress(bytes(raw)))


@pytest.mark.parametrize("case", ["jpeg-dct"])
@fuzz(150)
@given(ops=edits())
def test_frame_size_finds_the_frame_libjpeg_decodes(case_codec, ops: list[tuple]) -> None:
    """The pixel bound checked before decoding reads the frame header libjpeg uses: it cannot be sidestepped."""
    from lossyload.media import jpeg

    data = mutate(case_codec[1], ops)
    size = jpeg.frame_size(data)
    try:
        j = jpeg._read_jpegio(data)
    except DecodeError:
        return
    assert size == (j.image_height, j.image_width)


def _segments(data: bytes):
    """``(offset, marker)`` of the segments of a JPEG up to its first scan."""
    i = 2
    while data[i + 1] != 0xDA:
        yield i, data[i + 1]
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")


def with_frame(data: bytes, height: int, width: int, garbage: bytes = b"") -> bytes:
    """JPEG ``data`` whose frame header states ``height`` x ``width``, with ``garbage`` before it."""
    b = bytearray(data)
    off = next(i for i, m in _segments(data) if m in (0xC0, 0xC1, 0xC2))
    b[off + 5 : off + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    b[off:off] = garbage
    return bytes(b)


@pytest.mark.parametrize("case, garbage", [
    ("jpeg-dct", b""), ("jpeg-dct", b"\x00\xff\x00junk\xff"),  # libjpeg skips bytes between segments
    ("rgb-turbo", b""), ("rgb-turbo", b"\x00\xff\x00junk\xff"),
    ("rgb-pil", b""),  # PIL reads the frame itself
])
def test_a_jpeg_stating_a_huge_frame_is_refused_before_decoding(case: str, garbage: bytes) -> None:
    codec, payload, window = built(case)  # max_pixels 64M by default
    bad = with_frame(payload, 10_000, 10_000, garbage)
    with pytest.raises(DecodeError, match=r"states 10000x10000 pixels, more than max_pixels=64000000"):
        codec.decode(bad)
    if window:
        with pytest.raises(DecodeError, match="more than max_pixels"):
            codec.decode_window(bad, window)


def test_a_zero_in_a_chroma_table_to_requantize_is_a_decode_error() -> None:
    codec, payload, _ = built("jpeg-dct-444-progressive")  # 4:4:4 chroma is requantized onto the 4:2:0 grid
    b = bytearray(payload)
    for off, marker in _segments(payload):
        j = off + 4
        while marker == 0xDB and j < off + 2 + int.from_bytes(payload[off + 2 : off + 4], "big"):
            if payload[j] & 15 == 1:  # table 1 (chroma): its DC entry set to 0
                b[j + 1] = 0
            j += 1 + 64 * (1 + (payload[j] >> 4))
    assert bytes(b) != payload
    with pytest.raises(DecodeError, match="chroma quantization table 1 holds a zero"):
        codec.decode(bytes(b))


def test_audio_stating_a_huge_length_is_refused_before_reading() -> None:
    codec, payload, _ = built("mel-flac")
    assert payload[:4] == b"fLaC"
    b = bytearray(payload)
    b[21] |= 0x0F  # STREAMINFO total samples: + 15 * 2^32
    with pytest.raises(DecodeError, match=r"flac member: states \d+ frames, more than the 2000 expected"):
        codec.decode(bytes(b))


def test_a_quantization_table_numbered_past_those_defined_is_a_decode_error() -> None:
    codec, _, _ = built("jpeg-dct")
    gray = jpeg_bytes(synthetic_rgb(32, 48, seed=3), mode="L")  # one table (0), one component using it
    b = bytearray(gray)
    for off, marker in _segments(gray):
        if marker == 0xDB:
            b[off + 4] |= 1  # the table is defined as number 1 ...
        elif marker in (0xC0, 0xC1, 0xC2):
            b[off + 12] = 1  # ... and the component uses table 1 (jpegio lists the tables without their numbers)
    with pytest.raises(DecodeError, match=r"quantization tables numbered \[1\] with 1 defined"):
        codec.decode(bytes(b))
