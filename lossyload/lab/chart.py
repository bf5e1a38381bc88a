"""PNG charts of the trainer's and the benchmarks' results, drawn with Pillow (no plotting library needed).

:func:`bar_chart` draws one horizontal bar per row (a dict with a label, ``"representation"``, a value,
``"ratio"`` by default, and optionally a group), on a log axis when the values span more than 20x, with a
reference line at 1.0; :func:`line_chart` draws x/y series (the scaling curve, accuracy per epoch), each
optionally with a shaded band (the spread over seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageDraw, ImageFont

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
INK, GRID, REF = "#222222", "#DDDDDD", "#B00020"
BAND_ALPHA = 56  # opacity (of 255) of a series' band
LOG_SPAN = 20.0  # a value axis is logarithmic when max/min exceeds this
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def font(size: int) -> Font:
    """Pillow's bundled font at ``size`` pixels (Pillow >= 10.1); the fixed-size bitmap font before that."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def fmt(v: float, tick: bool = False) -> str:
    """A short number: ``22.6``, ``1.0``, ``0.25``, ``340``, ``12k``; ``tick``: ``2``, ``2.5k``."""
    a = abs(v)
    if tick and a >= 1000:
        return f"{v / 1e3:g}k"
    text = (f"{v / 1e3:.0f}k" if a >= 1e4 else f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 1 or a == 0
            else f"{v:.2g}")
    return text.removesuffix(".0") if tick else text


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering ``[lo, hi]``."""
    raw = (hi - lo) / max(n, 1) or 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [round(first + i * step, 10) for i in range(int(math.ceil((hi - first) / step)) + 1)]


@dataclass(frozen=True)
class Axis:
    """A value axis mapping ``[lo, hi]`` (log10 if ``log``) onto pixels ``[p0, p1]``."""

    lo: float
    hi: float
    p0: int
    p1: int
    log: bool = False

    @classmethod
    def fit(cls, values: list[float], p0: int, p1: int, include: float | None = None, zero: bool = True) -> Axis:
        vals = [v for v in values if math.isfinite(v)] + ([include] if include is not None else [])
        lo, hi = min(vals), max(vals)
        if lo > 0 and hi / lo > LOG_SPAN:
            return cls(log_round(lo / 1.5, up=False), log_round(hi * 1.3, up=True), p0, p1, log=True)
        lo = min(lo, 0.0) if zero else lo
        ticks = nice_ticks(lo, hi * 1.05 if hi > 0 else hi + 1)
        return cls(ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1, p0, p1)

    def __call__(self, v: float) -> int:
        f = (lambda x: math.log10(max(x, 1e-300))) if self.log else (lambda x: x)
        return round(self.p0 + (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo)) * (self.p1 - self.p0))

    def ticks(self) -> list[float]:
        if not self.log:
            return [t for t in nice_ticks(self.lo, self.hi) if self.lo <= t <= self.hi]
        decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
        mults = (1, 2, 5) if self.hi / self.lo <= 1000 else (1,)
        return [t for d in decades for m in mults if self.lo <= (t := m * 10.0 ** d) <= self.hi * (1 + 1e-9)]


def log_round(v: float, up: bool) -> float:
    """The nearest 1, 2 or 5 x 10^k at or above (``up``) or below ``v``."""
    d = math.floor(math.log10(v))
    cands = [m * 10.0 ** k for k in (d - 1, d, d + 1) for m in (1, 2, 5)]
    return min(c for c in cands if c >= v * (1 - 1e-9)) if up else max(c for c in cands if c <= v * (1 + 1e-9))


def text_width(draw: ImageDraw.ImageDraw, text: str, f: Font) -> int:
    return int(math.ceil(draw.textlength(text, font=f)))


def legend(draw: ImageDraw.ImageDraw, items: list[tuple[str, str]], x: int, y: int, f: Font) -> None:
    """Colour swatches and names in one row from ``(x, y)``."""
    for name, colour in items:
        draw.rectangle([x, y + 3, x + 14, y + 17], fill=colour)
        draw.text((x + 20, y), name, fill=INK, font=f)
        x += 20 + text_width(draw, name, f) + 24


def legend_rows(draw: ImageDraw.ImageDraw, items: list[tuple[str, str]], width: int,
                f: Font) -> list[list[tuple[str, str]]]:
    """``items`` split into legend rows no wider than ``width`` pixels (as :func:`legend` lays them out)."""
    rows: list[list[tuple[str, str]]] = [[]]
    x = 0
    for name, colour in items:
        w = 20 + text_width(draw, name, f) + 24
        if rows[-1] and x + w > width:
            rows.append([])
            x = 0
        rows[-1].append((name, colour))
        x += w
    return rows


def shade(img: Image.Image, xy: list[tuple[int, int]], colour: str) -> Image.Image:
    """``img`` with the polygon ``xy`` (a rectangle around one point when it has two) laid over it translucently."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    fill = ImageColor.getrgb(colour)[:3] + (BAND_ALPHA,)
    if len(xy) > 2:
        draw.polygon(xy, fill=fill)
    else:
        (x, y0), (_, y1) = xy
        draw.rectangle([x - 5, min(y0, y1), x + 5, max(y0, y1)], fill=fill)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def bar_chart(rows: list[dict], path: str, title: str, value: str = "ratio", label: str = "representation",
              group: str | None = None, reference: float | None = 1.0,
              reference_label: str = "conventional pipeline", suffix: str = "x") -> None:
    """Horizontal bars of ``row[value]`` labelled ``row[label]``, coloured by ``row[group]``, written to ``path``."""
    rows = [r for r in rows if r.get(value) is not None]
    if not rows:
        raise ValueError(f"no rows with a {value!r} value")
    f, fb = font(15), font(20)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    groups = list(dict.fromkeys(str(r.get(group, "")) for r in rows)) if group else [""]
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    left = 20 + max(text_width(probe, str(r[label]), f) for r in rows) + 12
    plot_w, bar_h, top = 640, 26, 80
    width, height = left + plot_w + 90, top + len(rows) * (bar_h + 8) + 80 + (30 if group else 0)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    values = [float(r[value]) for r in rows]
    axis = Axis.fit(values, left, left + plot_w, include=reference)
    bottom = top + len(rows) * (bar_h + 8)
    draw.text((20, 20), title, fill=INK, font=fb)
    for t in axis.ticks():
        x = axis(t)
        draw.line([x, top - 6, x, bottom], fill=GRID)
        draw.text((x, bottom + 6), fmt(t, tick=True) + suffix, fill=INK, font=f, anchor="ma")
    for i, (r, v) in enumerate(zip(rows, values)):
        y = top + i * (bar_h + 8)
        draw.text((left - 12, y + bar_h // 2), str(r[label]), fill=INK, font=f, anchor="rm")
        x1 = max(axis(v), axis.p0 + 1)
        draw.rectangle([axis.p0, y, x1, y + bar_h], fill=colours[str(r.get(group, "")) if group else ""])
        draw.text((x1 + 6, y + bar_h // 2), fmt(v) + suffix, fill=INK, font=f, anchor="lm")
    draw.line([axis.p0, top - 6, axis.p0, bottom], fill=INK)
    if reference is not None:
        x = axis(reference)
        draw.line([x, top - 10, x, bottom], fill=REF, width=2)
        draw.text((x + 4, top - 12), reference_label, fill=REF, font=f, anchor="lb")
    caption = f"{value}{' (log scale)' if axis.log else ''}"
    draw.text((axis.p0 + plot_w // 2, bottom + 30), caption, fill=INK, font=f, anchor="ma")
    if group:
        legend(draw, [(g or "?", colours[g]) for g in groups], left, bottom + 56, f)
    img.save(path)


def line_chart(series: dict[str, list[tuple[float, float]]], path: str, title: str, xlabel: str, ylabel: str,
               logx: bool = False, bands: dict[str, list[tuple[float, float, float]]] | None = None,
               ylinear: bool = False) -> None:
    """Each series as markers joined by lines, with a legend (wrapped into rows), to ``path``. ``bands``: per
    series name, ``(x, low, high)`` points shaded in its colour behind the line; ``ylinear``: a linear y axis
    from 0 (for values >= 0) even when they span more than ``LOG_SPAN``."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError("no points to draw")
    bands = bands or {}
    f, fb = font(15), font(20)
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(series)}
    left, plot_w, plot_h = 90, 640, 360
    keys = legend_rows(ImageDraw.Draw(Image.new("RGB", (1, 1))), list(colours.items()), plot_w, f)
    top = 66 + 24 * len(keys)
    img = Image.new("RGB", (left + plot_w + 40, top + plot_h + 70), "white")
    draw = ImageDraw.Draw(img)
    xs = [p[0] for p in pts]
    xaxis = Axis.fit(xs, left, left + plot_w, zero=False) if logx else Axis.fit(xs, left, left + plot_w)
    if logx and not xaxis.log and min(xs) > 0:
        xaxis = Axis(min(xs) / 1.2, max(xs) * 1.2, left, left + plot_w, log=True)
    ys = [p[1] for p in pts] + [v for b in bands.values() for _, lo, hi in b for v in (lo, hi)]
    yaxis = Axis.fit(ys, top + plot_h, top, include=0.0 if ylinear and min(ys) >= 0 else None)
    draw.text((20, 20), title, fill=INK, font=fb)
    for i, row in enumerate(keys):
        legend(draw, row, left, 54 + 24 * i, f)
    for t in yaxis.ticks():
        draw.line([left, yaxis(t), left + plot_w, yaxis(t)], fill=GRID)
        draw.text((left - 8, yaxis(t)), fmt(t, tick=True), fill=INK, font=f, anchor="rm")
    data = sorted(set(xs))
    spaced = all(b / a >= 1.5 for a, b in zip(data, data[1:]))
    xt = data if xaxis.log and spaced and len(data) <= 8 else xaxis.ticks()  # the measured sizes, when legible
    for t in xt:
        draw.text((xaxis(t), top + plot_h + 6), fmt(t, tick=xt is not data), fill=INK, font=f, anchor="ma")
    for name, band in bands.items():
        band = sorted(band)
        upper = [(xaxis(x), yaxis(hi)) for x, _, hi in band]
        img = shade(img, upper + [(xaxis(x), yaxis(lo)) for x, lo, _ in reversed(band)], colours.get(name, INK))
    draw = ImageDraw.Draw(img)
    draw.line([left, top, left, top + plot_h, left + plot_w, top + plot_h], fill=INK)
    for name, s in series.items():
        c, xy = colours[name], [(xaxis(x), yaxis(y)) for x, y in sorted(s)]
        if len(xy) > 1:
            draw.line(xy, fill=c, width=3, joint="curve")
        for x, y in xy:
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=c)
    draw.text((left + plot_w // 2, top + plot_h + 32), xlabel, fill=INK, font=f, anchor="ma")
    draw_vertical(img, ylabel, (22, top + plot_h // 2), f)
    img.save(path)


def draw_vertical(img: Image.Image, text: str, centre: tuple[int, int], f: Font) -> None:
    """Paste ``text`` rotated 90 degrees counter-clockwise, centred on ``centre``."""
    w = text_width(ImageDraw.Draw(img), text, f) + 4
    label = Image.new("RGB", (w, 22), "white")
    ImageDraw.Draw(label).text((2, 2), text, fill=INK, font=f)
    label = label.rotate(90, expand=True)
    img.paste(label, (centre[0] - label.width // 2, max(0, centre[1] - label.height // 2)))
