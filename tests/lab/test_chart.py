"""lossyload.lab.chart: bar and line charts drawn with Pillow, and the CLI over a results JSON."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageColor

from lossyload.lab import chart

ROWS = [
    {"representation": "rgb · PIL/torchvision", "ratio": 1.0, "group": "image"},
    {"representation": "jpeg-dct · coefficients", "ratio": 22.6, "group": "image"},
    {"representation": "vae · int8 latents", "ratio": 140.0, "group": "latent"},
    {"representation": "audio · codes", "ratio": 0.5, "group": "audio"},
]


def colours(path: Path) -> set[tuple[int, int, int]]:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return {c for _, c in img.getcolors(maxcolors=1 << 20)}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(hex_colour)[:3]


def test_bar_chart_log_scale_groups_and_reference(tmp_path: Path) -> None:
    out = tmp_path / "bar.png"
    chart.bar_chart(ROWS, str(out), "Loader throughput", group="group")
    with Image.open(out) as img:
        assert img.width >= 700 and 200 <= img.height <= 600
    seen = colours(out)
    assert {rgb(c) for c in chart.PALETTE[:3]} <= seen  # one colour per group, in order of appearance
    assert rgb(chart.PALETTE[3]) not in seen
    assert rgb(chart.REF) in seen  # the reference line at 1.0
    assert chart.Axis.fit([r["ratio"] for r in ROWS], 0, 100, include=1.0).log


def test_bar_chart_linear_without_groups(tmp_path: Path) -> None:
    out = tmp_path / "bar.png"
    rows = [{"representation": "a", "ratio": 0.8}, {"representation": "b", "ratio": 3.0}]
    chart.bar_chart(rows, str(out), "two rows")
    seen = colours(out)
    assert rgb(chart.PALETTE[0]) in seen and rgb(chart.PALETTE[1]) not in seen
    axis = chart.Axis.fit([0.8, 3.0], 0, 100, include=1.0)
    assert not axis.log and axis.lo == 0 and axis.hi >= 3.0
    assert axis(axis.lo) == 0 and axis(axis.hi) == 100


def test_bar_chart_other_value_and_no_rows(tmp_path: Path) -> None:
    rows = [{"representation": "a", "samples_per_s": 1200.0}, {"representation": "b", "samples_per_s": None}]
    chart.bar_chart(rows, str(tmp_path / "rate.png"), "rate", value="samples_per_s", reference=None, suffix="")
    assert (tmp_path / "rate.png").stat().st_size > 0
    with pytest.raises(ValueError):
        chart.bar_chart([{"representation": "a"}], str(tmp_path / "none.png"), "none")


def test_ticks_and_labels() -> None:
    assert chart.nice_ticks(0, 23) == [0, 5, 10, 15, 20, 25]
    log = chart.Axis.fit([0.5, 150.0], 0, 300)
    assert log.log and log.lo <= 0.5 and log.hi >= 150
    assert {0.5, 1.0, 10.0, 100.0} <= set(log.ticks())
    assert [chart.fmt(v) for v in (22.64, 1.0, 0.25, 340.2, 12345)] == ["22.6", "1.0", "0.25", "340", "12k"]
    assert [chart.fmt(v, tick=True) for v in (2.0, 0.5, 2500.0, 16000.0)] == ["2", "0.5", "2.5k", "16k"]


def test_line_chart(tmp_path: Path) -> None:
    out = tmp_path / "line.png"
    series = {"peak RSS": [(200, 410.0), (400, 412.0), (800, 411.0)], "before": [(200, 390.0), (800, 391.0)]}
    chart.line_chart(series, str(out), "memory", "samples", "MB", logx=True)
    seen = colours(out)
    assert rgb(chart.PALETTE[0]) in seen and rgb(chart.PALETTE[1]) in seen
    with pytest.raises(ValueError):
        chart.line_chart({}, str(tmp_path / "empty.png"), "t", "x", "y")


def tinted(path: Path, colour: str) -> int:
    """How many pixels are ``colour`` laid translucently over white (each channel the same fraction of the way)."""
    c = rgb(colour)
    n = 0
    with Image.open(path) as img:
        for count, px in img.getcolors(maxcolors=1 << 20):
            f = [(255 - p) / (255 - q) for p, q in zip(px, c) if q != 255]
            if f and 0.1 < min(f) and max(f) < 0.5 and max(f) - min(f) < 0.05:
                n += count
    return n


def test_line_chart_bands_are_translucent_in_the_series_colour(tmp_path: Path) -> None:
    series = {"a": [(1, 20.0), (2, 50.0), (3, 70.0)], "b": [(1, 10.0), (2, 30.0), (3, 40.0)]}
    plain, banded = tmp_path / "plain.png", tmp_path / "banded.png"
    chart.line_chart(series, str(plain), "curves", "epoch", "%", ylinear=True)
    chart.line_chart(series, str(banded), "curves", "epoch", "%", ylinear=True,
                     bands={"a": [(1, 10.0, 30.0), (2, 40.0, 60.0), (3, 60.0, 80.0)]})
    assert tinted(banded, chart.PALETTE[0]) > 2000 and tinted(plain, chart.PALETTE[0]) < 50
    assert tinted(banded, chart.PALETTE[1]) < 50  # "b" has no band
    assert rgb(chart.PALETTE[0]) in colours(banded) and rgb(chart.PALETTE[1]) in colours(banded)


def test_line_chart_linear_y_and_a_wrapped_legend(tmp_path: Path) -> None:
    one, many = tmp_path / "one.png", tmp_path / "many.png"
    chart.line_chart({"a": [(1, 2.0), (2, 90.0)]}, str(one), "t", "epoch", "%", ylinear=True)
    chart.line_chart({f"a long series name {i}": [(1, 2.0 + i), (2, 90.0)] for i in range(8)}, str(many), "t",
                     "epoch", "%", ylinear=True)
    with Image.open(one) as a, Image.open(many) as b:
        assert b.height > a.height and b.width == a.width  # the legend wraps into rows, the plot keeps its width
