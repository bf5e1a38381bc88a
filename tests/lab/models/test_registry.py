"""The model registry's contract, over every registered model (as timm tests its registry): each builds by
name, takes the input its rows feed it and gives ``[batch, classes]`` logits; unknown names and ``None``
overrides behave."""

from __future__ import annotations

import pytest
import torch

from lossyload.errors import LossyloadError
from lossyload.lab.models import create_model, list_models
from lossyload.lab.rows import ROWS

B, CLASSES = 2, 5
DCT = {"y": torch.zeros(B, 64, 8, 8, dtype=torch.int16), "cbcr": torch.zeros(B, 128, 4, 4, dtype=torch.int16)}
# name: (overrides, an input batch of the shape its rows feed it)
INPUTS = {
    "pixel-cnn": ({}, torch.randn(B, 3, 64, 64)),
    "dct-cnn": ({}, DCT),
    "grid-cnn": ({"in_channels": 4}, torch.randn(B, 4, 32, 32)),
    "mel-cnn": ({}, torch.randn(B, 128, 128)),
    "vq-cnn": ({}, torch.randn(B, 4, 64, 64)),
    "latent-cnn": ({}, torch.randn(B, 128, 75)),
    "bnn": ({}, torch.randint(0, 2, (B, 4, 64, 64), dtype=torch.int8) * 2 - 1),
    "mnv2-pixels": ({"width_mult": 0.25}, torch.randn(B, 3, 64, 64)),
    "mnv2-grid": ({"in_channels": 4, "width_mult": 0.25}, torch.randn(B, 4, 32, 32)),
    "mnv2-dct": ({"width_mult": 0.25}, DCT),
}


def test_every_model_is_covered_and_every_row_model_is_registered() -> None:
    assert sorted(INPUTS) == list_models()
    assert {r.model for r in ROWS if r.model} <= set(list_models())


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_builds_by_name_and_gives_logits(name: str) -> None:
    overrides, x = INPUTS[name]
    torch.manual_seed(0)
    model = create_model(name, classes=CLASSES, **overrides).eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (B, CLASSES) and out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.manual_seed(0)
    again = create_model(name, classes=CLASSES, **overrides).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_none_overrides_keep_the_defaults_and_unknown_names_fail() -> None:
    a = create_model("mnv2-dct", classes=CLASSES, keep=None, width_mult=None)
    b = create_model("mnv2-dct", classes=CLASSES)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    small = create_model("mnv2-dct", classes=CLASSES, keep=(16, 8))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in b.parameters())
    with pytest.raises(LossyloadError, match="unknown model 'resnet'; known: bnn, dct-cnn"):
        create_model("resnet", classes=CLASSES)


def test_dct_cnn_chroma_layouts_and_time_pooled_heads() -> None:
    from lossyload.lab.measure import forward_flops

    x = {"y": torch.randn(B, 16, 20, 20), "cbcr": torch.randn(B, 8, 10, 10)}  # DCTNet's 24 channels, 160 px
    up = create_model("dct-cnn", classes=CLASSES, keep=(16, 4), chroma="upsample").eval()
    late = create_model("dct-cnn", classes=CLASSES, keep=(16, 4), chroma="late").eval()
    pixels = create_model("pixel-cnn", classes=CLASSES).eval()
    for m in (up, late):
        assert m(x).shape == (B, CLASSES)
    assert up.y[0].num_features == 24 and late.y[0].num_features == 16  # the first BatchNorm sees luma (+ chroma)
    assert forward_flops(up, x) < forward_flops(pixels, torch.randn(B, 3, 160, 160))
    with pytest.raises(ValueError, match="chroma must be"):
        create_model("dct-cnn", classes=CLASSES, chroma="early")
    # spectrogram CNNs keep the frequency rows apart: flipping the frequency axis changes the logits
    mel = create_model("mel-cnn", classes=CLASSES).eval()
    spec = torch.randn(B, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(mel(spec), mel(spec.flip(1)), atol=1e-4)
        assert mel.fc.in_features == 64 * 8
