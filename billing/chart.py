"""The invoice chart: daily import split by TOU period, as one self-contained SVG.

Stacked bars (one per local day of the billing period, one segment per TOU
period with energy that day, bottom-up in the tariff's period order), a legend,
labelled axes and a marker over the day of the peak-demand interval. No script,
no external resources: the same markup works inline in HTML and in the PDF.
Every coordinate is printed with fixed places, so the markup is byte-stable.

Elements carry ``class`` and ``data-*`` attributes (``bar``/``data-day``,
``segment``/``data-period``/``data-kwh``, ``peak-marker``) so tests and tools can
read the chart back without guessing from geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from html import escape
from zoneinfo import ZoneInfo

from billing.invoice_json import decimal_text
from billing.model import DailyUse, PeakDemand

WIDTH = 720
HEIGHT = 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 58.0, 14.0, 54.0, 46.0
_PALETTE = ("#3b6fb6", "#f0a431", "#d2453d", "#5a9f68", "#8a67b8", "#8c8c8c", "#3fa7b5")
# Cheap hours blue, middle amber, expensive red, whatever order the tariff lists them in.
_NAMED_COLORS = {
    "all": _PALETTE[0],
    "off_peak": _PALETTE[0],
    "offpeak": _PALETTE[0],
    "night": _PALETTE[0],
    "super_off_peak": _PALETTE[6],
    "shoulder": _PALETTE[1],
    "mid_peak": _PALETTE[1],
    "partial_peak": _PALETTE[1],
    "day": _PALETTE[1],
    "peak": _PALETTE[2],
    "on_peak": _PALETTE[2],
}
_NICE_STEPS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))


@dataclass(frozen=True)
class _Axis:
    top_kwh: Decimal
    step_kwh: Decimal


def _n(value: float) -> str:
    """A coordinate with fixed places (byte-stable markup)."""
    return f"{value:.2f}"


def _kwh(value: Decimal) -> str:
    return decimal_text(value, 3)


def _attr(text: str) -> str:
    return escape(text, quote=True)


def period_order(daily: Sequence[DailyUse]) -> list[str]:
    """TOU periods in first-seen order across the days (the engine's tariff order)."""
    seen: dict[str, None] = {}
    for day in daily:
        for name in day.import_kwh_by_period:
            seen.setdefault(name, None)
    return list(seen)


def period_label(name: str) -> str:
    """Printed name of a TOU period: "off_peak" -> "off peak", "all" -> "all hours"."""
    return "all hours" if name == "all" else name.replace("_", " ")


def period_colors(periods: Sequence[str]) -> dict[str, str]:
    """Fill colour of each period: conventional ones for common names, else the palette."""
    colors = {name: _NAMED_COLORS[name] for name in periods if name in _NAMED_COLORS}
    spare = [c for c in _PALETTE if c not in colors.values()] or list(_PALETTE)
    for name in periods:
        if name not in colors:
            colors[name] = spare[len(colors) % len(spare)]
    return {name: colors[name] for name in periods}


def _axis(max_kwh: Decimal) -> _Axis:
    """A y axis from 0 to a round number >= ``max_kwh`` in 3-6 round steps."""
    if max_kwh <= 0:
        return _Axis(Decimal(1), Decimal("0.25"))
    raw = max_kwh / 5
    magnitude = Decimal(1).scaleb(raw.adjusted())
    step = next(m * magnitude for m in _NICE_STEPS if m * magnitude >= raw)
    top = (max_kwh / step).to_integral_value(rounding=ROUND_CEILING) * step
    return _Axis(top, step)


def _tick_label(value: Decimal, step: Decimal) -> str:
    exponent = step.normalize().as_tuple().exponent
    places = max(0, -exponent) if isinstance(exponent, int) else 0
    return f"{value:.{places}f}"


def peak_day(peak: PeakDemand, timezone: str) -> date:
    """Local day on which the peak-demand interval starts."""
    return datetime.fromtimestamp(peak.interval_start_ms / 1000, ZoneInfo(timezone)).date()


def _peak_time(peak: PeakDemand, timezone: str) -> str:
    start = datetime.fromtimestamp(peak.interval_start_ms / 1000, UTC)
    local = start.astimezone(ZoneInfo(timezone))
    end = (start + timedelta(minutes=15)).astimezone(ZoneInfo(timezone))
    return f"{local:%H:%M}-{end:%H:%M}"


def daily_tou_chart(
    daily: Sequence[DailyUse],
    period_start: date,
    period_end: date,
    timezone: str,
    peak: PeakDemand | None = None,
) -> str:
    """SVG markup of daily import by TOU period over ``[period_start, period_end)``."""
    days = [period_start + timedelta(days=i) for i in range((period_end - period_start).days)]
    by_day = {use.day: use for use in daily}
    periods = period_order(daily)
    colors = period_colors(periods)
    max_kwh = max((sum(u.import_kwh_by_period.values(), Decimal(0)) for u in daily), default=0)
    axis = _axis(Decimal(max_kwh))

    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    base_y = _TOP + plot_h
    slot = plot_w / max(len(days), 1)
    bar_w = slot * 0.72

    def y_of(kwh: Decimal) -> float:
        return base_y - float(kwh / axis.top_kwh) * plot_h

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Daily electricity import by time-of-use period" '
        f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="10">',
        "<title>Daily electricity import by time-of-use period</title>",
    ]

    # Legend, top left, one entry per TOU period (and the peak marker).
    x = _LEFT
    out.append('<g class="legend">')
    for name in periods:
        out.append(
            f'<g class="legend-item" data-period="{_attr(name)}">'
            f'<rect x="{_n(x)}" y="10.00" width="10.00" height="10.00" fill="{colors[name]}"/>'
            f'<text x="{_n(x + 14)}" y="19.00">{escape(period_label(name))}</text></g>'
        )
        x += 24 + 6.2 * len(period_label(name))
    if peak is not None:
        out.append(
            f'<g class="legend-item legend-peak"><path d="M{_n(x)} 10.00 h10.00 l-5.00 9.00 z" '
            f'fill="#111111"/><text x="{_n(x + 14)}" y="19.00">peak demand interval</text></g>'
        )
    out.append("</g>")

    # Gridlines and y axis labels.
    out.append('<g class="y-axis">')
    tick = Decimal(0)
    while tick <= axis.top_kwh:
        y = y_of(tick)
        out.append(
            f'<line x1="{_n(_LEFT)}" y1="{_n(y)}" x2="{_n(WIDTH - _RIGHT)}" y2="{_n(y)}" '
            f'stroke="#d9d9d9" stroke-width="0.6"/>'
            f'<text x="{_n(_LEFT - 6)}" y="{_n(y + 3.5)}" text-anchor="end">'
            f"{_tick_label(tick, axis.step_kwh)}</text>"
        )
        tick += axis.step_kwh
    mid_y = _TOP + plot_h / 2
    out.append(
        f'<text class="axis-title" x="14.00" y="{_n(mid_y)}" text-anchor="middle" '
        f'transform="rotate(-90 14.00 {_n(mid_y)})">Import per day (kWh)</text>'
    )
    out.append("</g>")

    # Bars: one group per day, segments stacked bottom-up in period order.
    out.append('<g class="bars">')
    for i, day in enumerate(days):
        x0 = _LEFT + i * slot + (slot - bar_w) / 2
        use = by_day.get(day)
        out.append(f'<g class="bar" data-day="{day.isoformat()}">')
        if use is not None:
            stacked = Decimal(0)
            for name in periods:
                kwh = use.import_kwh_by_period.get(name, Decimal(0))
                if kwh <= 0:
                    continue
                # Round the edges, not the heights, so stacked segments meet exactly.
                y_top, y_bottom = round(y_of(stacked + kwh), 2), round(y_of(stacked), 2)
                stacked += kwh
                out.append(
                    f'<rect class="segment" data-period="{_attr(name)}" data-kwh="{_kwh(kwh)}" '
                    f'x="{_n(x0)}" y="{_n(y_top)}" width="{_n(bar_w)}" '
                    f'height="{_n(y_bottom - y_top)}" fill="{colors[name]}">'
                    f"<title>{day.isoformat()} {escape(period_label(name))}: "
                    f"{_kwh(kwh)} kWh</title>"
                    "</rect>"
                )
        out.append("</g>")
    out.append("</g>")

    # x axis: baseline, day-of-month labels, title.
    out.append('<g class="x-axis">')
    out.append(
        f'<line x1="{_n(_LEFT)}" y1="{_n(base_y)}" x2="{_n(WIDTH - _RIGHT)}" '
        f'y2="{_n(base_y)}" stroke="#333333" stroke-width="0.8"/>'
    )
    label_every = 1 if len(days) <= 31 else 7
    for i, day in enumerate(days):
        if i % label_every == 0:
            cx = _LEFT + (i + 0.5) * slot
            out.append(
                f'<text x="{_n(cx)}" y="{_n(base_y + 13)}" text-anchor="middle" '
                f'font-size="8">{day.day}</text>'
            )
    first, last = days[0] if days else period_start, days[-1] if days else period_start
    out.append(
        f'<text class="axis-title" x="{_n(_LEFT + plot_w / 2)}" y="{_n(HEIGHT - 8)}" '
        f'text-anchor="middle">Day ({first:%d %b %Y} to {last:%d %b %Y}, {escape(timezone)})'
        "</text>"
    )
    out.append("</g>")

    # Peak marker: a triangle over the bar of the day with the highest 15-min demand.
    if peak is not None:
        on_day = peak_day(peak, timezone)
        if period_start <= on_day < period_end:
            i = (on_day - period_start).days
            cx = _LEFT + (i + 0.5) * slot
            use = by_day.get(on_day)
            total = sum(use.import_kwh_by_period.values(), Decimal(0)) if use else Decimal(0)
            tip_y = y_of(total) - 3
            label = f"peak {_kwh(peak.kw)} kW, {on_day:%d %b} {_peak_time(peak, timezone)}"
            anchor, text_x = ("end", cx + 6) if cx > _LEFT + plot_w * 0.6 else ("start", cx - 6)
            out.append(
                f'<g class="peak-marker" data-day="{on_day.isoformat()}" data-kw="{_kwh(peak.kw)}">'
                f'<path d="M{_n(cx - 5)} {_n(tip_y - 9)} h10.00 l-5.00 9.00 z" fill="#111111"/>'
                f'<text x="{_n(text_x)}" y="{_n(max(tip_y - 13, _TOP - 6))}" '
                f'text-anchor="{anchor}" font-weight="bold">{escape(label)}</text></g>'
            )
    out.append("</svg>")
    return "\n".join(out)
