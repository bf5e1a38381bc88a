"""The trainer's measurements against hand-computed values on toy models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossyload.lab import measure


def total(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.sum()  # saves nothing for backward: only the model's own tensors are counted


def test_flops_of_a_linear_and_a_conv_are_two_per_multiply_add() -> None:
    assert measure.forward_flops(nn.Linear(4, 3, bias=False), torch.randn(2, 4)) == 2 * 2 * 4 * 3
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    assert measure.forward_flops(conv, torch.randn(1, 1, 5, 5)) == 2 * (2 * 5 * 5) * (1 * 3 * 3)


def test_flops_leave_the_training_mode_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout())
    measure.forward_flops(model, torch.randn(2, 4))
    assert model.training


def test_feature_memory_counts_saved_activations_once_and_no_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(2, 4)
    # Linear 1 saves its input x (2x4 float32); ReLU saves its output (2x8), which Linear 2 saves again
    # as its input (one storage, counted once); the weights are parameters, not features
    assert measure.feature_bytes(model, x, torch.zeros(2, dtype=torch.long), total) == 2 * 4 * 4 + 2 * 8 * 4


def test_feature_memory_of_conv_batchnorm_relu() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    x = torch.randn(2, 3, 6, 6)
    got = measure.feature_bytes(model, x, torch.zeros(2, dtype=torch.long), total)
    # conv input 2x3x6x6, BatchNorm input 2x4x6x6 and its per-channel mean and inverse std (2 x 4),
    # ReLU output 2x4x6x6; all float32
    assert got == 4 * (2 * 3 * 36 + 2 * 4 * 36 + 2 * 4 + 2 * 4 * 36)


def test_feature_memory_scales_with_the_batch() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    one = measure.feature_bytes(model, torch.randn(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), total)
    eight = measure.feature_bytes(model, torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), total)
    assert eight == 8 * one > 0


@pytest.mark.parametrize("x, nbytes", [
    (torch.zeros(4, 3, 8, 8), 4 * 3 * 64 * 4),
    ({"y": torch.zeros(2, 16, 4, 4, dtype=torch.int16), "cbcr": torch.zeros(2, 16, 2, 2, dtype=torch.int16)},
     2 * 16 * 16 * 2 + 2 * 16 * 4 * 2),
])
def test_input_bytes(x, nbytes: int) -> None:
    assert measure.input_bytes(x) == nbytes


def test_params() -> None:
    assert measure.count_params(nn.Linear(4, 3)) == 4 * 3 + 3
