"""``lossyload.media.resample_vae``: the untrained model is area-down / bilinear-up resampling (latents, pixels,
PSNR), its residual branches do train, and a saved folder loads through ``load_vae`` with the right class
(its latents then agree with the model's own), or fails with a clear error naming the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lossyload.errors import CodecError
from lossyload.media.resample_vae import ResampleVae, area_down, bilinear_up, resample
from lossyload.media.vae_model import decode_latents, encode_pixels, facts, load_vae

from ..conftest import photo, synthetic_rgb

pytestmark = pytest.mark.usefixtures("one_thread")


def pixels() -> np.ndarray:
    """Two real 64 x 64 images, uint8 ``[2, 64, 64, 3]``."""
    return np.stack([photo(64, 64, top=40, left=60), synthetic_rgb(64, 64, seed=2)])


def unit(p: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.moveaxis(p, -1, 1).astype(np.float32) / 127.5 - 1.0)


def test_area_down_is_the_block_mean_and_pil_box_resampling() -> None:
    p = pixels()
    down = area_down(unit(p), 8).numpy()
    blocks = p.reshape(2, 8, 8, 8, 8, 3).astype(np.float64).mean(axis=(2, 4))  # [N, 8, 8, 3] block means
    np.testing.assert_allclose(down, np.moveaxis(blocks, -1, 1) / 127.5 - 1.0, atol=1e-6)
    box = np.asarray(Image.fromarray(p[0]).resize((8, 8), Image.Resampling.BOX), np.float64)  # 8-bit fixed point
    np.testing.assert_allclose(np.moveaxis(blocks[0], -1, 0), np.moveaxis(box, -1, 0), atol=1.0)


def test_bilinear_up_keeps_a_constant_and_a_linear_ramp_inside() -> None:
    z = torch.full((1, 3, 4, 4), 0.25)
    np.testing.assert_allclose(bilinear_up(z, 8).numpy(), 0.25, atol=1e-7)
    ramp = torch.arange(4.0).repeat(1, 1, 4, 1)  # cell centres at 3.5 + 8 j pixels
    up = bilinear_up(ramp, 8)[0, 0, 0].numpy()
    x = np.arange(32.0)
    inside = (x >= 3.5) & (x <= 27.5)
    np.testing.assert_allclose(up[inside], (x[inside] - 3.5) / 8, atol=1e-6)


@pytest.mark.parametrize("seed, width, blocks, channels", [(0, 64, 2, 4), (5, 8, 0, 3), (1, 16, 1, 6)])
def test_untrained_model_is_resampling(seed: int, width: int, blocks: int, channels: int) -> None:
    torch.manual_seed(seed)
    model = ResampleVae(latent_channels=channels, width=width, blocks=blocks).eval()
    x = unit(pixels())
    with torch.no_grad():
        dist = model.encode(x).latent_dist
        out = model.decode(dist.mean).sample
    np.testing.assert_allclose(dist.mean[:, :3].numpy(), area_down(x, 8).numpy(), atol=1e-6)
    assert dist.mean.shape == (2, channels, 8, 8)
    assert bool((dist.mean[:, 3:].abs() <= 1).all())  # extra channels: tanh, on the pixels' scale
    np.testing.assert_allclose(out.numpy(), resample(x, 8).numpy(), atol=1e-6)
    np.testing.assert_allclose(dist.std.numpy(), model.config.posterior_std, rtol=1e-5)


def test_residual_branches_train_away_from_resampling() -> None:
    torch.manual_seed(0)
    model = ResampleVae(width=16, blocks=1)
    x = unit(pixels())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = float(((resample(x, 8) - x) ** 2).mean())
    for _ in range(40):
        loss = ((model(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.9 * start  # measured: 0.54x in 40 steps
    with torch.no_grad():
        assert float(model.encoder[-1].weight[:3].abs().max()) > 0 and float(model.decoder[-1].weight.abs().max()) > 0


def test_refuses_fewer_than_3_latent_channels() -> None:
    with pytest.raises(ValueError, match="latent_channels >= 3"):
        ResampleVae(latent_channels=2)


# ------------------------------------------------------------------------------------------- a saved folder
def test_saved_folder_loads_as_resample_vae_through_load_vae(tmp_path) -> None:
    torch.manual_seed(2)
    model = ResampleVae(width=8, blocks=1, scaling_factor=1.5)
    with torch.no_grad():
        model.decoder[-1].weight.normal_(0, 0.01)  # not the zero initialisation: the weights must travel
    model.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["_class_name"] == "ResampleVae"
    assert list((tmp_path / "vae").glob("*.safetensors"))
    loaded = load_vae(str(tmp_path / "vae"))
    assert type(loaded) is ResampleVae and not loaded.training
    f = facts(loaded)
    assert (f.latent_channels, f.downsample, f.scaling_factor, f.shift_factor) == (4, 8, 1.5, 0.0)
    p = pixels()
    want = encode_pixels(model.eval(), p, 2, "cpu")
    got = encode_pixels(loaded, p, 2, "cpu")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], np.log(model.config.posterior_std), rtol=1e-6)
    np.testing.assert_array_equal(decode_latents(loaded, got[0]), decode_latents(model, want[0]))


def test_folder_naming_an_unknown_class_or_missing_weights_is_a_codec_error(tmp_path) -> None:
    path = tmp_path / "vae"
    ResampleVae(width=8, blocks=0).save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "_class_name": "VQModel"}))
    with pytest.raises(CodecError, match=rf"{path}/config.json names the model class 'VQModel'; known: "
                                         "AutoencoderKL, ResampleVae"):
        load_vae(str(path))
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CodecError, match=rf"{path}/config.json is not a JSON object"):
        load_vae(str(path))
    (path / "config.json").write_text(json.dumps(config))
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CodecError, match=rf"model directory {path} has config.json but no weights"):
        load_vae(str(path))
