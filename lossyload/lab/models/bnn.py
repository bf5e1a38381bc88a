"""A binarized network on VQ code bit-planes ``[4, 64, 64]`` (int8 in {-1, +1}), built for small feature memory.

Every convolution is binary: weights ``alpha * sign(W)`` (XNOR-Net, ``alpha`` = mean ``|W|`` per output channel)
and inputs ``sign(x)`` in {-1, +1}. A block computes ``BatchNorm(conv(sign(x), alpha * sign(W)))`` and, after
the first, adds the block's real-valued input back (a Bi-Real Net shortcut, Liu et al. 2018: subsampled for
stride 2, repeated for doubled channels), which is what lets a deep BNN train. Gradients use straight-through
estimators that pass where ``|x| <= 1`` (activations) and ``|W| <= 1`` (weights); ``alpha`` is a constant in
backward. Each block is one autograd function that saves for backward only two bit-packed tensors (the sign
bits of its input and its STE mask, 8 per byte) besides its parameters: backward recomputes the convolution
and the batch norm from those bits (as gradient checkpointing does), and the shortcuts (slicing, repeating,
adding) save nothing, so no float copy of a feature map is kept. The classifier is a full-precision linear
layer on globally pooled features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

# (output width multiple, stride) of the conv blocks: 64x64 -> 8x8. The first block is narrow: the saved
# bits of the full-resolution maps dominate the network's feature memory
LAYOUT: tuple[tuple[float, int], ...] = ((0.5, 1), (2, 2), (4, 2), (4, 1), (4, 2))

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


def _block(a: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, stride: int,
           eps: float, binary: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(z, batch mean, batch variance)``: batch-normalised conv of ``a`` (in {-1, +1}) in training. A binary
    weight's forward value is exactly ``alpha * sign(w)``; its gradient passes where ``|w| <= 1``."""
    clipped = w.clamp(-1, 1)
    w_eff = w.abs().mean((1, 2, 3), keepdim=True).detach() * (_sign(w).detach() + clipped - clipped.detach()) \
        if binary else w
    y = F.conv2d(a, w_eff, stride=stride, padding=1)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    z = (y - mean.view(1, -1, 1, 1)) * torch.rsqrt(var + eps).view(1, -1, 1, 1)
    return z * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1), mean, var


class _SignConvBN(torch.autograd.Function):
    """``BN(conv(sign(x), alpha * sign(w)))`` in training, with STE gradients; returns the batch statistics too
    (for the running averages). Saves the packed bits of ``x >= 0`` and ``|x| <= 1`` and the parameters;
    backward recomputes the rest."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, stride: int,
                eps: float, binary: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, mean, var = _block(_sign(x), w, gamma, beta, stride, eps, binary)
        ctx.stride, ctx.eps, ctx.binary, ctx.x_shape, ctx.x_dtype = stride, eps, binary, x.shape, x.dtype
        ctx.save_for_backward(pack_bits(x >= 0), pack_bits(x.abs() <= 1), w, gamma, beta)
        ctx.mark_non_differentiable(mean, var)
        return z, mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _mean: torch.Tensor, _var: torch.Tensor):
        sign_bits, mask_bits, *params = ctx.saved_tensors
        a = torch.where(unpack_bits(sign_bits, ctx.x_shape), 1.0, -1.0).to(ctx.x_dtype)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip([a, *params], ctx.needs_input_grad)]
            z, _, _ = _block(*leaves, ctx.stride, ctx.eps, ctx.binary)
            wanted = [t for t in leaves if t.requires_grad]
            grads = iter(torch.autograd.grad(z, wanted, grad) if wanted else ())
        out = [next(grads) if t.requires_grad else None for t in leaves]
        if out[0] is not None:
            out[0] = out[0] * unpack_bits(mask_bits, ctx.x_shape)
        return (*out, None, None, None)


class BinaryConv2d(nn.Module):
    """``BatchNorm(conv3x3(sign(x), alpha * sign(W)))`` (padding 1): real in, binary convolution, real out.
    ``binary=False``: real weights (the first layer, as in XNOR-Net and Bi-Real Net); its input is still ±1."""

    def __init__(self, cin: int, cout: int, stride: int = 1, *, binary: bool = True, momentum: float = 0.1,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.stride, self.binary, self.momentum, self.eps = stride, binary, momentum, eps
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3).uniform_(-1, 1))
        self.gamma = nn.Parameter(torch.ones(cout))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.register_buffer("running_mean", torch.zeros(cout))
        self.register_buffer("running_var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            z, mean, var = _SignConvBN.apply(x, self.weight, self.gamma, self.beta, self.stride, self.eps, self.binary)
            with torch.no_grad():
                n = z.numel() // z.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
            return z
        w = binary_weight(self.weight) if self.binary else self.weight
        y = F.conv2d(_sign(x), w, stride=self.stride, padding=1)
        return F.batch_norm(y, self.running_mean, self.running_var, self.gamma, self.beta, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        cout, cin = self.weight.shape[:2]
        return f"{cin}, {cout}, stride={self.stride}, binary={self.binary}"


def shortcut(x: torch.Tensor, cout: int, stride: int) -> torch.Tensor:
    """The block's input on its output grid: every ``stride``-th cell, channels repeated up to ``cout``
    (a slice and a concatenation: autograd saves nothing for them)."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    if cout != x.shape[1]:
        x = torch.cat([x] * (cout // x.shape[1]), 1)
    return x


def _widths(width: int) -> list[tuple[int, int]]:
    return [(max(1, int(m * width)), s) for m, s in LAYOUT]


class BinaryNet(nn.Module):
    """Conv blocks (:data:`LAYOUT`) on ±1 bit-planes with real-valued shortcuts from the second block on, global
    average pooling, full-precision linear head. Every block convolves ±1 activations; its weights are binary
    except the first block's (real unless ``binary_first``, as in XNOR-Net and Bi-Real Net: 4 input channels
    give a binary 3x3 filter only 36 signs).

    Input: int8 ``[B, channels, H, W]`` in {-1, +1}; masked cells (0) are read as +1."""

    def __init__(self, channels: int, classes: int, *, width: int = 32, binary_first: bool = False) -> None:
        super().__init__()
        layers, cin = [], channels
        for i, (cout, stride) in enumerate(_widths(width)):
            layers.append(BinaryConv2d(cin, cout, stride, binary=i > 0 or binary_first))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _sign(x.float())
        for i, layer in enumerate(self.body):
            z = layer(x)
            x = z if i == 0 else z + shortcut(x, z.shape[1], layer.stride)
        return self.fc(x.mean((2, 3)))


@register_model("bnn")
def bnn(classes: int, *, in_channels: int = 4, width: int = 32, binary_first: bool = False) -> nn.Module:
    return BinaryNet(in_channels, classes, width=width, binary_first=binary_first)
