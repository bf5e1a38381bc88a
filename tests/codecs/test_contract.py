"""The contract every registered codec keeps: encode -> decode -> default transforms -> finalize gives what
``output_spec`` promises, deterministically; configs round-trip through JSON; bad names/fields/values are
clear ``CodecError``s. Image codecs get JPEG/PNG sources, audio codecs generated clips."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest

from lossyload.codecs import Codec, codec_class, create_codec, list_codecs
from lossyload.errors import CodecError, DecodeError

from ..conftest import jpeg_bytes, photo, png_bytes, synthetic_rgb, audio_bytes

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]  # inside the encodec package
CROP = 32  # image codecs: output size in pixels
FRAMES = 16  # vq / encodec: code frames of the default crops

# Every registered codec: its kind (which sources it gets) and the load option fixing its output size
# (``mel`` has none: its output is always one whole clip).
KIND = {"jpeg-dct": "image", "rgb": "image", "vae": "image", "vq": "audio", "encodec": "audio", "mel": "audio"}
SIZE = {"jpeg-dct": {"crop": CROP}, "rgb": {"crop": CROP}, "vae": {"crop": 2}, "vq": {"frames": FRAMES},
        "encodec": {"frames": FRAMES}, "mel": {}}
FIXED_SIZE = {"mel"}  # no default transforms at all (nothing random to vary)

# A fixed vq codebook: 16 vectors of 2x2 log-mel values from about -14 (silence) to 4 (loud), quiet -> loud.
_rng = np.random.default_rng(1234)
VQ_CODEBOOK = [[round(float(v), 4) for v in row]
               for row in np.linspace(-13.5, 3.5, 16)[:, None] + _rng.normal(0.0, 0.5, (16, 4))]
# vae: fully recorded configs (nothing to fit) of the tiny random VAE at CROP pixels (a 4 x 4 latent grid).
VAE = {"model": "random:tiny", "resolution": CROP, "latent_channels": 4, "downsample": 8, "scaling_factor": 1.0,
       "shift_factor": 0.0, "scale": [0.02] * 4, "offset": [0.0] * 4}

# Extra configs / options per codec; every registered codec is covered with at least its defaults.
CONFIGS = {
    "jpeg-dct": [{"storage": "jpeg"}, {"storage": "coefficients"}, {"storage": "coefficients", "keep": [16, 8]},
                 {"storage": "coefficients", "compression": "lz4"}],
    "vq": [{"codebook": VQ_CODEBOOK}, {"codebook": VQ_CODEBOOK, "zstd_level": 1}],
    "encodec": [{"weights": "random"}],
    "mel": [{}, {"format": "wav"}],
    "vae": [VAE, {"storage": "float16", **VAE, "scale": None, "offset": None},  # (distinct keys first: test ids)
            {"views": 2, "store_std": True, **VAE, "std_scale": [0.03] * 4, "std_offset": [-1.0] * 4}],
}
OPTIONS = {
    "rgb": [{"backend": "turbo"}, {"backend": "pil"}],
    "jpeg-dct": [{}, {"chroma": "concat", "order": "natural", "dequantize": True}],
    "vq": [{"output": "codes"}, {"output": "bits"}, {"output": "vectors"}],
    "encodec": [{"output": "codes"}, {"output": "latent"}, {"bandwidth": 3.0}, {"output": "latent", "bandwidth": 3.0}],
    "mel": [{"output": "mel"}, {"output": "wave"}],
    "vae": [{}, {"scaled": False, "dtype": "float16"}],
}
CASES = [
    pytest.param(name, config, options, id=f"{name}-{json.dumps(config)[:40]}-{json.dumps(options)}")
    for name in list_codecs()
    for config in CONFIGS.get(name, [{}])
    for options in OPTIONS.get(name, [{}])
]


# ------------------------------------------------------------------------------------------- sources


def tone_noise(rate: int, seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.shape)


@functools.lru_cache(maxsize=None)
def _audio_sources() -> tuple[tuple[str, bytes], ...]:
    stereo = np.stack([tone_noise(44100, 2.0, 660, 2), tone_noise(44100, 2.0, 1500, 3)], axis=1)
    return (
        ("tone-16k-1s", audio_bytes(tone_noise(16000, 1.0, 440, 0), 16000)),
        ("short-0.4s", audio_bytes(tone_noise(16000, 0.4, 880, 1), 16000)),  # padded
        ("stereo-44k-2s", audio_bytes(0.8 * stereo, 44100, "FLAC")),  # resampled, downmixed, cropped
    )


def sources(kind: str) -> dict[str, bytes]:
    if kind == "audio":
        return dict(_audio_sources())
    return {
        "jpeg-420": jpeg_bytes(photo(72, 100, top=50, left=60)),
        "jpeg-444-progressive": jpeg_bytes(photo(50, 66), subsampling=0, progressive=True),
        "grey": jpeg_bytes(photo(40, 40), mode="L"),
        "small-png": png_bytes(synthetic_rgb(20, 28)),  # smaller than the crop: padded / upscaled
    }


DETERMINISM_SOURCES = {"image": ("jpeg-444-progressive", "small-png"), "audio": ("tone-16k-1s", "short-0.4s")}


def make(name: str, config: dict | None, options: dict | None) -> Codec:
    """The codec at its fixed output size, with the side files the shard tool would write attached (as the
    loader does; e.g. the EnCodec codebooks that ``output="latent"`` needs)."""
    codec = create_codec(name, config, {**(options or {}), **SIZE[name]})
    codec.load_assets(codec.assets())
    return codec


def run(codec: Codec, payload: bytes, train: bool, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sample = codec.decode(payload)
    for t in codec.default_transforms(train):
        sample = t(sample, rng)
    return codec.finalize(sample)


def test_every_codec_is_covered() -> None:
    assert {"jpeg-dct", "rgb", "vq", "encodec", "mel", "vae"} <= set(list_codecs())
    assert {c.values[0] for c in CASES} == set(list_codecs()) == set(KIND) == set(SIZE)
    assert set(UNKNOWN_FIELD) == set(list_codecs())


@pytest.mark.parametrize("name, config, options", CASES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_pipeline_output_matches_spec(name: str, config: dict, options: dict, train: bool) -> None:
    codec = make(name, config, options)
    spec = codec.output_spec()
    for source, data in sources(KIND[name]).items():
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
                assert np.isfinite(out[key]).all(), (source, key)
        if KIND[name] == "audio":  # what fit_clip changed is reported, what it did not is not
            notes = enc.transcoded or ""
            if source == "stereo-44k-2s":
                assert all(w in notes for w in ("resampled", "downmixed", "cropped")), notes
            else:
                assert enc.transcoded is None, (source, notes)
    if KIND[name] == "image":
        assert all(CROP in s.shape or CROP // 8 in s.shape or CROP // 16 in s.shape
                   for s in spec.values() if len(s.shape) == 3)
    elif name in FIXED_SIZE:
        c = codec.config
        assert {k: s.shape for k, s in spec.items()} in ({"mel": (c.n_mels, c.frames)}, {"wave": (c.length,)})
    else:
        assert all(s.shape[-1] == FRAMES for s in spec.values()), spec


@pytest.mark.parametrize("name, config, options", CASES)
def test_deterministic(name: str, config: dict, options: dict) -> None:
    a = make(name, config, options)
    b = make(name, config, options)
    first, second = (sources(KIND[name])[s] for s in DETERMINISM_SOURCES[KIND[name]])
    assert a.encode(first, source="x") == b.encode(first, source="x")
    assert a.encode(second, source="x") == b.encode(second, source="x")
    payload = a.encode(first, source="x").payload
    outs = [run(c, payload, True, seed) for c in (a, b, a) for seed in (7,)]
    for out in outs[1:]:
        assert out.keys() == outs[0].keys()
        for k in out:
            np.testing.assert_array_equal(out[k], outs[0][k])
    if name in FIXED_SIZE:  # nothing random by default: every seed gives the same output
        assert a.default_transforms(True) == [] and a.default_transforms(False) == []
        return
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
    with pytest.raises(CodecError, match=r"unknown codec 'jpeg-xl'; known: .*jpeg-dct, .*rgb"):
        create_codec("jpeg-xl")
    with pytest.raises(CodecError, match="unknown codec"):
        codec_class("")


# codec -> (a misspelt config field, the real one, a misspelt option field, the real one)
UNKNOWN_FIELD = {
    "jpeg-dct": ("qualty", "quality", "cropp", "crop"),
    "rgb": ("qualty", "quality", "cropp", "crop"),
    "vq": ("codebok", "codebook", "frame", "frames"),
    "encodec": ("bandwith", "bandwidth", "ouput", "output"),
    "mel": ("formt", "format", "ouput", "output"),
    "vae": ("resoluton", "resolution", "scaling", "scaled"),
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_FIELD))
def test_unknown_config_or_option_field(name: str) -> None:
    bad_cfg, cfg, bad_opt, opt = UNKNOWN_FIELD[name]
    message = rf"codec '{name}' config: unknown field\(s\) \['{bad_cfg}'\]; known: .*'{cfg}'"
    with pytest.raises(CodecError, match=message):
        create_codec(name, {bad_cfg: 90})
    with pytest.raises(CodecError, match=rf"codec '{name}' options: unknown field\(s\) \['{bad_opt}'\]; known: .*'{opt}'"):
        create_codec(name, None, {bad_opt: 224})


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
    ("vq", {"codebook_size": 1}, None, r"codebook_size must be in 2\.\.256"),
    ("vq", {"codebook_size": 300}, None, r"codebook_size must be in 2\.\.256"),
    ("vq", {"block": [3, 2]}, None, r"block \(3, 2\) must divide the spectrogram \(128 x 128\)"),
    ("vq", {"codebook": VQ_CODEBOOK[:15]}, None, "codebook must hold 16 vectors of 4 values"),
    ("vq", {"codebook": [row[:3] for row in VQ_CODEBOOK]}, None, "codebook must hold 16 vectors of 4 values"),
    ("vq", {"fit_samples": 8}, None, "fit_samples must be at least codebook_size"),
    ("vq", None, {"output": "png"}, "output must be one of"),
    ("vq", {"max_seconds": 0.5}, None, "max_seconds >= seconds"),
    ("encodec", {"bandwidth": 5.0}, None, "bandwidth must be one of"),
    ("encodec", {"model": "encodec_48khz"}, None, "model must be 'encodec_24khz'"),
    ("encodec", {"bandwidth": 6.0}, {"bandwidth": 12}, "needs 16 levels; the shards hold 8"),
    ("encodec", None, {"bandwidth": 2.0}, "bandwidth must be one of"),
    ("encodec", None, {"output": "wave"}, "output must be 'codes' or 'latent'"),
    ("encodec", {"max_seconds": 0.5}, None, "max_seconds >= seconds"),
    ("mel", {"format": "mp3"}, None, "format must be 'flac' or 'wav'"),
    ("mel", {"max_seconds": 0.5}, None, "max_seconds >= seconds"),
    ("mel", {"sample_rate": 500}, None, "sample_rate >= 1000"),
    ("mel", None, {"output": "spectrogram"}, "output must be 'mel' or 'wave'"),
    # field types, as an index may hold them: no bool or float for an integer, no NaN or infinity for a number
    ("vae", {"offset": [float("nan"), 0.0, 0.0, 0.0], "scale": [0.1] * 4}, None, r"offset = \(nan, .* must be"),
    ("vae", {"shift_factor": float("inf")}, None, "shift_factor = inf must be"),
    ("vae", {"latent_channels": 0}, None, "latent_channels must be positive"),
    ("vae", {"scaling_factor": -0.2}, None, "scaling_factor must be positive"),
    ("vae", {"views": True}, None, "views = True must be an integer"),
    ("rgb", {"max_pixels": 1e9}, None, "max_pixels = 1000000000.0 must be an integer"),
    ("jpeg-dct", {"quality": "90"}, None, "quality = .90. must be an integer"),
    ("vq", {"codebook_size": 16.0}, None, "codebook_size = 16.0 must be an integer"),
]


@pytest.mark.parametrize("name, config, options, message", BAD_VALUES)
def test_bad_values_are_codec_errors(name: str, config, options, message: str) -> None:
    with pytest.raises(CodecError, match=message) as info:
        create_codec(name, config, options)
    assert name in str(info.value)


def test_codec_needs_its_own_config_classes() -> None:
    with pytest.raises(CodecError, match="needs"):
        codec_class("rgb")(codec_class("jpeg-dct").Config())
    with pytest.raises(CodecError, match="needs"):
        codec_class("vq")(codec_class("mel").Config())
