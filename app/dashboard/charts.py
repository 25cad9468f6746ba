"""Server-side SVG charts: geometry computed here, drawn by templates/_chart.html (no JavaScript, no CDN)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_CEILING, Decimal
from typing import Callable

WIDTH, HEIGHT = Decimal(760), Decimal(220)
LEFT, BOTTOM, TOP = Decimal(64), Decimal(24), Decimal(8)
TENTH = Decimal("0.1")


@dataclass
class Bar:
    x: str
    y: str
    width: str
    height: str
    series: str
    title: str


@dataclass
class Tick:
    y: str
    label: str


@dataclass
class StackedChart:
    width: int = int(WIDTH)
    height: int = int(HEIGHT)
    bars: list[Bar] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    labels: list[tuple[str, str]] = field(default_factory=list)  # (x, text) under the axis
    series: list[str] = field(default_factory=list)
    empty: bool = True
    plot_left: int = int(LEFT)
    plot_bottom: str = str(HEIGHT - BOTTOM)


def _nice_ceiling(value: Decimal) -> Decimal:
    """The next 1/2/5 × 10^n at or above value, so gridlines land on round numbers."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (1, 2, 5, 10):
        candidate = Decimal(step).scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)


def _fmt(value: Decimal) -> str:
    return str(value.quantize(TENTH))


def stacked_bars(days: list[date], series: dict[str, list[Decimal]],
                 label: Callable[[Decimal], str]) -> StackedChart:
    """Bars per day, one segment per series stacked bottom-up; `label` formats values for axis and tooltips."""
    chart = StackedChart(series=list(series))
    if not days:
        return chart
    totals = [sum((series[name][i] for name in series), Decimal(0)) for i in range(len(days))]
    peak = max(totals)
    chart.empty = peak <= 0
    top = _nice_ceiling(peak)
    plot_h = HEIGHT - BOTTOM - TOP
    plot_w = WIDTH - LEFT - Decimal(8)
    slot = plot_w / len(days)
    bar_w = max(Decimal(1), slot * Decimal("0.72"))
    base_y = HEIGHT - BOTTOM
    for i in range(5):
        value = top * i / 4
        chart.ticks.append(Tick(y=_fmt(base_y - plot_h * i / 4), label=label(value)))
    every = max(1, len(days) // 8)
    for i, day in enumerate(days):
        x = LEFT + slot * i + (slot - bar_w) / 2
        if i % every == 0:
            chart.labels.append((_fmt(x + bar_w / 2), day.strftime("%b %d")))
        stacked = Decimal(0)
        for name in series:
            value = series[name][i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y = base_y - plot_h * stacked / top - h
            stacked += value
            chart.bars.append(Bar(x=_fmt(x), y=_fmt(y), width=_fmt(bar_w), height=_fmt(max(h, TENTH)),
                                  series=name, title=f"{day.isoformat()} · {name}: {label(value)}"))
    return chart


def axis_label_for(metric: str) -> Callable[[Decimal], str]:
    from app.dashboard.formatting import compact, usd

    if metric == "spend":
        return lambda v: usd(v) if v >= Decimal("0.01") or v == 0 else usd(v, precise=True)
    return lambda v: compact(int(v.to_integral_value(rounding=ROUND_CEILING)))
