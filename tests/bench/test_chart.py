"""lossyload.bench.chart: matplotlib charts whose axes come from the data (accuracy in % within 0-100, the epoch
axis ending at the last epoch, log axes for wide spans), with the spread over seeds drawn and named, written
as PNGs of a known size, without pyplot or a change to matplotlib's global state."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from PIL import Image

from lossyload.bench import chart

ROWS = [
    {"representation": "rgb · PIL/torchvision", "ratio": 0.46, "group": "image"},
    {"representation": "jpeg-dct · pre-extracted zstd, 16+2x8", "ratio": 12.5, "group": "image"},
    {"representation": "vae · int8 latents", "ratio": 39.7, "group": "latent"},
    {"representation": "audio · codes", "ratio": 57.4, "group": "audio"},
]
CURVES = {"mel": [(e, v) for e, v in enumerate([37.0, 64.0, 78.0, 86.0, 92.0, 97.4], 1)],
          "vq-bnn": [(e, v) for e, v in enumerate([20.0, 33.0, 46.0, 57.0, 64.0, 79.8], 1)],
          "vq-bnn-no-teacher": [(e, v) for e, v in enumerate([15.0, 31.0, 43.0, 55.0, 63.5, 76.1], 1)]}
BANDS = {"mel": [(e, v - 1.0, v + 2.0) for e, v in CURVES["mel"]],
         "vq-bnn": [(e, v - 3.0, v + 0.5) for e, v in CURVES["vq-bnn"]]}


def legend_texts(ax) -> list[str]:
    return [t.get_text().replace("\n", " ") for t in ax.get_legend().get_texts()]  # names wrap


def test_percent_limits_fit_the_data_with_a_margin_within_0_to_100() -> None:
    lo, hi = chart.percent_limits([72.4, 97.7])
    assert lo == pytest.approx(72.4 - 0.06 * 25.3) and hi == pytest.approx(97.7 + 0.06 * 25.3)
    assert chart.percent_limits([10.0, 99.5])[1] == 100.0  # the margin stops at 100
    assert chart.percent_limits([0.5, 40.0])[0] == 0.0  # and at 0
    assert chart.percent_limits([88.0, 88.2]) == pytest.approx((87.0, 89.2))  # at least 1 point each side
    assert chart.percent_limits([float("nan"), 50.0, None]) == pytest.approx((49.0, 51.0))
    with pytest.raises(ValueError):
        chart.percent_limits([])


@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30))
def test_percent_limits_hold_every_value_and_stay_within_0_to_100(values: list[float]) -> None:
    lo, hi = chart.percent_limits(values)
    assert 0.0 <= lo <= min(values) and max(values) <= hi <= 100.0 and hi - lo >= 1.0


def test_fitted_limits_linear_log_and_clipped() -> None:
    assert chart.fitted_limits([10.0, 20.0]) == pytest.approx((9.4, 20.6))
    lo, hi = chart.fitted_limits([10.0, 1000.0], log=True)  # the margin in decades
    assert math.log10(lo) == pytest.approx(1 - 0.12) and math.log10(hi) == pytest.approx(3 + 0.12)
    assert chart.fitted_limits([0.0, 5.0], floor=0.0)[0] == 0.0
    with pytest.raises(ValueError, match="positive"):
        chart.fitted_limits([0.0, 5.0], log=True)


def test_the_epoch_axis_runs_from_the_first_to_the_last_epoch() -> None:
    assert chart.epoch_limits(range(1, 16)) == (1, 15)
    assert chart.epoch_limits([4]) == (3.5, 4.5)
    assert chart.epoch_ticks(1, 15) == [1, 2, 4, 6, 8, 10, 12, 14, 15]
    assert chart.epoch_ticks(1, 12) == [1, 2, 4, 6, 8, 10, 12]
    assert chart.epoch_ticks(1, 7) == list(range(1, 8))
    assert chart.epoch_ticks(1, 48) == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 48]
    assert chart.epoch_ticks(3.5, 4.5) == [4]


def test_log_axes_for_wide_spans_only() -> None:
    assert chart.use_log([707, 10322, 14894])  # speech loader rates: 21x
    assert chart.use_log([612, 4404])  # 7.2x
    assert not chart.use_log([19.95, 78.55])  # 3.9x
    assert not chart.use_log([0.0, 100.0]) and not chart.use_log([])
    assert chart.bar_limits([0.8, 3.0], log=False) == pytest.approx((0.0, 3.45))
    lo, hi = chart.bar_limits([0.46, 57.4], log=True)
    assert lo < 0.46 and hi > 57.4 * 1.5  # room for the value printed past the longest bar


def test_names_are_wrapped_and_cut_and_points_at_one_x_dodged() -> None:
    assert chart.wrap("vq-bnn-no-teacher") == "vq-bnn-no-teacher"
    two = chart.wrap("jpeg-dct · pre-extracted zstd, 16+2x8")
    assert two.count("\n") == 1 and all(len(line) <= chart.LABEL_WIDTH for line in two.split("\n"))
    cut = chart.wrap("a very long representation name that goes on and on well past two lines of text")
    assert cut.count("\n") == 1 and cut.endswith("…") and all(len(p) <= chart.LABEL_WIDTH for p in cut.split("\n"))
    assert chart.wrap("x" * 60).endswith("…") and len(chart.wrap("x" * 60).split("\n")[-1]) <= chart.LABEL_WIDTH
    d = chart.DODGE
    assert chart.dodge([5.0, 5.0, None, 7.0, 5.0]) == [-d, 0.0, 0.0, 0.0, d]
    assert [chart.fmt(v) for v in (22.64, 1.0, 0.25, 340.2, 12345)] == ["22.6", "1.0", "0.25", "340", "12k"]
    assert [chart.fmt(v, tick=True) for v in (2.0, 0.5, 2500.0, 16000.0)] == ["2", "0.5", "2.5k", "16k"]


def test_accuracy_curves_fit_the_data_end_at_the_last_epoch_and_show_the_seed_bands(tmp_path: Path) -> None:
    fig = chart.line_figure(CURVES, "curves", "epoch", "test accuracy (%)", percent=True, epochs=True,
                            bands=BANDS, band_label="band: min to max over seeds", dashed={"vq-bnn-no-teacher"})
    ax = fig.axes[0]
    ys = [y for s in CURVES.values() for _, y in s] + [v for b in BANDS.values() for _, lo, hi in b for v in (lo, hi)]
    assert ax.get_ylim() == pytest.approx(chart.percent_limits(ys)) and ax.get_ylim()[1] <= 100.0
    assert ax.get_xlim() == (1, 6) and list(ax.get_xticks()) == [1, 2, 3, 4, 5, 6]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one per banded series; "vq-bnn-no-teacher" (one seed) has none
    assert tuple(bands[0].get_facecolor()[0][:3]) == pytest.approx(to_rgb(chart.PALETTE[0]))  # mel's colour
    assert bands[0].get_facecolor()[0][3] == pytest.approx(chart.BAND_ALPHA)  # translucent, behind the line
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "-", "--"]
    assert legend_texts(ax) == ["mel", "vq-bnn", "vq-bnn-no-teacher", "band: min to max over seeds",
                                "dashed: an ablation"]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "test accuracy (%)" and ax.get_xscale() == "linear"
    out = tmp_path / "curves.png"
    chart.line_chart(CURVES, str(out), "curves", "epoch", "test accuracy (%)", percent=True, epochs=True, bands=BANDS)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (round(chart.LINE_SIZE[0] * chart.DPI),
                                                    round(chart.LINE_SIZE[1] * chart.DPI))


def test_points_with_seed_bars_on_a_log_axis() -> None:
    points = {"mel": [(22326.0, 97.4)], "vq-bnn": [(3083.0, 79.8)], "vq-cnn": [(3083.0, 97.7)]}
    fig = chart.line_figure(points, "accuracy vs bytes", "stored bytes per sample", "test accuracy (%)",
                            logx=True, percent=True, bands={"mel": [(22326.0, 96.9, 97.9)]},
                            band_label="bar: min to max over seeds")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "stored bytes per sample (log scale)"
    lo, hi = ax.get_xlim()
    assert lo < 3083.0 and hi > 22326.0 and hi / lo < 22326.0 / 3083.0 * 2
    assert ax.get_ylim() == pytest.approx(chart.percent_limits([97.4, 79.8, 97.7, 96.9, 97.9]))
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # a single point: an error bar
    bars = [c for c in ax.collections if c.get_segments()]
    assert [tuple(map(tuple, s)) for c in bars for s in c.get_segments()] == [((22326.0, 96.9), (22326.0, 97.9))]
    points_drawn = [line for line in ax.get_lines() if not line.get_label().startswith("_")]  # not the caps
    assert [line.get_markerfacecolor() for line in points_drawn] == ["none"] * 3  # hollow: overlaps show
    assert legend_texts(ax)[-1] == "bar: min to max over seeds"
    assert chart.line_figure(points, "t", "feature memory (MiB)", "%", logx=True).axes[0].get_xlabel() == \
        "feature memory (MiB, log scale)"


def test_bar_chart_log_axis_groups_reference_and_wrapped_names(tmp_path: Path) -> None:
    fig = chart.bar_figure(ROWS, "Loader throughput", group="group", xlabel="samples/s vs the conventional")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim() == pytest.approx(chart.bar_limits([r["ratio"] for r in ROWS]
                                                                                        + [1.0], log=True))
    assert [p.get_width() for p in ax.patches] == [r["ratio"] for r in ROWS]
    colours = [p.get_facecolor()[:3] for p in ax.patches]
    assert colours[0] == colours[1] and len(set(colours)) == 3  # one colour per group
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[1] == "jpeg-dct · pre-extracted zstd,\n16+2x8" and labels[0] == "rgb · PIL/torchvision"
    assert [t.get_text() for t in ax.texts] == ["0.46x", "12.5x", "39.7x", "57.4x"]
    assert legend_texts(ax) == ["image", "latent", "audio", "conventional pipeline (1x)"]
    ref = [line for line in ax.get_lines() if line.get_color() == chart.REF]
    assert len(ref) == 1 and list(ref[0].get_xdata()) == [1.0, 1.0]
    assert ax.get_xlabel() == "samples/s vs the conventional (log scale)"
    out = tmp_path / "bar.png"
    chart.bar_chart(ROWS, str(out), "Loader throughput", group="group")
    with Image.open(out) as img:
        assert img.size == (round(chart.BAR_WIDTH * chart.DPI), round(chart.bar_height(len(ROWS)) * chart.DPI))


def test_bar_chart_linear_without_groups_or_reference() -> None:
    rows = [{"representation": "a", "samples_per_s": 1200.0}, {"representation": "b", "samples_per_s": 3000.0},
            {"representation": "c", "samples_per_s": None}]
    ax = chart.bar_figure(rows, "rate", value="samples_per_s", reference=None, suffix="",
                          xlabel="loader samples/s").axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim() == pytest.approx((0.0, 3450.0))
    assert len(ax.patches) == 2 and ax.get_legend() is None and ax.get_xlabel() == "loader samples/s"
    with pytest.raises(ValueError, match="'ratio'"):
        chart.bar_figure([{"representation": "a"}], "none")
    with pytest.raises(ValueError, match="no points"):
        chart.line_figure({}, "t", "x", "y")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_matplotlib_is_imported_only_to_draw_never_pyplot_and_rcparams_stay(tmp_path: Path) -> None:
    out = run_python(
        "import sys\n"
        "from lossyload.bench import chart\n"
        "before = 'matplotlib' in sys.modules\n"
        "import matplotlib\n"
        "def rc():  # the stored values: rcParams['backend'] would resolve the backend, importing pyplot\n"
        "    return {k: dict.__getitem__(matplotlib.rcParams, k) for k in matplotlib.rcParams}\n"
        "before_rc = rc()\n"
        f"chart.line_chart({{'a': [(1, 50.0), (2, 60.0)]}}, {str(tmp_path / 'a.png')!r}, 't', 'epoch', '%',"
        " percent=True, epochs=True)\n"
        f"chart.bar_chart([{{'representation': 'a', 'ratio': 2.0}}], {str(tmp_path / 'b.png')!r}, 't')\n"
        "same = rc() == before_rc\n"
        "print(before, 'matplotlib.pyplot' in sys.modules, same)")
    assert out == "False False True"


def test_without_matplotlib_a_clear_error_names_the_extra(tmp_path: Path) -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "from lossyload.bench import chart\n"
        "try:\n"
        f"    chart.bar_chart([{{'representation': 'a', 'ratio': 2.0}}], {str(tmp_path / 'b.png')!r}, 't')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n")
    assert out == "MissingDependencyError 'matplotlib' is not installed: pip install 'lossyload[lab]'"
