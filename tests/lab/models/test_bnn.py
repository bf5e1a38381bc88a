"""Tests of the binarized network in :mod:`lossyload.lab.models.bnn`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossyload.lab.measure import feature_bytes
from lossyload.lab.models.bnn import BinaryConv2d, BinaryNet, pack_bits, shortcut, unpack_bits


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


def reference_layer(x: torch.Tensor, layer: BinaryConv2d) -> torch.Tensor:
    """Plain autograd: RSign's threshold, STE sign, (binary) conv, batch norm with batch statistics, RPReLU."""
    if layer.threshold is not None:
        x = x - layer.threshold.view(1, -1, 1, 1)
    w = layer.weight
    alpha = w.abs().mean((1, 2, 3), keepdim=True).detach()
    w_eff = alpha * ste_sign(w) if layer.binary_weights else w
    y = F.conv2d(ste_sign(x), w_eff, stride=layer.stride, padding=1)
    z = F.batch_norm(y, None, None, layer.gamma, layer.beta, True, 0.0, layer.eps)
    if layer.act is None:
        return z
    g, slope, zeta = (v.view(1, -1, 1, 1) for v in layer.act)
    return F.relu(z - g) - slope * F.relu(g - z) + zeta


def reference_net(model: BinaryNet, x: torch.Tensor) -> torch.Tensor:
    a = torch.where(x.float() >= 0, 1.0, -1.0)
    for i, layer in enumerate(model.body):
        z = reference_layer(a, layer)
        a = z if i == 0 else z + shortcut(a, z.shape[1], layer.stride)
    return model.fc(a.mean((2, 3)))


# ------------------------------------------------------------------------------------------------ tests
def test_pack_bits_round_trip():
    mask = torch.rand(3, 5, 7) < 0.5  # 105 bits: not a multiple of 8
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == 14
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_forward_convolves_binary_activations_with_binary_weights(monkeypatch):
    """Every convolution (forward, and backward's recompute) takes activations in {-1, +1}; every block's
    weights are alpha * (+-1) per output channel, except the first block's (real by default)."""
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
    model(x).sum().backward()
    layers = list(model.body)
    assert len(convs) == 2 * len(layers)  # the forward pass, then backward's recompute in reverse order
    assert [layer.binary_weights for layer in layers] == [False] + [True] * (len(layers) - 1)
    for (inp, weight), layer in [*zip(convs, layers), *zip(convs[len(layers):], reversed(layers))]:
        assert torch.equal(torch.unique(inp), torch.tensor([-1.0, 1.0]))
        w = layer.weight.detach()
        if layer.binary_weights:
            alpha = w.abs().mean((1, 2, 3), keepdim=True)
            assert torch.equal(weight, alpha * torch.sign(w))
            assert torch.equal(torch.unique(weight / alpha), torch.tensor([-1.0, 1.0]))
        else:
            assert torch.equal(weight, w)
    binary_first = BinaryNet(4, 10, width=8, binary_first=True)
    assert all(layer.binary_weights for layer in binary_first.body)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("react", [False, True])
def test_layer_backward_matches_float_reference(stride, binary, react):
    torch.manual_seed(1)
    layer = BinaryConv2d(6, 5, stride, binary_weights=binary, rsign=react, rprelu=react)
    with torch.no_grad():
        layer.weight.uniform_(-1.5, 1.5)  # some weights outside [-1, 1]: their STE gradient is zero
        layer.gamma.uniform_(0.5, 1.5)
        layer.beta.normal_(0, 0.3)
        if react:
            layer.threshold.normal_(0, 0.3)
            layer.act.add_(torch.randn_like(layer.act) * 0.2)
    a = (torch.randn(3, 6, 9, 10) * 1.5).requires_grad_()  # real input: its sign is convolved, |a| > 1 gets no gradient
    g = torch.randn(3, 5, *layer(a).shape[2:])

    params = (a, layer.weight, layer.gamma, layer.beta, *((layer.threshold, layer.act) if react else ()))
    out = layer(a)
    mine = torch.autograd.grad(out, params, g)
    ref = reference_layer(a, layer)
    theirs = torch.autograd.grad(ref, params, g)

    torch.testing.assert_close(out, ref)
    assert (mine[0] == 0).any() and (mine[0] != 0).any()
    assert not binary or ((mine[1] == 0).any() and (mine[1] != 0).any())
    for m, t in zip(mine, theirs):
        assert t.abs().sum() > 0
        torch.testing.assert_close(m, t, rtol=1e-4, atol=1e-5)


def test_running_statistics_make_eval_deterministic():
    torch.manual_seed(4)
    layer = BinaryConv2d(4, 6)
    a = torch.where(torch.rand(8, 4, 10, 10) < 0.5, 1.0, -1.0)
    for _ in range(50):
        layer(a)  # the running averages converge to this batch's statistics
    layer.eval()
    # close to the batch statistics (running variance is the unbiased estimate: n / (n - 1) off)
    torch.testing.assert_close(layer(a), reference_layer(a, layer).detach(), rtol=1e-2, atol=1e-2)
    one = layer(a[:1])
    torch.testing.assert_close(one, layer(a)[:1])  # eval: a sample's output does not depend on its batch


@pytest.mark.parametrize("react", [False, True])
def test_network_backward_matches_float_reference(react):
    torch.manual_seed(2)
    model = BinaryNet(4, 7, width=8, rsign=react, rprelu=react)
    x = bit_planes(4, 4, 32, 32, seed=3)
    target = torch.randint(0, 7, (4,))
    F.cross_entropy(model(x), target).backward()
    mine = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(reference_net(model, x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(mine[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_saved_bytes_far_below_float_cnn():
    torch.manual_seed(0)
    x = bit_planes(8, 4, 64, 64)
    bnn = BinaryNet(4, 10)
    b = feature_bytes(bnn, x, torch.zeros(8, dtype=torch.long))
    # per block: 2 bits per input activation (its sign and its STE mask; backward recomputes the rest), plus
    # the pooled features the linear head keeps
    bits, a = 0, torch.Size(x.shape)
    for layer in bnn.body:
        bits += 2 * math.prod(a)
        a = torch.Size((a[0], layer.weight.shape[0], (a[2] - 1) // layer.stride + 1, (a[3] - 1) // layer.stride + 1))
    assert bits // 8 <= b <= bits // 8 + 16 * len(bnn.body) + 8 * 4 * a[1] + 8 * 10 * 4  # + the loss's softmax
    # a float network of the same layout (3x3 conv + BatchNorm + ReLU per layer) keeps far more
    layers = [m for layer in bnn.body for m in (nn.Conv2d(layer.weight.shape[1], layer.weight.shape[0], 3,
              layer.stride, 1, bias=False), nn.BatchNorm2d(layer.weight.shape[0]), nn.ReLU())]
    floats = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(a[1], 10))
    assert 16 * b <= feature_bytes(floats, x.float(), torch.zeros(8, dtype=torch.long))


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
