"""Tests of the binarized network in :mod:`lossyload.bnn`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossyload.bnn import BinaryConv2d, BinaryNet, FloatNet, pack_bits, saved_activation_bytes, unpack_bits


def bit_planes(*shape: int, seed: int = 0, masked: float = 0.0) -> torch.Tensor:
    """Random int8 bit-planes in {-1, +1}, a fraction ``masked`` of cells 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, shape, generator=g).to(torch.int8) * 2 - 1
    return torch.where(torch.rand(shape, generator=g) < masked, 0, x).to(torch.int8)


# ------------------------------------------------------------------ float reference of the same STE math
def ste_sign(x: torch.Tensor) -> torch.Tensor:
    """Forward: sign (0 -> +1). Backward: identity where |x| <= 1, zero elsewhere."""
    s = torch.where(x >= 0, 1.0, -1.0)
    return torch.where(x.abs() <= 1, x - x.detach() + s, s)


def reference_layer(a: torch.Tensor, w: torch.Tensor, t: torch.Tensor, stride: int) -> torch.Tensor:
    alpha = w.abs().mean((1, 2, 3), keepdim=True).detach()
    y = F.conv2d(a, alpha * ste_sign(w), stride=stride, padding=1) / math.sqrt(w[0].numel())
    return ste_sign(y - t.view(1, -1, 1, 1))


def reference_net(model: BinaryNet, x: torch.Tensor) -> torch.Tensor:
    a = torch.where(x.float() >= 0, 1.0, -1.0)
    for layer in model.body:
        a = reference_layer(a, layer.weight, layer.threshold, layer.stride)
    return model.fc(a.mean((2, 3)))


# ------------------------------------------------------------------------------------------------ tests
def test_pack_bits_round_trip():
    mask = torch.rand(3, 5, 7) < 0.5  # 105 bits: not a multiple of 8
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == 14
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_forward_uses_binary_weights_and_binary_inputs(monkeypatch):
    torch.manual_seed(0)
    model = BinaryNet(4, 10, width=8)
    x = bit_planes(2, 4, 32, 32, masked=0.01)
    assert (x == 0).any()
    convs = []  # (input, weight) of every conv2d actually run
    real_conv = F.conv2d

    def spy(inp, weight, *args, **kwargs):
        convs.append((inp.detach().clone(), weight.detach().clone()))
        return real_conv(inp, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    module_inputs = []
    for layer in model.body:
        layer.register_forward_hook(lambda mod, args, out: module_inputs.append((args[0].detach(), out.detach())))
    model(x).sum().backward()

    layers = list(model.body)
    assert len(convs) == len(layers) == len(module_inputs)
    for (inp, weight), layer, (mod_in, mod_out) in zip(convs, layers, module_inputs):
        assert torch.equal(torch.unique(inp), torch.tensor([-1.0, 1.0]))
        assert torch.equal(inp, mod_in)
        assert torch.equal(torch.unique(mod_out), torch.tensor([-1.0, 1.0]))
        alpha = layer.weight.detach().abs().mean((1, 2, 3), keepdim=True)
        assert torch.equal(torch.unique(weight / alpha), torch.tensor([-1.0, 1.0]))
        assert torch.equal(torch.sign(weight), torch.sign(layer.weight.detach()))
        assert torch.allclose(weight.abs(), alpha.expand_as(weight))


@pytest.mark.parametrize("stride", [1, 2])
def test_layer_backward_matches_float_reference(stride):
    torch.manual_seed(1)
    layer = BinaryConv2d(6, 5, stride)
    with torch.no_grad():
        layer.weight.mul_(1.5)  # some weights outside [-1, 1]: their STE gradient is zero
        layer.threshold.normal_(0, 0.3)
    a = torch.where(torch.rand(3, 6, 9, 10) < 0.5, 1.0, -1.0).requires_grad_()
    g = torch.randn(3, 5, *layer(a).shape[2:])

    out = layer(a)
    ga, gw, gt = torch.autograd.grad(out, (a, layer.weight, layer.threshold), g)
    ref = reference_layer(a, layer.weight, layer.threshold, stride)
    ra, rw, rt = torch.autograd.grad(ref, (a, layer.weight, layer.threshold), g)

    assert torch.equal(out, ref)
    assert (gw == 0).any() and (gw != 0).any()
    for mine, theirs in [(ga, ra), (gw, rw), (gt, rt)]:
        assert theirs.abs().sum() > 0
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_network_backward_matches_float_reference():
    torch.manual_seed(2)
    model = BinaryNet(4, 7, width=8)
    x = bit_planes(4, 4, 32, 32, seed=3)
    target = torch.randint(0, 7, (4,))
    F.cross_entropy(model(x), target).backward()
    mine = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(reference_net(model, x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(mine[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_saved_activation_bytes_counts_what_autograd_keeps():
    lin = nn.Linear(100, 3)
    x = torch.randn(8, 100, requires_grad=True)
    assert saved_activation_bytes(lin, x) == 8 * 100 * 4  # the input; the weight is left out
    relu = nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 3))
    assert saved_activation_bytes(relu, x) == 8 * 100 * 4 + 8 * 50 * 4  # ReLU output = next input, counted once


def test_saved_bytes_far_below_float_cnn():
    torch.manual_seed(0)
    x = bit_planes(8, 4, 64, 64)
    bnn, cnn = BinaryNet(4, 10), FloatNet(4, 10)
    # the same layout: conv shapes and strides agree
    floats = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.weight.shape, m.stride[0]) for m in floats] == [(b.weight.shape, b.stride) for b in bnn.body]
    b, f = saved_activation_bytes(bnn, x), saved_activation_bytes(cnn, x)
    # per binary layer: 1 bit per input and 1 bit per output activation, plus the pooled features
    bits = 0
    a = torch.Size(x.shape)
    for layer in bnn.body:
        out = (a[0], layer.weight.shape[0], (a[2] + 1) // layer.stride, (a[3] + 1) // layer.stride)
        bits += math.prod(a) + math.prod(out)
        a = torch.Size(out)
    assert b <= bits // 8 + 8 * len(bnn.body) + 8 * 4 * a[1]
    assert 16 * b <= f


def toy_task(n: int, g: torch.Generator, size: int = 32, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bit-planes; in the central region, plane ``label`` is +1 in 90% of cells."""
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.rand(n, 4, size, size, generator=g) < 0.5
    lo, hi = size // 4, 3 * size // 4
    x[torch.arange(n), y, lo:hi, lo:hi] = torch.rand(n, hi - lo, hi - lo, generator=g) < 0.9
    return x.to(torch.int8) * 2 - 1, y


def test_trains_on_toy_task():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = BinaryNet(4, 4, width=8)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = toy_task(512, g)

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            logits = model(xt)
        return F.cross_entropy(logits, yt).item(), (logits.argmax(1) == yt).float().mean().item()

    loss0, acc0 = evaluate()
    for _ in range(200):
        x, y = toy_task(32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, acc1 = evaluate()
    assert acc0 < 0.45
    assert loss1 < 0.5 * loss0
    assert acc1 > 0.85
