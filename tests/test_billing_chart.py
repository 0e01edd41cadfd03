"""The invoice chart: one stacked bar per day, a segment per TOU period, the peak marked."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal
from itertools import pairwise

from billing_samples import PERIOD_END, PERIOD_START, TZ, local_ms, sample_daily

from billing.chart import daily_tou_chart
from billing.model import DailyUse, PeakDemand

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def _find(root: ET.Element, css_class: str) -> list[ET.Element]:
    return [el for el in root.iter() if css_class in _classes(el)]


def _peak() -> PeakDemand:
    return PeakDemand(
        kw=Decimal("7.412"), interval_start_ms=local_ms(2026, 11, 18, 18, 15), tou_period="peak"
    )


def test_one_bar_per_day_with_a_segment_per_tou_period() -> None:
    daily = sample_daily()
    root = _parse(daily_tou_chart(daily, PERIOD_START, PERIOD_END, TZ, _peak()))
    bars = _find(root, "bar")
    assert [bar.get("data-day") for bar in bars] == [use.day.isoformat() for use in daily]
    assert len(bars) == 30
    for bar, use in zip(bars, daily, strict=True):
        segments = _find(bar, "segment")
        # Bottom-up in the tariff's period order, one per period with energy that day.
        assert [(s.get("data-period"), Decimal(s.get("data-kwh", ""))) for s in segments] == [
            (name, kwh) for name, kwh in use.import_kwh_by_period.items() if kwh > 0
        ]
        # Stacked: each segment sits exactly on the one below it.
        for lower, upper in pairwise(segments):
            top = Decimal(upper.get("y", "")) + Decimal(upper.get("height", ""))
            assert top == Decimal(lower.get("y", ""))
    weekend = next(bar for bar in bars if bar.get("data-day") == "2026-11-07")
    assert {s.get("data-period") for s in _find(weekend, "segment")} == {"off_peak", "shoulder"}


def test_bar_heights_are_proportional_to_daily_energy() -> None:
    daily = sample_daily()
    root = _parse(daily_tou_chart(daily, PERIOD_START, PERIOD_END, TZ))
    heights = {}
    for bar, use in zip(_find(root, "bar"), daily, strict=True):
        total = sum(use.import_kwh_by_period.values(), Decimal(0))
        height = sum(float(s.get("height", "")) for s in _find(bar, "segment"))
        heights[use.day] = height / float(total)
    # px per kWh is the same for every day (rounding to 0.01 px per segment aside).
    assert max(heights.values()) - min(heights.values()) < 0.01


def test_legend_axes_and_peak_marker() -> None:
    svg = daily_tou_chart(sample_daily(), PERIOD_START, PERIOD_END, TZ, _peak())
    root = _parse(svg)
    legend = [el.get("data-period") for el in _find(root, "legend-item") if el.get("data-period")]
    assert legend == ["off_peak", "shoulder", "peak"]
    assert _find(root, "legend-peak")
    titles = ["".join(el.itertext()) for el in _find(root, "axis-title")]
    assert titles == ["Import per day (kWh)", "Day (01 Nov 2026 to 30 Nov 2026, Europe/Berlin)"]
    (marker,) = _find(root, "peak-marker")
    assert marker.get("data-day") == "2026-11-18" and marker.get("data-kw") == "7.412"
    assert "peak 7.412 kW, 18 Nov 18:15-18:30" in "".join(marker.itertext())
    # The marker's triangle is centred over the bar of the peak day.
    bar = next(b for b in _find(root, "bar") if b.get("data-day") == "2026-11-18")
    first = _find(bar, "segment")[0]
    left, width = float(first.get("x", "")), float(first.get("width", ""))
    path = marker.find(f"{SVG}path")
    assert path is not None
    tip_x = float(path.get("d", "").split()[0][1:]) + 5
    assert abs(tip_x - (left + width / 2)) < 0.02
    assert "<script" not in svg and "href" not in svg


def test_peak_in_the_small_hours_is_marked_on_the_local_day() -> None:
    # 00:30 local on 1 Nov is still 31 Oct in UTC: the marker follows the tariff's zone.
    peak = PeakDemand(kw=Decimal("3"), interval_start_ms=local_ms(2026, 11, 1, 0, 30))
    root = _parse(daily_tou_chart(sample_daily(), PERIOD_START, PERIOD_END, TZ, peak))
    (marker,) = _find(root, "peak-marker")
    assert marker.get("data-day") == "2026-11-01"


def test_flat_tariff_and_missing_days() -> None:
    daily = [
        DailyUse(
            day=date(2026, 2, 1),
            import_kwh_by_period={"all": Decimal("4.5")},
            export_kwh=Decimal(0),
        ),
        DailyUse(
            day=date(2026, 2, 3), import_kwh_by_period={"all": Decimal("9")}, export_kwh=Decimal(0)
        ),
    ]
    root = _parse(daily_tou_chart(daily, date(2026, 2, 1), date(2026, 3, 1), "UTC"))
    bars = _find(root, "bar")
    assert len(bars) == 28  # every day of the period has a slot
    assert [len(_find(bar, "segment")) for bar in bars[:3]] == [1, 0, 1]
    assert [el.text for el in root.iter(f"{SVG}text") if el.text == "all hours"] == ["all hours"]
    assert not _find(root, "peak-marker")


def test_y_axis_reaches_past_the_highest_day() -> None:
    daily = [
        DailyUse(
            day=date(2026, 1, 1),
            import_kwh_by_period={"all": Decimal("37.2")},
            export_kwh=Decimal(0),
        )
    ]
    root = _parse(daily_tou_chart(daily, date(2026, 1, 1), date(2026, 1, 2), "UTC"))
    (axis,) = _find(root, "y-axis")
    labels = [el.text for el in axis.iter(f"{SVG}text") if "axis-title" not in _classes(el)]
    assert labels == ["0", "10", "20", "30", "40"]
