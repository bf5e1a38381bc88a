"""A binarized network on VQ code bit-planes ``[4, 64, 64]`` (int8 in {-1, +1}), built for small feature memory.

Every convolution is binary: weights ``alpha * sign(W)`` (XNOR-Net, ``alpha`` = mean ``|W|`` per output channel)
and inputs in {-1, +1}. A layer computes ``z = conv(a, alpha * sign(W)) / sqrt(fan_in) - t`` (``t`` a learnable
per-channel threshold; the fixed division keeps the integer conv sums on the scale of the STE window) and
emits ``sign(z)``. Gradients use straight-through estimators that pass where ``|z| <= 1`` (activations) and
``|W| <= 1`` (weights). The layer is one autograd function that saves for backward only bit-packed tensors
(the sign bits of its input and the bits of its STE mask, 8 per byte) besides the weight parameter, and
recomputes the rest. No BatchNorm: it would keep float copies of full-size maps. The classifier is a full
precision linear layer on globally pooled features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (output width multiple, stride) of the binary conv layers: 64x64 -> 8x8
LAYOUT: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (4, 2))

_SHIFTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as a flat uint8 tensor of ``ceil(n / 8)`` bytes, LSB first."""
    flat = mask.reshape(-1)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = _SHIFTS.to(flat.device)
    return (flat.view(-1, 8).to(torch.uint8) * shifts).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape``."""
    bits = (packed[:, None] & _SHIFTS.to(packed.device)) != 0
    return bits.reshape(-1)[: math.prod(shape)].view(shape)


def _sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with ``sign(0) = +1``, so the result is exactly {-1, +1}."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """The weight a binary layer convolves with: ``alpha * sign(w)``, alpha = mean ``|w|`` per output channel."""
    return w.abs().mean((1, 2, 3), keepdim=True) * _sign(w)


class _BinaryConvSign(torch.autograd.Function):
    """``sign(conv(a, alpha * sign(w), stride, pad 1) / sqrt(fan_in) - t)`` with STE gradients.

    Saves the weight, the packed sign bits of ``a`` and the packed STE mask ``|z| <= 1``. ``alpha`` is treated
    as a constant in backward (its own gradient is dropped): ``dL/dw = alpha * dL/dw_eff * [|w| <= 1]``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, w: torch.Tensor, t: torch.Tensor, stride: int) -> torch.Tensor:
        w_eff = binary_weight(w)
        z = F.conv2d(a, w_eff, stride=stride, padding=1) / math.sqrt(w[0].numel()) - t.view(1, -1, 1, 1)
        ctx.stride, ctx.a_shape, ctx.z_shape, ctx.a_dtype = stride, a.shape, z.shape, a.dtype
        ctx.save_for_backward(w, pack_bits(a > 0), pack_bits(z.abs() <= 1))
        return _sign(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, a_bits, mask_bits = ctx.saved_tensors
        g_z = grad * unpack_bits(mask_bits, ctx.z_shape)
        g_t = -g_z.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        g_y = g_z / math.sqrt(w[0].numel())
        w_eff = binary_weight(w)
        g_a = g_w = None
        if ctx.needs_input_grad[0]:
            g_a = torch.nn.grad.conv2d_input(ctx.a_shape, w_eff, g_y, stride=ctx.stride, padding=1)
        if ctx.needs_input_grad[1]:
            a = torch.where(unpack_bits(a_bits, ctx.a_shape), 1.0, -1.0).to(ctx.a_dtype)
            g_eff = torch.nn.grad.conv2d_weight(a, w.shape, g_y, stride=ctx.stride, padding=1)
            g_w = g_eff * w.abs().mean((1, 2, 3), keepdim=True) * (w.abs() <= 1)
        return g_a, g_w, g_t, None


class BinaryConv2d(nn.Module):
    """A 3x3 binary conv (padding 1) followed by a learnable per-channel threshold and a sign: ±1 in, ±1 out."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3).uniform_(-1, 1))
        self.threshold = nn.Parameter(torch.zeros(cout))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return _BinaryConvSign.apply(a, self.weight, self.threshold, self.stride)

    def extra_repr(self) -> str:
        cout, cin = self.weight.shape[:2]
        return f"{cin}, {cout}, stride={self.stride}"


def _widths(width: int) -> list[tuple[int, int]]:
    return [(m * width, s) for m, s in LAYOUT]


class BinaryNet(nn.Module):
    """Binary conv stack (:data:`LAYOUT`) on ±1 bit-planes, global average pooling, full-precision linear head.

    Input: int8 ``[B, channels, H, W]`` in {-1, +1}; masked cells (0) are read as +1."""

    def __init__(self, channels: int, classes: int, *, width: int = 32) -> None:
        super().__init__()
        layers, cin = [], channels
        for cout, stride in _widths(width):
            layers.append(BinaryConv2d(cin, cout, stride))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(_sign(x.float())).mean((2, 3)))


class FloatNet(nn.Module):
    """The float CNN of :class:`BinaryNet`'s layout (3x3 conv + BatchNorm + ReLU per layer): its memory baseline."""

    def __init__(self, channels: int, classes: int, *, width: int = 32) -> None:
        super().__init__()
        layers, cin = [], channels
        for cout, stride in _widths(width):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x.float()).mean((2, 3)))


def saved_activation_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during ``model(*inputs)``: storages of saved tensors, each counted once,
    leaving out the model's parameters and buffers."""
    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in state:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*inputs)
    return sum(seen.values())
