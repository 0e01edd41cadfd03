"""VEE (gaps, resets, rollovers, spikes) and calendar edge cases (DST, leap day).

Readings go through a real SQLite store; expectations are worked out by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from billing_support import QUARTER_MS, bill, reading, tariff_from, write_intervals

from billing.determinants import compute_determinants
from billing.engine import month_fraction, period_bounds_ms
from electrocloud.stores.sqlite import SqliteStore

T0 = 1_709_251_200_000  # 2024-03-01T00:00:00Z
HOUR = 3_600_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "readings.db")
    yield s
    s.close()


def quarter_reads(store: SqliteStore, values: list[float | None], start: int = T0) -> None:
    """One import read per quarter hour (None = no read at that time)."""
    store.write_batch(
        [reading("m-1", start + k * QUARTER_MS, v) for k, v in enumerate(values) if v is not None]
    )


def test_gap_is_interpolated_linearly_and_flagged_estimated(store: SqliteStore) -> None:
    # 1 kWh per quarter, but no reads from 01:00 to 03:00 (register 104 -> 112).
    values: list[float | None] = [100.0 + k for k in range(25)]
    values[5:12] = [None] * 7
    quarter_reads(store, values)

    d = compute_determinants(store, "m-1", T0, T0 + 6 * HOUR)

    imp = d.import_register
    assert imp.total_ukwh == 24_000_000  # 100 -> 124: nothing lost
    assert imp.interval_ukwh.tolist()[:12] == [1_000_000] * 12  # interpolated 1 kWh per quarter
    assert imp.estimated_ukwh == 8_000_000  # the 8 quarters between 01:00 and 03:00
    assert imp.interval_estimated_ukwh.tolist()[4:12] == [1_000_000] * 8
    (gap,) = [e for e in d.vee_events if e.register == "import"]
    assert (gap.kind, gap.start_ms, gap.end_ms, gap.kwh) == (
        "gap_estimated",
        T0 + HOUR,
        T0 + 3 * HOUR,
        Decimal("8.000000"),
    )
    assert d.register_read(6).estimated  # 01:30 lies inside the gap


def test_reset_counts_from_zero_and_carries_the_register_on(store: SqliteStore) -> None:
    quarter_reads(store, [5000.0, 5001.0, 5002.0, 0.5, 1.5, 2.5])  # reset before 00:45

    d = compute_determinants(store, "m-1", T0, T0 + 75 * 60_000)

    # 2 kWh before the reset, 0.5 counted from zero, then 2 more: 4.5 kWh
    assert d.import_register.interval_ukwh.tolist() == [1e6, 1e6, 0.5e6, 1e6, 1e6]
    (event,) = [e for e in d.vee_events if e.register == "import"]
    assert event.kind == "register_reset" and event.kwh == Decimal("5002.000000")
    assert d.register_end.import_kwh == Decimal("2.5")  # the meter's own scale


def test_rollover_wraps_at_the_configured_value(store: SqliteStore) -> None:
    quarter_reads(store, [99_998.5, 99_999.5, 0.25, 1.25, 2.25])

    wrapped = compute_determinants(store, "m-1", T0, T0 + HOUR, rollover_kwh=100_000)
    as_reset = compute_determinants(store, "m-1", T0, T0 + HOUR)

    assert wrapped.import_register.interval_ukwh.tolist() == [1e6, 0.75e6, 1e6, 1e6]
    assert [e.kind for e in wrapped.vee_events if e.register == "import"] == ["rollover"]
    # Without a rollover value the same fall is a reset: 0.25 counted from zero.
    assert as_reset.import_register.interval_ukwh.tolist() == [1e6, 0.25e6, 1e6, 1e6]
    assert [e.kind for e in as_reset.vee_events if e.register == "import"] == ["register_reset"]


@pytest.mark.parametrize("spike", [99_999.0, 0.0])
def test_isolated_spike_read_is_rejected_and_interpolated(store: SqliteStore, spike: float) -> None:
    quarter_reads(store, [100.0, 101.0, spike, 103.0, 104.0])

    d = compute_determinants(store, "m-1", T0, T0 + HOUR)

    assert d.import_register.interval_ukwh.tolist() == [1e6, 1e6, 1e6, 1e6]
    (event,) = [e for e in d.vee_events if e.register == "import"]
    assert event.kind == "spike_rejected"
    assert (event.start_ms, event.end_ms) == (T0 + QUARTER_MS, T0 + 3 * QUARTER_MS)
    assert event.kwh == Decimal("2.000000")  # interpolated between 101 and 103
    assert d.import_register.estimated_ukwh == 2_000_000


def test_rise_above_the_meter_rating_is_rejected_and_estimated(store: SqliteStore) -> None:
    # +50 kWh in one quarter = 200 kW on a 40 kW meter; it persists (not an isolated read).
    quarter_reads(store, [100.0, 101.0, 102.0, 152.0, 153.0, 154.0])

    d = compute_determinants(store, "m-1", T0, T0 + 75 * 60_000, max_power_kw=40)
    plain = compute_determinants(store, "m-1", T0, T0 + 75 * 60_000)

    # The rejected quarter is estimated from its neighbours' average power (1 kWh/quarter).
    assert d.import_register.interval_ukwh.tolist() == [1e6] * 5
    assert d.import_register.estimated_ukwh == 1_000_000
    (event,) = [e for e in d.vee_events if e.register == "import"]
    assert event.kind == "spike_rejected" and "exceeds the meter rating of 40 kW" in event.detail
    assert plain.import_register.interval_ukwh.tolist() == [1e6, 1e6, 50e6, 1e6, 1e6]


def test_bill_shows_actual_and_estimated_energy(store: SqliteStore) -> None:
    tariff = tariff_from(
        """
        id: t
        name: T
        currency: EUR
        timezone: UTC
        versions:
          - valid_from: 2024-01-01
            energy: {type: flat, price: 0.10}
        """
    )
    values: list[float | None] = [100.0 + k for k in range(97)]
    values[10:20] = [None] * 10  # 11 quarters interpolated
    quarter_reads(store, values)

    priced = bill(store, tariff, "m-1", date(2024, 3, 1), date(2024, 3, 2))

    assert priced.energy.import_kwh == 96
    assert priced.energy.import_estimated_kwh == 11
    assert priced.energy.import_actual_kwh == 85
    assert [e.kind for e in priced.vee_events if e.register == "import"] == ["gap_estimated"]


BERLIN_TOU = """
id: dst
name: DST
currency: EUR
timezone: {zone}
versions:
  - valid_from: 2024-01-01
    tou:
      periods: [night, day]
      seasons:
        - name: all
          months: "1-12"
          default: day
          all: [{{from: "02:00", to: "03:00", period: night}}]
    fixed: [{{id: daily, description: Daily, per: day, price: 1.00}}]
    energy: {{type: tou, prices: {{night: {{price: 1.00}}, day: {{price: 0.10}}}}}}
"""


@pytest.mark.parametrize(
    ("zone", "day", "hours", "night_kwh"),
    [
        ("Europe/Berlin", date(2024, 3, 31), 23, 0),  # 02:00-03:00 does not exist
        ("Europe/Berlin", date(2024, 10, 27), 25, 2),  # 02:00-03:00 happens twice
        ("America/New_York", date(2024, 3, 10), 23, 0),
        ("America/New_York", date(2024, 11, 3), 25, 1),  # 01:00-02:00 repeats, 02:00 once
    ],
)
def test_dst_days_have_23_or_25_hours(
    store: SqliteStore, zone: str, day: date, hours: int, night_kwh: int
) -> None:
    tariff = tariff_from(BERLIN_TOU.format(zone=zone))
    end = date.fromordinal(day.toordinal() + 1)
    start_ms, end_ms = period_bounds_ms(tariff, day, end)
    assert end_ms - start_ms == hours * HOUR
    write_intervals(store, "m-1", start_ms, [0.25] * (hours * 4))

    priced = bill(store, tariff, "m-1", day, end)

    assert priced.energy.import_kwh == hours  # 1 kWh per real hour
    (daily,) = priced.daily
    assert daily.day == day
    assert daily.import_kwh_by_period == {"night": night_kwh, "day": hours - night_kwh}
    lines = {line.rule_id: line.amount for line in priced.lines}
    assert lines["fixed.daily"] == Decimal("1.00")  # one day, whatever its length
    assert lines["energy.tou.night"] == Decimal(night_kwh).quantize(Decimal("0.01"))


def test_leap_day(store: SqliteStore) -> None:
    tariff = tariff_from(
        """
        id: leap
        name: Leap
        currency: EUR
        timezone: Europe/Berlin
        versions:
          - valid_from: 2024-01-01
            fixed: [{id: base, description: Base, per: month, price: 29.00}]
            energy: {type: flat, price: 0.10}
        """
    )
    feb = (date(2024, 2, 1), date(2024, 3, 1))
    start_ms, _ = period_bounds_ms(tariff, *feb)
    write_intervals(store, "m-1", start_ms, [0.25] * (29 * 96))

    whole = bill(store, tariff, "m-1", *feb)
    leap_day = bill(store, tariff, "m-1", date(2024, 2, 29), date(2024, 3, 1))

    assert month_fraction(*feb) == 1 and len(whole.daily) == 29
    assert whole.daily[-1].day == date(2024, 2, 29)
    assert whole.energy.import_kwh == 29 * 24
    assert {line.rule_id: line.amount for line in whole.lines} == {
        "fixed.base": Decimal("29.00"),
        "energy.flat": Decimal("69.60"),  # 696 kWh x 0.10
    }
    # One day of a 29-day month: 1/29 = 0.034483 x 29.00 = 1.000007 -> 1.00
    assert {line.rule_id: str(line.amount) for line in leap_day.lines} == {
        "fixed.base": "1.00",
        "energy.flat": "2.40",
    }
