"""The audio half of the main job end to end on a tiny build of the bundled keyword set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossyload.datasets.keywords import KeywordsConfig, build_keywords
from lossyload.demo_audio import AudioDemoConfig, format_audio_table, run_audio_demo
from lossyload.errors import LossyloadError
from lossyload.models import GridNet, LatentNet1d


def test_audio_demo_runs_every_row_and_reports(tmp_path: Path, one_thread) -> None:
    data = tmp_path / "keywords"
    build_keywords(data, KeywordsConfig(max_voices=5, dialects=("en-us",)), workers=1, progress=False)
    cfg = AudioDemoConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=8, shard_workers=1,
                          encodec_weights="random")
    rows = {r["representation"].split(" ·")[0] + ":" + r["representation"].split("· ")[1]: r
            for r in run_audio_demo(cfg)}
    assert len(rows) == 6
    b = cfg.batch_size
    expected_input = {"mel": b * 128 * 128 * 4, "vq:4-bit": b * 64 * 64, "vq:bit-planes": b * 4 * 64 * 64,
                      "vq:codebook": b * 4 * 64 * 64 * 4, "encodec:RVQ": b * 8 * 75 * 2, "encodec:latent": b * 128 * 75 * 4}
    for prefix, nbytes in expected_input.items():
        (row,) = [r for k, r in rows.items() if k.startswith(prefix)]
        assert row["input_bytes_per_batch"] == nbytes, prefix
        assert row["loader_samples_per_s"] > 0
    trained = [r for r in rows.values() if r["test_accuracy"] is not None]
    assert len(trained) == 4 and all(0.0 <= r["test_accuracy"] <= 1.0 and r["train_step_ms"] > 0 for r in trained)
    enc = next(r for k, r in rows.items() if k.startswith("encodec"))
    vq = next(r for k, r in rows.items() if k.startswith("vq"))
    mel = next(r for k, r in rows.items() if k.startswith("mel"))
    assert enc["payload_bytes_per_sample"] == 4 + 8 * 75 * 10 // 8  # 8 levels x 75 frames x 10 bits + header
    assert vq["payload_bytes_per_sample"] < 64 * 64 // 2 + 64  # 4-bit codes, zstd on top
    assert mel["payload_bytes_per_sample"] > 10 * vq["payload_bytes_per_sample"]
    assert all(r["pcm16_bytes_per_sample"] == 32000 for r in rows.values())
    table = format_audio_table(list(rows.values()), b)
    assert table.count("\n") == len(rows) + 1 and "| 1.0x |" in table


def test_audio_demo_needs_train_and_test(tmp_path: Path) -> None:
    (tmp_path / "train" / "yes").mkdir(parents=True)
    with pytest.raises(LossyloadError, match="train/ and test/"):
        run_audio_demo(AudioDemoConfig(data=str(tmp_path), out=str(tmp_path / "run")))


@pytest.mark.parametrize("model, x", [
    (GridNet(1, 8, stem_stride=2), torch.randn(3, 128, 128)),
    (GridNet(4, 8), torch.randint(-1, 2, (3, 4, 64, 64), dtype=torch.int8)),
    (LatentNet1d(128, 8), torch.randn(3, 128, 75)),
])
def test_audio_models_give_logits_per_sample(model: torch.nn.Module, x: torch.Tensor) -> None:
    assert model(x).shape == (3, 8)
