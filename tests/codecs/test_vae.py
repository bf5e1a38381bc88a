"""The ``vae`` codec: the recorded int8 quantization (exact, clipped, half-even), float16 storage, the log-std
plane, fitting on real images, batches mixing good and bad sources, views, payload/config errors, identity.
Everything runs the seeded ``random:tiny`` VAE at 32-64 pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lossyload.codecs import create_codec
from lossyload.codecs.base import Encoded
from lossyload.codecs.vae import Vae, VaeConfig, VaeOptions
from lossyload.errors import CodecError, DecodeError, EncodeError
from lossyload.media.vae_model import encode_pixels, facts, image_views, load_vae, pick_device

from ..conftest import jpeg_bytes, photo, png_bytes, synthetic_rgb

pytestmark = pytest.mark.usefixtures("one_thread")

# Powers of two: (z - offset) / scale and q * scale + offset are exact in float32.
SCALE = (0.5, 0.25, 0.125, 1.0)
OFFSET = (0.25, -1.0, 0.5, 0.0)
STD_SCALE = (0.0625, 0.125, 0.03125, 0.25)
STD_OFFSET = (-2.0, -1.5, -3.0, 0.0)
SF, SHIFT = 0.5, 0.1


def config(**kw) -> VaeConfig:
    base = dict(model="random:tiny", resolution=32, latent_channels=4, downsample=8, scaling_factor=SF,
                shift_factor=SHIFT, scale=SCALE, offset=OFFSET)
    return VaeConfig(**{**base, **kw})


def col(v) -> np.ndarray:
    return np.asarray(v, np.float32)[None, :, None, None]


def reference(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the codec's model gives for ``pixels``, on the device the codec uses (the same cached model)."""
    device = pick_device("auto")
    return encode_pixels(load_vae("random:tiny", None, 0, False, device), pixels, 16, device)


def grid_values(rng: np.random.Generator, scale, offset, lo: float = -127, hi: float = 127) -> tuple:
    """Latents ``[1, 4, 4, 4]`` exactly on the quantization grid, and their steps ``q``."""
    q = rng.integers(lo, hi + 1, (1, 4, 4, 4)).astype(np.float32)
    return (q * col(scale) + col(offset)).astype(np.float32), q


# ------------------------------------------------------------------------------------------- quantization
def test_int8_round_trip_is_exact_and_clips_to_the_recorded_range() -> None:
    codec = Vae(config(), VaeOptions(scaled=False))
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 40.0, (1, 4, 4, 4)).astype(np.float32)  # many values far outside the range
    stored = codec.quantize(z, np.zeros_like(z))
    assert stored.dtype == np.int8 and stored.shape == (1, 1, 4, 4, 4)
    q = np.clip(np.rint((z - col(OFFSET)) / col(SCALE)), -127, 127)
    np.testing.assert_array_equal(stored[:, 0], q)
    out = codec.decode(stored.tobytes())
    assert out.dtype == np.float32 and out.shape == (1, 1, 4, 4, 4)
    np.testing.assert_array_equal(out[:, 0], (q.astype(np.float32) * col(SCALE) + col(OFFSET)).astype(np.float32))
    lo, hi = col(OFFSET) - 127 * col(SCALE), col(OFFSET) + 127 * col(SCALE)
    assert (z > hi).any() and (z < lo).any()
    np.testing.assert_array_equal(out[:, 0][z > hi], np.broadcast_to(hi, z.shape)[z > hi])
    np.testing.assert_array_equal(out[:, 0][z < lo], np.broadcast_to(lo, z.shape)[z < lo])
    inside = (z >= lo) & (z <= hi)
    assert inside.any()
    assert (np.abs(out[:, 0] - z)[inside] <= np.broadcast_to(col(SCALE), z.shape)[inside] / 2).all()


def test_values_on_the_grid_survive_exactly_and_ties_round_half_even() -> None:
    codec = Vae(config(), VaeOptions(scaled=False))
    z, q = grid_values(np.random.default_rng(1), SCALE, OFFSET)
    np.testing.assert_array_equal(codec.quantize(z, z)[:, 0], q)
    np.testing.assert_array_equal(codec.decode(codec.quantize(z, z).tobytes())[:, 0], z)
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5], np.float32)
    expected = np.array([0, 2, 2, 0, -2, -2, 126, -126])
    for ch in range(4):
        z = np.zeros((1, 4, 4, 4), np.float32)
        z[0, ch].flat[: len(halves)] = OFFSET[ch] + halves * SCALE[ch]
        np.testing.assert_array_equal(codec.quantize(z, z)[0, 0, ch].flat[: len(halves)], expected)


def test_scaled_option_applies_shift_and_scaling_factor() -> None:
    z, _ = grid_values(np.random.default_rng(2), SCALE, OFFSET)
    payload = Vae(config()).quantize(z, z).tobytes()
    raw = Vae(config(), VaeOptions(scaled=False)).decode(payload)
    scaled = Vae(config(), VaeOptions(scaled=True)).decode(payload)
    np.testing.assert_array_equal(raw[:, 0], z)
    np.testing.assert_allclose(scaled[:, 0], (z - SHIFT) * SF, rtol=1e-6, atol=1e-6)
    assert not np.allclose(scaled, raw)


@pytest.mark.parametrize("scaled", [False, True])
def test_store_std_plane_decodes_to_the_std(scaled: bool) -> None:
    cfg = config(store_std=True, std_scale=STD_SCALE, std_offset=STD_OFFSET)
    rng = np.random.default_rng(3)
    mean, _ = grid_values(rng, SCALE, OFFSET)
    logstd, _ = grid_values(rng, STD_SCALE, STD_OFFSET, -60, 60)
    stored = Vae(cfg).quantize(mean, logstd)
    assert stored.shape == (1, 2, 4, 4, 4)
    out = Vae(cfg, VaeOptions(scaled=scaled)).decode(stored.tobytes())
    assert out.shape == (1, 2, 4, 4, 4) and out.dtype == np.float32
    if scaled:
        np.testing.assert_allclose(out[:, 0], (mean - SHIFT) * SF, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out[:, 1], np.exp(logstd) * SF, rtol=1e-5)
    else:
        np.testing.assert_array_equal(out[:, 0], mean)
        np.testing.assert_allclose(out[:, 1], np.exp(logstd), rtol=1e-6)


def test_float16_storage_round_trips_float16_values() -> None:
    cfg = config(storage="float16", scale=None, offset=None, store_std=True)
    rng = np.random.default_rng(4)
    mean = rng.normal(0, 3, (1, 4, 4, 4)).astype(np.float32)
    logstd = rng.normal(-2, 0.5, (1, 4, 4, 4)).astype(np.float32)
    codec = Vae(cfg, VaeOptions(scaled=False))
    assert not codec.needs_fit()
    stored = codec.quantize(mean, logstd)
    assert stored.dtype == np.float16 and len(stored.tobytes()) == 2 * 4 * 16 * 2
    out = codec.decode(stored.tobytes())
    np.testing.assert_array_equal(out[:, 0], mean.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out[:, 1], np.exp(logstd.astype(np.float16).astype(np.float32)), rtol=1e-6)
    scaled = Vae(cfg).decode(stored.tobytes())
    as_f16 = mean.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(scaled[:, 0], (as_f16 - SHIFT) * SF, rtol=1e-6, atol=1e-6)


def test_finalize_returns_view_0_mean_in_the_asked_dtype() -> None:
    cfg = config(views=2, storage="float16", scale=None, offset=None)
    x = np.random.default_rng(5).normal(size=(2, 1, 4, 4, 4)).astype(np.float32)
    out = Vae(cfg, VaeOptions(dtype="float16")).finalize(x)
    assert list(out) == ["latent"] and out["latent"].dtype == np.float16
    np.testing.assert_array_equal(out["latent"], x[0, 0].astype(np.float16))


# ------------------------------------------------------------------------------------------- fit
def fit_samples() -> list[tuple[str, bytes]]:
    return [("cat.jpg", jpeg_bytes(photo(80, 96, top=40, left=50))),
            ("coffee.jpg", jpeg_bytes(photo(64, 64, name="coffee", top=100, left=100))),
            ("astro.png", png_bytes(photo(48, 70, name="astronaut", top=30, left=200))),
            ("synthetic.png", png_bytes(synthetic_rgb(40, 40, seed=3))),
            ("broken.jpg", b"not an image at all")]  # skipped by fit


def test_fit_records_model_facts_and_a_range_covering_the_data() -> None:
    unfitted = create_codec("vae", {"model": "random:tiny", "resolution": 32, "clip_percentile": 0})
    assert unfitted.needs_fit()
    with pytest.raises(CodecError, match="lacks the fitted"):
        unfitted.encode_batch([(fit_samples()[0][1], "cat.jpg")])
    fitted = unfitted.fit(fit_samples())
    c = fitted.config
    assert not fitted.needs_fit()
    f = facts(load_vae("random:tiny"))
    assert (c.latent_channels, c.downsample) == (4, 8)
    assert (c.scaling_factor, c.shift_factor) == (f.scaling_factor, f.shift_factor)
    assert len(c.scale) == len(c.offset) == 4 and all(s > 0 for s in c.scale)
    assert len(c.preview_map) == 15 and all(np.isfinite(c.preview_map))
    assert c.std_scale is None and c.std_offset is None  # no store_std: nothing fitted for it
    pixels = np.concatenate([image_views(data, source=s, resolution=32, views=1, seed=0, max_pixels=10**8)[0]
                             for s, data in fit_samples()[:4]])
    mean, _ = reference(pixels)
    lo, hi = col(c.offset) - 127 * col(c.scale), col(c.offset) + 127 * col(c.scale)
    assert (mean >= lo - 1e-5).all() and (mean <= hi + 1e-5).all()
    for ch in range(4):  # percentile 0: the extremes of every channel are the ends of the range
        np.testing.assert_allclose([mean[:, ch].min(), mean[:, ch].max()], [lo[0, ch, 0, 0], hi[0, ch, 0, 0]],
                                   rtol=1e-5, atol=1e-6)
    back = Vae(c, VaeOptions(scaled=False)).decode(fitted.quantize(mean[:1], mean[:1]).tobytes())[:, 0]
    assert (np.abs(back - mean[:1]) <= col(c.scale) / 2 * (1 + 1e-4)).all()  # nothing clipped
    # the default percentile clips the tails: a strictly narrower range
    clipped = create_codec("vae", {"model": "random:tiny", "resolution": 32, "clip_percentile": 5}).fit(fit_samples())
    assert all(a < b for a, b in zip(clipped.config.scale, c.scale))


def test_fit_records_the_models_scaling_and_shift_and_std_range(tmp_path) -> None:
    import diffusers

    from lossyload.media.vae_model import RANDOM_ARCHS

    arch = {**RANDOM_ARCHS["random:tiny"], "scaling_factor": 0.3}
    model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4,
                                    up_block_types=("UpDecoderBlock2D",) * 4, shift_factor=0.05, **arch)
    model.save_pretrained(tmp_path / "vae")
    codec = create_codec("vae", {"model": str(tmp_path / "vae"), "resolution": 32, "store_std": True})
    c = codec.fit(fit_samples()).config
    assert (c.scaling_factor, c.shift_factor) == (pytest.approx(0.3), pytest.approx(0.05))
    assert len(c.std_scale) == len(c.std_offset) == 4 and all(s > 0 for s in c.std_scale)
    assert c.std_offset != c.offset


@pytest.mark.parametrize("missing", ["latent_channels", "downsample", "scaling_factor", "shift_factor"])
def test_fit_fills_missing_model_facts_and_keeps_a_given_range(missing: str) -> None:
    partial = Vae(config(**{missing: None}))
    assert partial.needs_fit()  # else the loader would scale by a made-up factor
    c = partial.fit(fit_samples()[:2]).config
    f = facts(load_vae("random:tiny"))
    assert (c.latent_channels, c.downsample, c.scaling_factor, c.shift_factor) == (4, 8, f.scaling_factor,
                                                                                   f.shift_factor)
    assert (c.scale, c.offset) == (SCALE, OFFSET) and len(c.preview_map) == 15


def test_fit_with_no_readable_image_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="none of the 2 fit samples"):
        create_codec("vae", {"model": "random:tiny", "resolution": 32}).fit([("a", b"junk"), ("b", b"")])


# ------------------------------------------------------------------------------------------- encode_batch
def test_encode_batch_mixes_good_and_bad_items_in_order() -> None:
    cfg = config(views=2, store_std=True, std_scale=STD_SCALE, std_offset=STD_OFFSET, max_pixels=5000)
    codec = Vae(cfg)
    rgba = np.dstack([photo(40, 40), np.full((40, 40), 128, np.uint8)])
    items = [
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "corrupt.png"),
        (jpeg_bytes(photo(47, 33)), "odd.jpg"),
        (png_bytes(synthetic_rgb(4, 4)), "tiny.png"),
        (png_bytes(photo(40, 40)[..., 0]), "grey.png"),
        (jpeg_bytes(photo(80, 100)), "huge.jpg"),
        (png_bytes(rgba), "rgba.png"),
        (png_bytes(synthetic_rgb(20, 28)), "small.png"),
    ]
    out = codec.encode_batch(items)
    assert len(out) == len(items)
    errors = {s: o for (_, s), o in zip(items, out) if isinstance(o, EncodeError)}
    assert set(errors) == {"corrupt.png", "tiny.png", "huge.jpg"}
    assert all(e.source == s and e.reason for s, e in errors.items())
    assert "corrupt" in errors["corrupt.png"].reason or "not an image" in errors["corrupt.png"].reason
    assert "4x4" in errors["tiny.png"].reason
    assert "max_pixels=5000" in errors["huge.jpg"].reason
    good = {s: o for (_, s), o in zip(items, out) if not isinstance(o, EncodeError)}
    size = 2 * 2 * 4 * 4 * 4 * 1  # views * planes * C * g * g * int8
    assert all(isinstance(o, Encoded) and len(o.payload) == size for o in good.values())
    assert good["odd.jpg"].transcoded is None
    assert good["grey.png"].transcoded == "L to RGB"
    assert good["rgba.png"].transcoded == "RGBA to RGB"
    assert good["small.png"].transcoded == "upscaled from 28x20"
    # each good item's payload is its own: close to encoding it alone, far from the others
    alone = {s: codec.decode(codec.encode(data, source=s).payload) for data, s in items if s in good}
    for s, enc in good.items():
        x = codec.decode(enc.payload)
        others = [np.abs(x - alone[o]).mean() for o in alone if o != s]
        assert np.abs(x - alone[s]).mean() < 0.1 * min(others), s
    with pytest.raises(EncodeError, match="tiny.png"):
        codec.encode(items[2][0], source="tiny.png")
    only_bad = codec.encode_batch([items[0], items[2]])
    assert all(isinstance(o, EncodeError) for o in only_bad)


def test_views_mirror_and_seeded_random_crops() -> None:
    cfg = config(views=3, storage="float16", scale=None, offset=None)
    codec = Vae(cfg, VaeOptions(scaled=False))
    data = jpeg_bytes(photo(64, 90, top=20, left=40))
    payload = codec.encode(data, source="a.jpg").payload
    assert len(payload) == 3 * 1 * 4 * 4 * 4 * 2
    x = codec.decode(payload)
    assert x.shape == (3, 1, 4, 4, 4)
    pixels, _ = image_views(data, source="a.jpg", resolution=32, views=3, seed=0, max_pixels=10**8)
    want, _ = reference(np.stack([pixels[0], pixels[0][:, ::-1], pixels[2]]))  # view 1: the mirrored view 0
    np.testing.assert_allclose(x[:, 0], want, atol=1e-3, rtol=1e-3)  # float16 storage
    assert not np.allclose(x[1], x[0], atol=0.05)
    assert not np.allclose(x[2], x[0], atol=0.05) and not np.allclose(x[2], x[1], atol=0.05)
    # deterministic: same bytes and name -> same payload; another name -> another random crop, same views 0/1
    assert codec.encode(data, source="a.jpg").payload == payload
    y = codec.decode(codec.encode(data, source="b.jpg").payload)
    np.testing.assert_array_equal(y[:2], x[:2])
    assert not np.allclose(y[2], x[2], atol=0.05)
    # another seed -> other random crops too
    z = Vae(dataclasses.replace(cfg, seed=1), VaeOptions(scaled=False)).decode(
        Vae(dataclasses.replace(cfg, seed=1)).encode(data, source="a.jpg").payload)
    assert not np.allclose(z[2], x[2], atol=0.05)


# ------------------------------------------------------------------------------------------- errors
def test_payload_of_the_wrong_length_is_a_decode_error() -> None:
    codec = Vae(config(views=2))
    good = bytes(2 * 4 * 4 * 4)
    assert codec.decode(good).shape == (2, 1, 4, 4, 4)
    for payload in (b"", good[:-1], good + b"\0"):
        with pytest.raises(DecodeError, match=rf"holds {len(payload)} bytes.*int8\[2, 1, 4, 4, 4\] = 128 bytes"):
            codec.decode(payload)
    f16 = Vae(config(storage="float16", store_std=True))
    with pytest.raises(DecodeError, match=r"holds 64 bytes.*float16\[1, 2, 4, 4, 4\] = 256 bytes"):
        f16.decode(bytes(64))


@pytest.mark.parametrize("fields, message", [
    ({"resolution": 30}, "multiple of 8"),
    ({"resolution": 40, "downsample": 16}, "not a multiple of the VAE's downsampling 16"),
    ({"storage": "int4"}, "storage must be one of"),
    ({"rounding": "up"}, "rounding must be 'half-even'"),
    ({"qrange": [-128, 127]}, "qrange"),
    ({"clip_percentile": 50}, "clip_percentile"),
    ({"views": 0}, "views"),
    ({"latent_channels": 4, "scale": [0.1, 0.1, 0.1]}, "scale needs 4 values"),
    ({"latent_channels": 4, "scale": [0.1] * 4, "offset": [0.0] * 5}, "offset needs 4 values"),
    ({"scale": [0.1] * 3, "offset": [0.0] * 4}, "one value per latent channel"),
    ({"scale": [0.1, -0.1, 0.1, 0.1]}, "scale values must be positive"),
    ({"scale": [0.1, 0.0, 0.1, 0.1]}, "scale values must be positive"),
    ({"std_scale": [0.1, 0.1, float("inf"), 0.1]}, "std_scale values must be positive"),
])
def test_bad_config_values_are_codec_errors(fields: dict, message: str) -> None:
    with pytest.raises(CodecError, match=rf"codec 'vae' config: .*{message}"):
        create_codec("vae", {"model": "random:tiny", **fields})


def test_bad_option_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="dtype must be"):
        create_codec("vae", None, {"dtype": "bfloat16"})


def test_incomplete_configs_cannot_decode_or_encode() -> None:
    no_channels = Vae(config(latent_channels=None))
    assert no_channels.needs_fit()
    with pytest.raises(CodecError, match="lacks the recorded"):
        no_channels.decode(bytes(64))
    with pytest.raises(CodecError, match="lacks the recorded"):
        Vae(config(storage="float16", latent_channels=None)).decode(bytes(128))
    # store_std needs both halves of the log-std range (a missing offset must not decode to NaN)
    half = Vae(config(store_std=True, std_scale=STD_SCALE))
    assert half.needs_fit()
    with pytest.raises(CodecError, match="lacks the recorded"):
        half.decode(bytes(128))
    assert not Vae(config(store_std=True, std_scale=STD_SCALE, std_offset=STD_OFFSET)).needs_fit()


def test_identity_leaves_out_runtime_fields() -> None:
    a = Vae(config())
    b = Vae(config(batch_size=3, device="cpu", download=True))
    assert a.stored_config() != b.stored_config()
    assert a.identity() == b.identity()
    assert not {"batch_size", "device", "download"} & set(a.identity())
    assert set(a.stored_config()) - set(a.identity()) == {"batch_size", "device", "download"}
    for changed in (config(seed=1), config(views=2), config(model="random:sd1"), config(storage="float16")):
        assert Vae(changed).identity() != a.identity()
