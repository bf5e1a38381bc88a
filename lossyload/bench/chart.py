"""PNG charts of the trainer's and the benchmarks' results, drawn with matplotlib (the ``lab`` extra).

Each figure is built with matplotlib's object API on an Agg canvas attached explicitly: no pyplot, no
``matplotlib.use``, no change to ``rcParams``, so drawing a chart leaves the caller's matplotlib state as it
was. matplotlib is imported inside the functions that draw; importing this module needs only the core.

:func:`bar_chart` draws one horizontal bar per row (a dict with a label, ``"representation"``, a value,
``"ratio"`` by default, and optionally a group), each bar labelled with its value, on a log axis when the values
span more than :data:`LOG_SPAN`, with a reference line (1.0 by default). :func:`line_chart` draws x/y series
(accuracy per epoch, accuracy against bytes, the scaling curve), each optionally with its spread over seeds: a
shaded band along a curve, an error bar at a single point. The limits come from pure functions of the data
(:func:`fitted_limits`, :func:`percent_limits`, :func:`epoch_limits`, :func:`epoch_ticks`, :func:`bar_limits`,
:func:`use_log`); :func:`bar_figure` and :func:`line_figure` return the figure unsaved, for tests.
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Iterable

from ..errors import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
REF = "#B00020"  # the reference line
BAND_ALPHA = 0.22  # opacity of a series' band
LOG_SPAN = 5.0  # an axis is logarithmic when max/min exceeds this
DPI = 100
LINE_SIZE = (10.0, 5.2)  # inches: 1000 x 520 pixels
BAR_WIDTH = 10.0  # inches; the height grows with the rows (bar_height)
LABEL_WIDTH = 24  # characters per line of a row or series name
LABEL_LINES = 2  # lines of a name before it is cut with an ellipsis
TITLE_WIDTH = 80
DODGE = 7.0  # points (1/72 inch) between single points that share an x, spread apart so all show


def fmt(v: float, tick: bool = False) -> str:
    """A short number: ``22.6``, ``1.0``, ``0.25``, ``340``, ``12k``; ``tick``: ``2``, ``2.5k``."""
    a = abs(v)
    if tick and a >= 1000:
        return f"{v / 1e3:g}k"
    text = (f"{v / 1e3:.0f}k" if a >= 1e4 else f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 1 or a == 0
            else f"{v:.2g}")
    return text.removesuffix(".0") if tick else text


def wrap(text: str, width: int = LABEL_WIDTH, lines: int = LABEL_LINES) -> str:
    """``text`` wrapped to ``width`` characters a line, at most ``lines`` lines (the last cut with ``…``)."""
    parts = textwrap.wrap(str(text), width) or [""]
    if len(parts) > lines:
        parts = parts[: lines - 1] + [textwrap.shorten(" ".join(parts[lines - 1:]), width, placeholder=" …")]
        if parts[-1] == "…" or len(parts[-1]) > width:  # one word longer than the line
            parts[-1] = parts[-1][: width - 1] + "…"
    return "\n".join(parts)


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def use_log(values: Iterable[float], span: float = LOG_SPAN) -> bool:
    """Whether ``values`` (all positive) span more than ``span`` times, so a log axis reads better."""
    vals = _finite(values)
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > span


def fitted_limits(values: Iterable[float], *, margin: float = 0.06, min_pad: float = 0.0, log: bool = False,
                  floor: float | None = None, ceil: float | None = None) -> tuple[float, float]:
    """``(lo, hi)``: the data's range widened by ``margin`` of its span on each side (at least ``min_pad``;
    on a ``log`` axis the span and the pad are in decades), then clipped to ``[floor, ceil]``."""
    vals = _finite(values)
    if not vals:
        raise ValueError("no finite values to fit an axis to")
    if log:
        if min(vals) <= 0:
            raise ValueError(f"a log axis needs positive values, got {min(vals)}")
        lo, hi = math.log10(min(vals)), math.log10(max(vals))
        pad = margin * (hi - lo) if hi > lo else 0.1
        lo, hi = 10 ** (lo - pad), 10 ** (hi + pad)
    else:
        lo, hi = min(vals), max(vals)
        pad = max(margin * (hi - lo), min_pad) or (abs(hi) * margin or 1.0)
        lo, hi = lo - pad, hi + pad
    return (lo if floor is None else max(lo, floor)), (hi if ceil is None else min(hi, ceil))


def percent_limits(values: Iterable[float]) -> tuple[float, float]:
    """The limits of an accuracy axis in %: the data with a margin (at least 1 point), never beyond 0-100."""
    return fitted_limits(values, margin=0.06, min_pad=1.0, floor=0.0, ceil=100.0)


def epoch_limits(epochs: Iterable[float]) -> tuple[float, float]:
    """An epoch axis from the first epoch to the last one drawn (half an epoch either side of a single one)."""
    vals = _finite(epochs)
    if not vals:
        raise ValueError("no epochs to fit an axis to")
    lo, hi = min(vals), max(vals)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def epoch_ticks(lo: float, hi: float, most: int = 10) -> list[int]:
    """Whole epochs to label on an axis from ``lo`` to ``hi``: both ends, and the multiples of the smallest
    step of 1, 2 or 5 x 10^k that keeps them to about ``most``, less any within half a step of an end."""
    first, last = math.ceil(lo), math.floor(hi)
    if last < first:
        return []
    step = next(m * 10**k for k in range(12) for m in (1, 2, 5) if (last - first) / (m * 10**k) <= most)
    inner = [t for t in range(first + 1, last) if t % step == 0 and min(t - first, last - t) >= step / 2]
    return sorted({first, last, *inner})


def dodge(xs: list[float | None], step: float = DODGE) -> list[float]:
    """Horizontal offsets in points for single points at ``xs`` (None: a curve, never moved): points sharing
    an x spread ``step`` apart around it, in order, so their markers and error bars do not hide each other."""
    same: dict[float, list[int]] = {}
    for i, x in enumerate(xs):
        if x is not None:
            same.setdefault(x, []).append(i)
    out = [0.0] * len(xs)
    for idx in same.values():
        for k, i in enumerate(idx):
            out[i] = (k - (len(idx) - 1) / 2) * step
    return out


def bar_limits(values: Iterable[float], log: bool) -> tuple[float, float]:
    """A bar axis: from 0 (linear) or below the smallest bar (log) to room for the value printed past the longest."""
    vals = _finite(values)
    if not vals:
        raise ValueError("no finite values to fit an axis to")
    if log:
        lo, hi = math.log10(min(vals)), math.log10(max(vals))
        return 10 ** (lo - 0.1 * (hi - lo) - 0.05), 10 ** (hi + 0.18 * (hi - lo) + 0.05)
    lo, hi = min(min(vals), 0.0), max(max(vals), 0.0)
    if hi == lo:
        return 0.0, 1.0
    return lo - (0.12 * (hi - lo) if lo < 0 else 0.0), hi + 0.15 * (hi - lo)


def bar_height(rows: int) -> float:
    """The bar chart's height in inches for ``rows`` bars."""
    return 1.4 + 0.42 * rows


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    """A figure on its own Agg canvas (matplotlib imported here, not with the module), and its one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_axisbelow(True)
    return fig, ax


def _ticks(ax: Axes, axis: str, log: bool, suffix: str = "") -> None:
    """Round, short tick labels (``2``, ``500``, ``2.5k``) on ``axis`` (``"x"`` or ``"y"``, its limits set); on a
    log axis at 1, 2, 3, 5 x 10^k, fewer as the decades grow."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    if log:
        lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
        decades = math.log10(hi / lo)
        subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
        a.set_major_locator(LogLocator(base=10, subs=subs))
        a.set_minor_formatter(NullFormatter())
    a.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, tick=True) + suffix))


def _scale_label(text: str, log: bool) -> str:
    """``text`` saying its axis is logarithmic: ``bytes (log scale)``, ``memory (MiB, log scale)``."""
    if not log or "log scale" in text:
        return text
    return f"{text[:-1]}, log scale)" if text.endswith(")") else f"{text} (log scale)"


def save(fig: Figure, path: str) -> None:
    """Write ``fig`` as a PNG of exactly its size at :data:`DPI`."""
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")


def bar_figure(rows: list[dict], title: str, value: str = "ratio", label: str = "representation",
               group: str | None = None, reference: float | None = 1.0,
               reference_label: str = "conventional pipeline", suffix: str = "x", *,
               xlabel: str | None = None) -> Figure:
    """The figure :func:`bar_chart` writes."""
    rows = [r for r in rows if r.get(value) is not None]
    if not rows:
        raise ValueError(f"no rows with a {value!r} value")
    require("matplotlib", "lab")
    from matplotlib.patches import Patch

    values = [float(r[value]) for r in rows]
    groups = list(dict.fromkeys(str(r.get(group, "")) for r in rows)) if group else [""]
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    fig, ax = _figure((BAR_WIDTH, bar_height(len(rows))))
    log = use_log(values + ([reference] if reference is not None else []))
    ys = list(range(len(rows)))
    ax.barh(ys, values, height=0.7, color=[colours[str(r.get(group, "")) if group else ""] for r in rows])
    ax.set_yticks(ys, [wrap(r[label], 32) for r in rows])
    ax.invert_yaxis()  # the first row on top
    if log:
        ax.set_xscale("log")
    ax.set_xlim(*bar_limits(values + ([reference] if reference is not None else []), log))
    _ticks(ax, "x", log, suffix)
    ax.grid(axis="x", color="#DDDDDD")
    for y, v in zip(ys, values):
        ax.annotate(fmt(v) + suffix, (v, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
    handles = [Patch(color=colours[g], label=wrap(g or "?")) for g in groups] if group else []
    if reference is not None:
        handles.append(ax.axvline(reference, color=REF, linewidth=2,
                                  label=wrap(f"{reference_label} ({fmt(reference, tick=True)}{suffix})", 40)))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.set_xlabel(_scale_label(xlabel or value, log))
    ax.set_title(wrap(title, TITLE_WIDTH, 2), loc="left")
    return fig


def bar_chart(rows: list[dict], path: str, title: str, value: str = "ratio", label: str = "representation",
              group: str | None = None, reference: float | None = 1.0,
              reference_label: str = "conventional pipeline", suffix: str = "x", *, xlabel: str | None = None) -> None:
    """Horizontal bars of ``row[value]`` labelled ``row[label]``, coloured by ``row[group]``, written to ``path``;
    ``xlabel``: the value axis' label with its unit (default: ``value``)."""
    save(bar_figure(rows, title, value, label, group, reference, reference_label, suffix, xlabel=xlabel), path)


def line_figure(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str, *,
                logx: bool = False, logy: bool = False, yzero: bool = False, percent: bool = False,
                epochs: bool = False, bands: dict[str, list[tuple[float, float, float]]] | None = None,
                band_label: str = "band: min to max over seeds", dashed: Iterable[str] = (),
                dashed_label: str = "dashed: an ablation") -> Figure:
    """The figure :func:`line_chart` writes."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError("no points to draw")
    require("matplotlib", "lab")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import offset_copy

    bands, dashed = bands or {}, set(dashed)
    fig, ax = _figure(LINE_SIZE)
    xs = [x for x, _ in pts]
    ys = [y for _, y in pts] + [v for b in bands.values() for _, lo, hi in b for v in (lo, hi)]
    shifts = dodge([s[0][0] if len(s) == 1 else None for s in series.values()])
    for i, (name, s) in enumerate(series.items()):
        colour, s = PALETTE[i % len(PALETTE)], sorted(s)
        point = len(s) == 1  # hollow, so that points at the same place all show
        at = offset_copy(ax.transData, fig=fig, x=shifts[i], y=0.0, units="points")
        ax.plot([x for x, _ in s], [y for _, y in s], color=colour, marker=MARKERS[i % len(MARKERS)],
                markersize=10 if point else 6, markerfacecolor="none" if point else colour,
                markeredgewidth=2 if point else 1, linewidth=2,
                linestyle="none" if point else "--" if name in dashed else "-",
                label=wrap(name), clip_on=False, zorder=3, transform=at)
        band = sorted(bands.get(name) or [])
        if len(band) > 1:
            ax.fill_between([x for x, _, _ in band], [lo for _, lo, _ in band], [hi for _, _, hi in band],
                            color=colour, alpha=BAND_ALPHA, linewidth=0, zorder=2)
        elif band:
            (x, lo, hi), = band
            ax.errorbar([x], [(lo + hi) / 2], yerr=[[(hi - lo) / 2], [(hi - lo) / 2]], color=colour, capsize=5,
                        linewidth=1.5, fmt="none", zorder=2, clip_on=False, transform=at)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlim(*(epoch_limits(xs) if epochs else fitted_limits(xs, log=logx)))
    ax.set_ylim(*(percent_limits(ys) if percent else
                  fitted_limits(ys + ([0.0] if yzero else []), log=logy, floor=0.0 if yzero else None)))
    if epochs:
        ax.set_xticks(epoch_ticks(*ax.get_xlim()))
    else:
        _ticks(ax, "x", logx)
    _ticks(ax, "y", logy)
    ax.grid(color="#E4E4E4")
    handles, _ = ax.get_legend_handles_labels()
    if any(len(b) > 1 for b in bands.values()):
        handles.append(Patch(color="#777777", alpha=0.35, label=wrap(band_label)))
    elif bands:
        handles.append(Line2D([], [], color="#777777", marker="|", markersize=12, markeredgewidth=1.5,
                              linestyle="none", label=wrap(band_label)))  # stands for the error bars
    if dashed & set(series):
        handles.append(Line2D([], [], color="#777777", linestyle="--", linewidth=2, label=wrap(dashed_label)))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.set_xlabel(_scale_label(xlabel, logx))
    ax.set_ylabel(_scale_label(ylabel, logy))
    ax.set_title(wrap(title, TITLE_WIDTH, 2), loc="left")
    return fig


def line_chart(series: dict[str, list[tuple[float, float]]], path: str, title: str, xlabel: str, ylabel: str, *,
               logx: bool = False, logy: bool = False, yzero: bool = False, percent: bool = False,
               epochs: bool = False, bands: dict[str, list[tuple[float, float, float]]] | None = None,
               band_label: str = "band: min to max over seeds", dashed: Iterable[str] = (),
               dashed_label: str = "dashed: an ablation") -> None:
    """Each series as markers joined by lines, with a legend beside the plot, written to ``path``.

    ``bands``: per series name, ``(x, low, high)`` points: a band shaded in its colour behind the line, or an
    error bar at a single point; ``band_label`` says what the band spans, in the legend. ``percent``: the y
    values are percentages, fitted with :func:`percent_limits`; ``epochs``: the x values are epochs, the axis
    :func:`epoch_limits` with whole-number ticks; ``yzero``: the y axis reaches down to 0; ``logx``/``logy``: log
    axes; ``dashed``: series drawn dashed, which ``dashed_label`` explains in the legend."""
    save(line_figure(series, title, xlabel, ylabel, logx=logx, logy=logy, yzero=yzero, percent=percent,
                     epochs=epochs, bands=bands, band_label=band_label, dashed=dashed, dashed_label=dashed_label),
         path)
