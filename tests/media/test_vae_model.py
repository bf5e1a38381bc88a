"""``lossyload.media.vae_model``: loading AutoencoderKL models (seeded random architectures, local directories, the
hub cache without network) with clear errors, turning source images into square views, and encoding/decoding
pixels. Models are the tiny random VAE (or copies of it saved to ``tmp_path``)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from lossyload.errors import CodecError, EncodeError
from lossyload.media.vae_model import (MODEL_FLAGS, RANDOM_ARCHS, decode_latents, encode_pixels, facts, image_views, load_vae,
                                 pick_device)

from ..conftest import jpeg_bytes, photo, png_bytes, synthetic_rgb

pytestmark = pytest.mark.usefixtures("one_thread")
BIG = 10**8


def params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def views(data: bytes, resolution: int = 32, n: int = 1, source: str = "x", seed: int = 0, max_pixels: int = BIG):
    return image_views(data, source=source, resolution=resolution, views=n, seed=seed, max_pixels=max_pixels)


def pil_png(im: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    im.save(out, format="PNG", **save)
    return out.getvalue()


@pytest.fixture
def fresh_cache():
    """``load_vae`` without its per-process cache (so a load really builds or reads the model)."""
    load_vae.cache_clear()
    yield
    load_vae.cache_clear()


# ------------------------------------------------------------------------------------------- random models
def test_random_tiny_is_seeded_and_leaves_the_global_rng_alone(fresh_cache) -> None:
    import torch

    state = torch.random.get_rng_state()
    a = load_vae("random:tiny", seed=0)
    load_vae.cache_clear()
    b = load_vae("random:tiny", seed=0)
    c = load_vae("random:tiny", seed=1)
    assert a is not b
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = params(a), params(b), params(c)
    assert pa.keys() == pb.keys() == pc.keys()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert any(not np.array_equal(pa[k], pc[k]) for k in pa)
    assert not a.training
    assert load_vae("random:tiny", seed=0) is b  # cached per process
    f = facts(a)
    assert (f.latent_channels, f.downsample, f.scaling_factor, f.shift_factor) == (4, 8, 1.0, 0.0)


def test_unknown_random_architecture_lists_the_known_ones() -> None:
    with pytest.raises(CodecError, match=r"unknown random architecture 'random:foo'.*'random:sd1'.*'random:tiny'"):
        load_vae("random:foo")
    assert set(RANDOM_ARCHS) == {"random:sd1", "random:tiny"}


def test_pick_device() -> None:
    import torch

    assert pick_device("cpu") == "cpu" and pick_device("cuda:3") == "cuda:3"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------- local directories
def test_saved_model_directory_loads_the_same_weights(tmp_path) -> None:
    tiny = load_vae("random:tiny", seed=3)
    tiny.save_pretrained(tmp_path / "plain")
    tiny.save_pretrained(tmp_path / "pipeline" / "vae")
    pixels = np.stack([photo(32, 32), synthetic_rgb(32, 32, seed=1)])
    want = encode_pixels(tiny, pixels, 4, "cpu")
    loaded = [load_vae(str(tmp_path / "plain")), load_vae(str(tmp_path / "pipeline"), subfolder="vae")]
    for model in loaded:
        assert model is not tiny and not model.training
        got = encode_pixels(model, pixels, 4, "cpu")
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert facts(model) == facts(tiny)
    other = encode_pixels(load_vae("random:tiny", seed=4), pixels, 4, "cpu")
    assert not np.allclose(other[0], want[0])


def test_directory_without_config_or_weights_is_a_codec_error(tmp_path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(CodecError, match=rf"model directory {missing}/? does not exist"):
        load_vae(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(CodecError, match=rf"model directory {empty}.* has no config.json"):
        load_vae(str(empty))
    load_vae("random:tiny").save_pretrained(tmp_path / "noweights")
    for f in (tmp_path / "noweights").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CodecError, match=rf"model directory {tmp_path / 'noweights'}.* has config.json but no weights"):
        load_vae(str(tmp_path / "noweights"))
    with pytest.raises(CodecError, match="does not exist"):  # a subfolder that is not there
        load_vae(str(tmp_path / "empty"), subfolder="vae")


@pytest.mark.parametrize("field, value", [("latent_channels", 8), ("block_out_channels", [8, 16, 16, 32])])
def test_config_disagreeing_with_the_weights_is_a_codec_error(tmp_path, field: str, value) -> None:
    path = tmp_path / "vae"
    load_vae("random:tiny").save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CodecError, match=rf"(?s)cannot load the model directory {path} \(RuntimeError.*size mismatch"):
        load_vae(str(path))


def test_corrupt_weights_file_is_a_codec_error(tmp_path) -> None:
    path = tmp_path / "vae"
    load_vae("random:tiny").save_pretrained(path)
    (weights,) = path.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CodecError, match=rf"cannot load the model directory {path}"):
        load_vae(str(path))


# ------------------------------------------------------------------------------------------- the hub cache
@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated:UserWarning")  # diffusers
def test_hub_model_missing_from_the_cache_fails_fast(tmp_path, monkeypatch, fresh_cache) -> None:
    for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / "hf"))
    for model, subfolder in (("lossyload-tests/absent-vae", None), ("lossyload-tests/absent-pipeline", "vae")):
        start = time.monotonic()
        with pytest.raises(CodecError) as info:
            load_vae(model, subfolder)
        assert time.monotonic() - start < 10
        message = str(info.value)
        assert model in message and "random:tiny" in message
        assert f"`hf download {model}`" in message and "huggingface-cli" not in message
        assert "local model folder" in message and MODEL_FLAGS in message
        if subfolder:
            assert "subfolder vae" in message


def test_the_offline_model_error_suggests_commands_that_exist() -> None:
    """Before: it named `huggingface-cli download` (the installed hub ships `hf`) and `--set model=...` to
    vae-check and lossyload-train users, whose flags are --model and --vae."""
    import argparse
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from lossyload.commands import vae_check
    from lossyload.lab import cli as train_cli
    from lossyload.commands.shard import build_parser

    vc, tr = argparse.ArgumentParser(), argparse.ArgumentParser()
    vae_check.add_arguments(vc)
    train_cli.add_arguments(tr)
    assert build_parser().parse_args(["src", "dest", "--set", "model=\"m\"", "--set", "download=true"]).set
    assert vc.parse_args(["images", "--model", "m"]).model == "m"
    assert tr.parse_args(["--vae", "m"]).vae == "m"
    for flags in ("lossyload-shard --set model=", "lossyload vae-check --model", "lossyload-train --vae"):
        assert flags in MODEL_FLAGS
    hf = shutil.which("hf") or str(Path(sys.executable).with_name("hf"))
    if not Path(hf).exists():
        pytest.skip("huggingface_hub's hf command is not installed")
    done = subprocess.run([hf, "download", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "REPO_ID" in done.stdout


def test_loading_a_model_folder_prints_no_warning(tmp_path, capfd) -> None:
    """Before: every load printed diffusers' multi-line 'install accelerate' warning."""
    import warnings

    path = tmp_path / "vae"
    load_vae("random:tiny").save_pretrained(path)
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_vae(str(path))
    out, err = capfd.readouterr()
    assert "accelerate" not in out + err and "low_cpu_mem_usage" not in out + err


# ------------------------------------------------------------------------------------------- image views
def test_views_shape_centre_crop_and_mirror() -> None:
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, :32] = (255, 0, 0)
    wide[:, 32:64] = synthetic_rgb(32, 32, seed=5)
    wide[:, 64:] = (0, 0, 255)
    out, notes = views(png_bytes(wide), n=4)
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.uint8 and notes == []
    np.testing.assert_array_equal(out[0], wide[:, 32:64])  # the centre square, at scale 1
    np.testing.assert_array_equal(out[1], out[0][:, ::-1])
    tall = np.ascontiguousarray(np.transpose(wide, (1, 0, 2)))
    np.testing.assert_array_equal(views(png_bytes(tall))[0][0], tall[32:64])
    big, notes = views(jpeg_bytes(photo(90, 120)), resolution=64, n=2)
    assert big.shape == (2, 64, 64, 3) and notes == []
    np.testing.assert_array_equal(big[1], big[0][:, ::-1])


def test_random_views_are_seeded_by_seed_and_source() -> None:
    data = jpeg_bytes(photo(80, 120, top=10, left=30))
    a, _ = views(data, n=5, source="a.jpg")
    again, _ = views(data, n=5, source="a.jpg")
    np.testing.assert_array_equal(a, again)
    b, _ = views(data, n=5, source="b.jpg")
    c, _ = views(data, n=5, source="a.jpg", seed=1)
    np.testing.assert_array_equal(a[:2], b[:2])
    np.testing.assert_array_equal(a[:2], c[:2])
    assert not np.array_equal(a[2:], b[2:]) and not np.array_equal(a[2:], c[2:])
    assert all(not np.array_equal(a[i], a[j]) for i in range(5) for j in range(i))
    np.testing.assert_array_equal(views(data, n=3, source="a.jpg")[0], a[:3])  # views 0-2 do not depend on n


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = photo(40, 40)
    out, notes = views(png_bytes(rgba))  # fully transparent
    assert notes == ["RGBA to RGB"] and (out == 255).all()
    rgba[..., :3], rgba[..., 3] = 0, 128  # half-transparent black: mid grey
    out, _ = views(png_bytes(rgba))
    assert np.abs(out.astype(int) - 127).max() <= 1
    la = Image.fromarray(np.dstack([np.full((40, 40), 10, np.uint8), np.zeros((40, 40), np.uint8)]), "LA")
    out, notes = views(pil_png(la))
    assert notes == ["LA to RGB"] and (out == 255).all()
    idx = np.zeros((40, 40), np.uint8)
    idx[:, 20:] = 1
    pal = Image.fromarray(idx, "P")
    pal.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    out, notes = views(pil_png(pal, transparency=0), n=1)
    assert notes == ["P to RGB"]
    assert (out[0, :, :8] == 255).all() and (out[0, :, -8:] == (200, 30, 40)).all()


def test_greyscale_and_16_bit_images() -> None:
    grey = photo(40, 40)[..., 1]
    out, notes = views(png_bytes(grey))
    assert notes == ["L to RGB"]
    assert (out[0, ..., 0] == out[0, ..., 1]).all() and (out[0, ..., 1] == out[0, ..., 2]).all()
    deep = np.full((40, 40), 100 * 257, np.uint16)
    out, notes = views(png_bytes(deep))
    assert notes == ["I;16 to RGB"] and (out == 100).all()  # scaled to 8 bits, not clipped to 255
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    out, _ = views(png_bytes(ramp))
    np.testing.assert_array_equal(out[0, 0, :, 0], np.rint(ramp[0] / 257.0).astype(np.uint8))


def test_small_images_are_upscaled_with_a_note() -> None:
    out, notes = views(png_bytes(synthetic_rgb(20, 28)))
    assert out.shape == (1, 32, 32, 3) and notes == ["upscaled from 28x20"]
    _, notes = views(png_bytes(synthetic_rgb(20, 28)[..., 0]))
    assert notes == ["upscaled from 28x20", "L to RGB"]
    _, notes = views(png_bytes(synthetic_rgb(32, 50)))  # shorter side exactly the resolution
    assert notes == []


def test_unreadable_images_are_encode_errors_naming_the_source() -> None:
    with pytest.raises(EncodeError, match=r"bad\.jpg: not an image") as info:
        views(b"no image here", source="bad.jpg")
    assert info.value.source == "bad.jpg"
    with pytest.raises(EncodeError, match="truncated"):
        views(jpeg_bytes(photo(40, 40))[:300], source="cut.jpg")
    with pytest.raises(EncodeError, match="4x4"):
        views(png_bytes(synthetic_rgb(4, 4)))
    with pytest.raises(EncodeError, match="exceeds max_pixels=1000"):
        views(png_bytes(synthetic_rgb(40, 40)), max_pixels=1000)


# ------------------------------------------------------------------------------------------- encode / decode
def test_encode_pixels_and_decode_latents_shapes() -> None:
    vae = load_vae("random:tiny")
    pixels = np.stack([photo(64, 64), synthetic_rgb(64, 64, seed=2), np.zeros((64, 64, 3), np.uint8)])
    mean, logstd = encode_pixels(vae, pixels, 2, "cpu")
    assert mean.shape == logstd.shape == (3, 4, 8, 8)
    assert mean.dtype == logstd.dtype == np.float32
    assert np.isfinite(mean).all() and np.isfinite(logstd).all()
    assert not np.allclose(mean[0], mean[1])
    whole, _ = encode_pixels(vae, pixels, 16, "cpu")  # batching does not change the result (beyond rounding)
    np.testing.assert_allclose(whole, mean, atol=1e-5)
    one, _ = encode_pixels(vae, pixels[2:], 16, "cpu")
    np.testing.assert_allclose(one[0], mean[2], atol=1e-5)
    import torch  # the model sees pixels in [-1, 1]; log-std is half the posterior's log-variance

    with torch.inference_mode():
        dist = vae.encode(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist
    np.testing.assert_allclose(mean, dist.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(logstd, 0.5 * dist.logvar.numpy(), atol=1e-5)
    rgb = decode_latents(vae, mean)
    assert rgb.shape == (3, 3, 64, 64) and rgb.dtype == np.float32
    assert rgb.min() >= -1 and rgb.max() <= 1 and np.isfinite(rgb).all()
