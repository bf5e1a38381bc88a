"""A binarized network on VQ code bit-planes ``[4, 64, 64]`` (int8 in {-1, +1}), built for small feature memory.

A block is ``act(BatchNorm(conv(sign(x - t), alpha * sign(W))))`` plus, from the second block on, its
real-valued input (a Bi-Real Net shortcut, Liu et al. 2018: subsampled for stride 2, repeated for doubled
channels), which is what lets a deep BNN train. What the literature adds on top, each a switch so that the
trainer can measure it as an ablation:

- ``rsign``: ReActNet's RSign (Liu et al. 2020): a learnable per-channel threshold ``t`` before the sign
  (else ``t = 0``);
- ``rprelu``: ReActNet's RPReLU after the batch norm, ``prelu(z - g) + zeta`` with learnable per-channel
  shifts and slope (else identity);
- ``binary_weights``: weights ``alpha * sign(W)`` (XNOR-Net, ``alpha`` = mean ``|W|`` per output channel) or
  real weights (the first stage of two-stage training: binary activations, real weights).

Gradients use straight-through estimators that pass where ``|x - t| <= 1`` (activations) and ``|W| <= 1``
(weights); ``alpha`` is a constant in backward. Each block is one autograd function that saves for backward
only two bit-packed tensors (the sign bits of its input and its STE mask, 8 per byte) besides its parameters:
backward recomputes the convolution, the batch norm and the RPReLU from those bits (as gradient checkpointing
does); the threshold subtraction and the shortcuts (slicing, repeating, adding) save nothing, so no float copy
of a feature map is kept. The classifier is a full-precision linear layer on globally pooled features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

# (output width multiple, stride) of the conv blocks: 64x64 -> 8x8. The first block is narrow: the saved
# bits of the full-resolution maps dominate the network's feature memory
LAYOUT: tuple[tuple[float, int], ...] = ((0.5, 1), (1, 2), (2, 2), (2, 1), (4, 2), (4, 1))

_SHIFTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as a flat uint8 tensor of ``ceil(n / 8)`` bytes, LSB first."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.packbits(mask.reshape(-1).numpy(), bitorder="little"))
    flat = mask.reshape(-1)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _SHIFTS.to(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape``."""
    n = math.prod(shape)
    if packed.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(packed.numpy(), count=n, bitorder="little").view(np.bool_)).view(shape)
    bits = (packed[:, None] & _SHIFTS.to(packed.device)) != 0
    return bits.reshape(-1)[:n].view(shape)


def _sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with ``sign(0) = +1``, so the result is exactly {-1, +1}."""
    return _pm1(x >= 0, x.dtype)


def _pm1(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """+1 where ``mask``, else -1 (an arithmetic form: several times faster on CPU than a scalar ``where``)."""
    return mask.to(dtype).mul_(2).sub_(1)


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """The weight a binary layer convolves with: ``alpha * sign(w)``, alpha = mean ``|w|`` per output channel."""
    return w.abs().mean((1, 2, 3), keepdim=True) * _sign(w)


def _conv_weight(w: torch.Tensor, binary: bool) -> torch.Tensor:
    """A binary weight's forward value is exactly ``alpha * sign(w)``; its gradient passes where ``|w| <= 1``."""
    if not binary:
        return w
    clipped = w.clamp(-1, 1)
    return w.abs().mean((1, 2, 3), keepdim=True).detach() * (_sign(w).detach() + clipped - clipped.detach())


def _rprelu(z: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
    """``prelu(z - g) + zeta`` per channel, ``act`` = rows (g, slope, zeta); identity when None."""
    if act is None:
        return z
    g, slope, zeta = act
    return F.prelu(z - g.view(1, -1, 1, 1), slope) + zeta.view(1, -1, 1, 1)


def _block(a: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, act: torch.Tensor | None,
           stride: int, eps: float, binary: bool, running: tuple | None = None, momentum: float = 0.0
           ) -> torch.Tensor:
    """RPReLU of the batch-normalised conv of ``a`` (in {-1, +1}) in training; ``running`` (mean, var)
    buffers are updated in place when given (the forward pass, not backward's recompute)."""
    y = F.conv2d(a, _conv_weight(w, binary), stride=stride, padding=1)
    mean, var = running or (None, None)
    return _rprelu(F.batch_norm(y, mean, var, gamma, beta, True, momentum, eps), act)


class _SignBlock(torch.autograd.Function):
    """:func:`_block` of ``sign(x)`` with STE gradients. Saves the packed bits of ``x >= 0`` and ``|x| <= 1``
    and the parameters; backward recomputes the rest."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                act: torch.Tensor | None, layer: BinaryConv2d) -> torch.Tensor:
        out = _block(_sign(x), w, gamma, beta, act, layer.stride, layer.eps, layer.binary_weights,
                     (layer.running_mean, layer.running_var), layer.momentum)
        ctx.stride, ctx.eps, ctx.binary, ctx.x_shape, ctx.x_dtype = (
            layer.stride, layer.eps, layer.binary_weights, x.shape, x.dtype)
        ctx.has_act = act is not None
        ctx.save_for_backward(pack_bits(x >= 0), pack_bits(x.abs() <= 1), w, gamma, beta,
                              act if act is not None else w.new_empty(0))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sign_bits, mask_bits, w, gamma, beta, act = ctx.saved_tensors
        a = _pm1(unpack_bits(sign_bits, ctx.x_shape), ctx.x_dtype)
        inputs = [a, w, gamma, beta, act if ctx.has_act else None]
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(need)
                      for t, need in zip(inputs, ctx.needs_input_grad)]
            out = _block(*leaves, ctx.stride, ctx.eps, ctx.binary)
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad) if wanted else ())
        result = [next(grads) if t is not None and t.requires_grad else None for t in leaves]
        if result[0] is not None:
            result[0] = result[0] * unpack_bits(mask_bits, ctx.x_shape)
        return (*result, None)


class BinaryConv2d(nn.Module):
    """``act(BatchNorm(conv3x3(sign(x - t), alpha * sign(W))))`` (padding 1): real in, binary convolution, real
    out. ``binary_weights=False``: real weights (the first layer, as in XNOR-Net and Bi-Real Net, and every
    layer in the first stage of two-stage training); its input is still ±1. ``rsign``: learnable threshold
    ``t`` per input channel; ``rprelu``: RPReLU activation (else none)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, *, binary_weights: bool = True, rsign: bool = False,
                 rprelu: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.stride, self.binary_weights, self.momentum, self.eps = stride, binary_weights, momentum, eps
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3).uniform_(-1, 1) * (1.0 if binary_weights else 0.1))
        self.gamma = nn.Parameter(torch.ones(cout))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.threshold = nn.Parameter(torch.zeros(cin)) if rsign else None
        # RPReLU rows: shift g, slope (0.25 as PReLU's default), shift zeta
        self.act = nn.Parameter(torch.tensor([[0.0] * cout, [0.25] * cout, [0.0] * cout])) if rprelu else None
        self.register_buffer("running_mean", torch.zeros(cout))
        self.register_buffer("running_var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold is not None:
            x = x - self.threshold.view(1, -1, 1, 1)  # autograd saves nothing for a subtraction
        if self.training:
            return _SignBlock.apply(x, self.weight, self.gamma, self.beta, self.act, self)
        w = binary_weight(self.weight) if self.binary_weights else self.weight
        y = F.conv2d(_sign(x), w, stride=self.stride, padding=1)
        z = F.batch_norm(y, self.running_mean, self.running_var, self.gamma, self.beta, False, 0.0, self.eps)
        return _rprelu(z, self.act)

    def extra_repr(self) -> str:
        cout, cin = self.weight.shape[:2]
        return (f"{cin}, {cout}, stride={self.stride}, binary_weights={self.binary_weights}, "
                f"rsign={self.threshold is not None}, rprelu={self.act is not None}")


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
    average pooling (``rows``: over time only, each of the ``rows`` frequency rows kept), full-precision linear
    head. Every block convolves ±1 activations; its weights are binary
    (when ``binary_weights``) except the first block's (real unless ``binary_first``, as in XNOR-Net and
    Bi-Real Net: 4 input channels give a binary 3x3 filter only 36 signs).

    Input: int8 ``[B, channels, H, W]`` in {-1, +1}; masked cells (0) are read as +1."""

    def __init__(self, channels: int, classes: int, *, width: int = 32, binary_first: bool = False,
                 binary_weights: bool = True, rsign: bool = False, rprelu: bool = False,
                 rows: int | None = None) -> None:
        super().__init__()
        layers, cin = [], channels
        for i, (cout, stride) in enumerate(_widths(width)):
            layers.append(BinaryConv2d(cin, cout, stride, binary_weights=binary_weights and (i > 0 or binary_first),
                                       rsign=rsign and i > 0, rprelu=rprelu))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.rows = rows
        self.fc = nn.Linear(cin * (rows or 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _sign(x.float())
        for i, layer in enumerate(self.body):
            z = layer(x)
            x = z if i == 0 else z + shortcut(x, z.shape[1], layer.stride)
        return self.fc(x.mean((2, 3)) if self.rows is None else x.mean(3).flatten(1))


@register_model("bnn")
def bnn(classes: int, *, in_channels: int = 4, width: int = 32, binary_first: bool = False,
        binary_weights: bool = True, rsign: bool = False, rprelu: bool = False, rows: int | None = None) -> nn.Module:
    return BinaryNet(in_channels, classes, width=width, binary_first=binary_first, binary_weights=binary_weights,
                     rsign=rsign, rprelu=rprelu, rows=rows)
