"""Tests of the MobileNetV2 family in :mod:`lossyload.lab.models.mobilenet`."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lossyload.lab.models.mobilenet import DctMobileNetV2, mobilenet_grid, mobilenet_pixels


def dct_batch(b: int, keep: tuple[int, int], size: int = 224) -> dict[str, torch.Tensor]:
    ky, kc = keep
    g = torch.Generator().manual_seed(0)
    return {
        "y": torch.randint(-200, 200, (b, ky, size // 8, size // 8), generator=g, dtype=torch.int16),
        "cbcr": torch.randint(-50, 50, (b, 2 * kc, size // 16, size // 16), generator=g, dtype=torch.int16),
        "qt": torch.ones(b, 2, 64, dtype=torch.uint16),
    }


def forward_flops(model: torch.nn.Module, x) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_pixels_shape_and_stem():
    model = mobilenet_pixels(10, width_mult=0.25)
    assert model(torch.rand(2, 3, 224, 224)).shape == (2, 10)
    gray = mobilenet_pixels(5, in_channels=1, width_mult=0.25)
    assert gray(torch.rand(2, 1, 224, 224)).shape == (2, 5)


@pytest.mark.parametrize("channels", [3, 4])
def test_grid_shape_and_final_map(channels):
    model = mobilenet_grid(10, in_channels=channels, width_mult=0.25)
    x = torch.rand(2, channels, 64, 64)
    assert model(x).shape == (2, 10)
    feats = model.net.features(model.norm(x))
    assert feats.shape[2:] == (4, 4)
    assert model(x.to(torch.float16)).dtype == torch.float32  # cast to float before the input norm


def test_grid_rows_differ_only_in_first_conv():
    a = mobilenet_grid(10, in_channels=3).state_dict()
    b = mobilenet_grid(10, in_channels=4).state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].shape != b[k].shape]
    # the input BatchNorm and the stem conv see the input channels; nothing else does
    assert sorted(differ) == sorted(
        [k for k in a if k.startswith("norm.") and a[k].dim() == 1 and k != "norm.num_batches_tracked"]
        + ["net.features.0.0.weight"]
    )
    assert a["net.features.0.0.weight"].shape[1:] == (3, 3, 3) and b["net.features.0.0.weight"].shape[1] == 4
    assert mobilenet_grid(10, in_channels=3).net.features[0][0].stride == (1, 1)


@pytest.mark.parametrize("keep", [(64, 64), (16, 8)])
def test_dct_shape_flops_and_params(keep):
    model = DctMobileNetV2(10, keep=keep, width_mult=0.5)
    assert model(dct_batch(2, keep)).shape == (2, 10)
    pixels = mobilenet_pixels(10, width_mult=0.5)
    dct_flops = forward_flops(model, dct_batch(1, keep))
    pixel_flops = forward_flops(pixels, torch.rand(1, 3, 224, 224))
    assert 0 < dct_flops < 0.8 * pixel_flops
    # same blocks from 1/8 on; only the stem and the early blocks are gone and the two projections added
    assert 0.9 * params(pixels) < params(model) < params(pixels)


def test_dct_rejoins_stack_at_the_right_widths():
    model = DctMobileNetV2(10, width_mult=0.5)
    x = dct_batch(1, (64, 64))
    model.eval()
    with torch.no_grad():
        h8 = model.y(x["y"].float())
        h16 = model.stage8(h8)
    assert h8.shape[2:] == (28, 28) and h16.shape[2:] == (14, 14)
    assert model.merge[0].out_channels == h16.shape[1]  # back to the stack's width at 1/16
    assert model.rest[0].use_res_connect  # the first remaining block is a residual one: widths must agree


def test_backward_runs():
    for model, x in [
        (mobilenet_pixels(3, width_mult=0.25), torch.rand(2, 3, 224, 224)),
        (mobilenet_grid(3, in_channels=4, width_mult=0.25), torch.randn(2, 4, 64, 64)),
        (DctMobileNetV2(3, keep=(16, 8), width_mult=0.25), dct_batch(2, (16, 8))),
    ]:
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_param_counts():
    # torchvision's MobileNetV2 at width 0.5 with a 10-way head; the stride-1 grid stem changes no parameters
    assert params(mobilenet_pixels(10)) == 700_490
    assert params(mobilenet_grid(10, in_channels=3)) == 700_490 + 2 * 3
    assert params(mobilenet_grid(10, in_channels=4)) == 700_490 + 16 * 9 + 2 * 4
