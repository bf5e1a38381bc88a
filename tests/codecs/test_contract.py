"""The contract every registered codec keeps: encode -> decode -> default transforms -> finalize gives what
``output_spec`` promises, deterministically; configs round-trip through JSON; bad names/fields/values are
clear ``CodecError``s."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lossyload.codecs import Codec, codec_class, create_codec, list_codecs
from lossyload.errors import CodecError, DecodeError

from ..conftest import jpeg_bytes, photo, png_bytes, synthetic_rgb

# Extra configs / options per codec; every registered codec is covered with at least its defaults.
CONFIGS = {
    "jpeg-dct": [{"storage": "jpeg"}, {"storage": "coefficients"}, {"storage": "coefficients", "keep": [16, 8]},
                 {"storage": "coefficients", "compression": "lz4"}],
}
OPTIONS = {
    "rgb": [{"backend": "turbo"}, {"backend": "pil"}],
    "jpeg-dct": [{}, {"chroma": "concat", "order": "natural", "dequantize": True}],
}
CASES = [
    pytest.param(name, config, options, id=f"{name}-{json.dumps(config)}-{json.dumps(options)}")
    for name in list_codecs()
    for config in CONFIGS.get(name, [{}])
    for options in OPTIONS.get(name, [{}])
]
CROP = 32


def sources() -> dict[str, bytes]:
    return {
        "jpeg-420": jpeg_bytes(photo(72, 100, top=50, left=60)),
        "jpeg-444-progressive": jpeg_bytes(photo(50, 66), subsampling=0, progressive=True),
        "grey": jpeg_bytes(photo(40, 40), mode="L"),
        "small-png": png_bytes(synthetic_rgb(20, 28)),  # smaller than the crop: padded / upscaled
    }


def run(codec: Codec, payload: bytes, train: bool, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sample = codec.decode(payload)
    for t in codec.default_transforms(train):
        sample = t(sample, rng)
    return codec.finalize(sample)


def test_every_codec_is_covered() -> None:
    assert {"jpeg-dct", "rgb"} <= set(list_codecs())
    assert {c.values[0] for c in CASES} == set(list_codecs())


@pytest.mark.parametrize("name, config, options", CASES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_pipeline_output_matches_spec(name: str, config: dict, options: dict, train: bool) -> None:
    codec = create_codec(name, config, {**options, "crop": CROP})
    spec = codec.output_spec()
    for source, data in sources().items():
        enc = codec.encode(data, source=source)
        assert isinstance(enc.payload, bytes) and enc.payload
        for seed in range(3):
            out = run(codec, enc.payload, train, seed)
            assert set(out) == set(spec), source
            for key, s in spec.items():
                assert isinstance(out[key], np.ndarray), (source, key)
                assert None not in s.shape
                assert out[key].shape == s.shape, (source, key)
                assert out[key].dtype == np.dtype(s.dtype), (source, key)
            assert all(CROP in s.shape or CROP // 8 in s.shape or CROP // 16 in s.shape
                       for s in spec.values() if len(s.shape) == 3)


@pytest.mark.parametrize("name, config, options", CASES)
def test_deterministic(name: str, config: dict, options: dict) -> None:
    a = create_codec(name, config, {**options, "crop": CROP})
    b = create_codec(name, config, {**options, "crop": CROP})
    data = sources()["jpeg-444-progressive"]
    png = sources()["small-png"]
    assert a.encode(data, source="x") == b.encode(data, source="x")
    assert a.encode(png, source="x") == b.encode(png, source="x")
    payload = a.encode(data, source="x").payload
    outs = [run(c, payload, True, seed) for c in (a, b, a) for seed in (7,)]
    for out in outs[1:]:
        assert out.keys() == outs[0].keys()
        for k in out:
            np.testing.assert_array_equal(out[k], outs[0][k])
    # and the seed matters: some seed gives a different random crop/flip
    others = [run(a, payload, True, seed) for seed in range(8, 16)]
    assert any(not np.array_equal(o[k], outs[0][k]) for o in others for k in o)


@pytest.mark.parametrize("name, config, options", CASES)
def test_stored_config_round_trips_through_json(name: str, config: dict, options: dict) -> None:
    codec = create_codec(name, config, options)
    stored = json.loads(json.dumps(codec.stored_config()))
    again = create_codec(name, stored, options)
    assert type(again) is type(codec)
    assert again.config == codec.config and again.options == codec.options
    assert again.stored_config() == codec.stored_config()
    assert again.member == codec.member
    assert again.output_spec() == codec.output_spec()
    # stored configs are complete: every field is there
    assert set(stored) == {f.name for f in dataclasses.fields(codec_class(name).Config)}


@pytest.mark.parametrize("name, config, options", CASES)
def test_decode_of_garbage_is_a_decode_error(name: str, config: dict, options: dict) -> None:
    codec = create_codec(name, config, options)
    for payload in (b"", b"definitely not a payload", b"\xff\xd8\xff" + bytes(100)):
        with pytest.raises(DecodeError):
            codec.decode(payload)


def test_unknown_codec_name() -> None:
    with pytest.raises(CodecError, match=r"unknown codec 'jpeg-xl'; known: \[.*'jpeg-dct'.*'rgb'"):
        create_codec("jpeg-xl")
    with pytest.raises(CodecError, match="unknown codec"):
        codec_class("")


@pytest.mark.parametrize("name", ["jpeg-dct", "rgb"])
def test_unknown_config_or_option_field(name: str) -> None:
    message = rf"codec '{name}' config: unknown field\(s\) \['qualty'\]; known: .*'quality'"
    with pytest.raises(CodecError, match=message):
        create_codec(name, {"qualty": 90})
    with pytest.raises(CodecError, match=rf"codec '{name}' options: unknown field\(s\) \['cropp'\]; known: .*'crop'"):
        create_codec(name, None, {"cropp": 224})


BAD_VALUES = [
    ("jpeg-dct", {"compression": "brotli"}, None, "compression must be"),
    ("jpeg-dct", {"storage": "png"}, None, "storage must be"),
    ("jpeg-dct", {"quality": 0}, None, "quality must be in 1..100"),
    ("jpeg-dct", {"quality": 101}, None, "quality must be in 1..100"),
    ("jpeg-dct", {"subsampling": "4:1:1"}, None, "subsampling must be one of"),
    ("jpeg-dct", {"keep": [0, 8]}, None, "keep must be"),
    ("jpeg-dct", {"keep": [16]}, None, "keep must be"),
    ("jpeg-dct", {"keep": [16.5, 8]}, None, "keep must be"),
    ("jpeg-dct", {"keep": 16}, None, "keep must be"),
    ("jpeg-dct", {"resize": 0}, None, "resize must be"),
    ("jpeg-dct", {"resize": 7}, None, "resize must be"),
    ("jpeg-dct", None, {"order": "hilbert"}, "order must be"),
    ("jpeg-dct", None, {"chroma": "interleaved"}, "chroma must be"),
    ("jpeg-dct", None, {"crop": 20}, "multiple of 16"),
    ("jpeg-dct", None, {"crop": 0}, "multiple of 16"),
    ("jpeg-dct", None, {"keep": [65, 1]}, "keep must be"),
    ("jpeg-dct", {"storage": "coefficients", "keep": [16, 8]}, {"keep": [16, 9]}, "more coefficients than stored"),
    ("rgb", {"quality": 0}, None, "quality must be in 1..100"),
    ("rgb", {"quality": 500}, None, "quality must be in 1..100"),
    ("rgb", {"subsampling": "4:1:1"}, None, "subsampling must be one of"),
    ("rgb", {"resize": 3}, None, "resize must be"),
    ("rgb", None, {"backend": "opencv"}, "backend must be"),
    ("rgb", None, {"crop": 0}, "crop must be"),
    ("rgb", None, {"mean": [0.5, 0.5]}, "mean and std"),
    ("rgb", None, {"std": [0.2, 0.0, 0.2]}, "mean and std"),
]


@pytest.mark.parametrize("name, config, options, message", BAD_VALUES)
def test_bad_values_are_codec_errors(name: str, config, options, message: str) -> None:
    with pytest.raises(CodecError, match=message) as info:
        create_codec(name, config, options)
    assert name in str(info.value)


def test_codec_needs_its_own_config_classes() -> None:
    with pytest.raises(CodecError, match="needs"):
        codec_class("rgb")(codec_class("jpeg-dct").Config())
