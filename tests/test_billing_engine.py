"""Pricing engine: hand-computed reference cases for every tariff component.

Readings go through a real SQLite store; every expected amount is worked out
in the test by hand (comments show the arithmetic).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from billing_support import (
    CUSTOMER,
    TARIFFS,
    amounts,
    bill,
    determinants_for,
    reading,
    tariff_from,
    write_intervals,
)

from billing.engine import ENGINE_VERSION, PricingError, inputs_fingerprint, period_bounds_ms, price
from billing.tariff import Tariff
from electrocloud.stores.sqlite import SqliteStore

JAN = (date(2024, 1, 1), date(2024, 2, 1))
JAN_INTERVALS = 31 * 96


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "readings.db")
    yield s  # type: ignore[misc]
    s.close()


def berlin(body: str) -> Tariff:
    return tariff_from("id: t\nname: Test\ncurrency: EUR\ntimezone: Europe/Berlin\n" + body)


def fill(
    store: SqliteStore, tariff: Tariff, start: date, end: date, per_interval: list[float]
) -> None:
    start_ms, end_ms = period_bounds_ms(tariff, start, end)
    assert len(per_interval) == (end_ms - start_ms) // 900_000
    write_intervals(store, "m-1", start_ms, per_interval)


FLAT = """
versions:
  - valid_from: 2024-01-01
    fixed: [{id: base, description: Base fee, per: month, price: 10.00}]
    energy: {type: flat, price: 0.30}
    levies: [{id: tax_e, description: Electricity tax, price_per_kwh: 0.0205}]
    tax: {id: vat, description: VAT, percent: 19}
"""


def test_flat_month_with_fixed_fee_levy_and_vat(store: SqliteStore) -> None:
    tariff = berlin(FLAT)
    fill(store, tariff, *JAN, [0.25] * JAN_INTERVALS)  # 2976 x 0.25 = 744 kWh

    priced = bill(store, tariff, "m-1", *JAN)

    assert amounts(priced) == {
        "fixed.base": "10.00",  # 1 month x 10.00
        "energy.flat": "223.20",  # 744 x 0.30
        "levy.tax_e": "15.25",  # 744 x 0.0205 = 15.252
        "tax.vat": "47.21",  # 19 % of 248.45 = 47.2055
    }
    assert priced.subtotal == Decimal("248.45")
    assert priced.tax == Decimal("47.21")
    assert priced.total == Decimal("295.66")
    assert priced.energy.import_kwh == Decimal("744")
    assert priced.energy.import_estimated_kwh == 0
    assert priced.register_start.import_kwh == Decimal("1000")
    assert priced.register_end.import_kwh == Decimal("1744")
    assert [d.import_kwh_by_period for d in priced.daily[:1]] == [{"all": Decimal("24")}]
    assert len(priced.daily) == 31
    energy_steps = [s.text for s in priced.explain if s.rule_id == "energy.flat"]
    assert energy_steps and "744 kWh x 0.3 = 223.2 -> 223.20 EUR (ROUND_HALF_UP)" in energy_steps[0]
    invoice = priced.to_invoice(invoice_number="INV-1", revision=1)
    assert invoice.total == priced.total and invoice.content_hash == priced.inputs_fingerprint
    assert invoice.engine_version == ENGINE_VERSION


def test_fixed_charges_prorate_by_days(store: SqliteStore) -> None:
    tariff = berlin(
        """
versions:
  - valid_from: 2024-01-01
    fixed:
      - {id: monthly, description: Monthly fee, per: month, price: 10.00}
      - {id: daily, description: Daily fee, per: day, price: 0.50}
"""
    )
    start, end = date(2024, 1, 10), date(2024, 1, 20)
    fill(store, tariff, start, end, [0.0] * (10 * 96))

    priced = bill(store, tariff, "m-1", start, end)

    lines = {line.rule_id: line for line in priced.lines}
    assert lines["fixed.monthly"].quantity == Decimal("0.322581")  # 10 / 31 days
    assert lines["fixed.monthly"].amount == Decimal("3.23")  # 0.322581 x 10.00 = 3.22581
    assert lines["fixed.daily"].quantity == 10
    assert lines["fixed.daily"].amount == Decimal("5.00")
    assert priced.total == Decimal("8.23")


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        (
            "{basis: monthly, blocks: [{up_to_kwh: 100, price: 0.20}, "
            "{up_to_kwh: 300, price: 0.25}, {price: 0.30}]}",
            # 100 x 0.20 = 20.00; 200 x 0.25 = 50.00; 444 x 0.30 = 133.20
            {"energy.tiered.block1": "20.00", "energy.tiered.block2": "50.00",
             "energy.tiered.block3": "133.20"},
        ),
        (
            "{basis: daily, blocks: [{up_to_kwh: 10, price: 0.20}, {price: 0.30}]}",
            # 10 kWh x 31 days = 310 kWh x 0.20 = 62.00; 434 x 0.30 = 130.20
            {"energy.tiered.block1": "62.00", "energy.tiered.block2": "130.20"},
        ),
    ],
)  # fmt: skip
def test_tiered_energy_monthly_and_daily_blocks(
    store: SqliteStore, tiers: str, expected: dict[str, str]
) -> None:
    tariff = berlin(
        f"""
versions:
  - valid_from: 2024-01-01
    energy: {{type: tiered, tiers: {tiers}}}
"""
    )
    fill(store, tariff, *JAN, [0.25] * JAN_INTERVALS)
    assert amounts(bill(store, tariff, "m-1", *JAN)) == expected


def test_monthly_tier_limits_prorate_for_a_partial_month(store: SqliteStore) -> None:
    tariff = berlin(
        """
versions:
  - valid_from: 2024-01-01
    energy: {type: tiered, tiers: {blocks: [{up_to_kwh: 100, price: 0.20}, {price: 0.30}]}}
"""
    )
    start, end = date(2024, 1, 10), date(2024, 1, 20)
    fill(store, tariff, start, end, [0.25] * (10 * 96))  # 240 kWh
    lines = bill(store, tariff, "m-1", start, end).lines
    # limit 100 kWh x 10/31 month (0.322581) = 32.2581 kWh
    assert [(str(line.quantity), str(line.amount)) for line in lines] == [
        ("32.258100", "6.45"),  # x 0.20 = 6.45162
        ("207.741900", "62.32"),  # x 0.30 = 62.32257
    ]


TOU = """
holidays: {country: DE, subdivision: BY}
versions:
  - valid_from: 2024-01-01
    tou:
      periods: [peak, off_peak]
      seasons:
        - name: all_year
          months: "1-12"
          default: off_peak
          weekday: [{from: "08:00", to: "20:00", period: peak}]
          weekend: []
    energy:
      type: tou
      prices:
        peak: {tiers: {blocks: [{up_to_kwh: 100, price: 0.40}, {price: 0.50}]}}
        off_peak: {price: 0.20}
"""


def test_tou_energy_with_a_tiered_period_and_a_public_holiday(store: SqliteStore) -> None:
    tariff = berlin(TOU)
    fill(store, tariff, *JAN, [0.25] * JAN_INTERVALS)

    priced = bill(store, tariff, "m-1", *JAN)

    # January 2024: 23 weekdays, minus New Year (holiday, priced like Sunday) and
    # Epiphany (6 Jan is a Saturday anyway) = 22 peak days x 48 quarters x 0.25 = 264 kWh.
    assert amounts(priced) == {
        "energy.tou.peak.block1": "40.00",  # 100 x 0.40
        "energy.tou.peak.block2": "82.00",  # 164 x 0.50
        "energy.tou.off_peak": "96.00",  # (744 - 264) = 480 x 0.20
    }
    first_day, second_day = priced.daily[0], priced.daily[1]
    assert first_day.import_kwh_by_period == {"peak": 0, "off_peak": Decimal(24)}  # holiday
    assert second_day.import_kwh_by_period == {"peak": Decimal(12), "off_peak": Decimal(12)}


def test_demand_overall_and_per_tou_period(store: SqliteStore) -> None:
    tariff = berlin(
        TOU.replace(
            "    energy:",
            """    demand:
      - {id: all, description: Demand, price_per_kw: 10.00}
      - {id: peak, description: Peak demand, price_per_kw: 5.00, periods: [peak]}
    energy:""",
        )
    )
    profile = [0.25] * JAN_INTERVALS
    profile[96 + 40] = 3.0  # Tue 2 Jan 10:00 (peak): 3 kWh in 15 min = 12 kW
    profile[5 * 96 + 12] = 4.0  # Sat 6 Jan 03:00 (off-peak): 16 kW
    fill(store, tariff, *JAN, profile)

    priced = bill(store, tariff, "m-1", *JAN)

    lines = {line.rule_id: line for line in priced.lines}
    assert (lines["demand.all"].quantity, lines["demand.all"].amount) == (16, Decimal("160.00"))
    assert (lines["demand.peak"].quantity, lines["demand.peak"].amount) == (12, Decimal("60.00"))
    assert priced.peak_demand is not None
    assert priced.peak_demand.kw == 16 and priced.peak_demand.tou_period == "off_peak"
    start_ms, _ = period_bounds_ms(tariff, *JAN)
    assert priced.peak_demand.interval_start_ms == start_ms + (5 * 96 + 12) * 900_000


def test_dynamic_prices_per_interval_with_negative_prices(
    tmp_path: Path, store: SqliteStore
) -> None:
    # Hourly EUR/MWh: (hour - 5) x 10, negative before 05:00 local time.
    rows = [f"2024-01-02T{h:02d}:00:00+01:00,{(h - 5) * 10}" for h in range(24)]
    (tmp_path / "prices.csv").write_text("start,price\n" + "\n".join(rows) + "\n")
    tariff = tariff_from(
        """
        id: dyn
        name: Dynamic
        currency: EUR
        timezone: Europe/Berlin
        versions:
          - valid_from: 2024-01-01
            energy:
              type: dynamic
              series: {file: prices.csv, unit: MWh, multiplier: 1, adder: 0.10}
        """,
        tmp_path,
    )
    day = (date(2024, 1, 2), date(2024, 1, 3))
    fill(store, tariff, *day, [0.25] * 96)  # 1 kWh per hour

    (line,) = bill(store, tariff, "m-1", *day).lines
    # sum over hours of 1 kWh x ((h - 5) / 100 + 0.10) = (276 - 120) / 100 + 2.4 = 3.96
    assert line.amount == Decimal("3.96")
    assert line.quantity == 24 and line.unit_price == Decimal("0.165")

    later = (date(2024, 1, 3), date(2024, 1, 4))
    fill(store, tariff, *later, [0.25] * 96)
    with pytest.raises(PricingError, match="no price for the interval at 2024-01-02T23:00"):
        bill(store, tariff, "m-1", *later)


def test_export_net_billing_credits_every_exported_kwh(store: SqliteStore) -> None:
    tariff = berlin(
        """
versions:
  - valid_from: 2024-01-01
    energy: {type: flat, price: 0.30}
    export: {mode: net_billing, price: 0.08}
"""
    )
    day = (date(2024, 1, 2), date(2024, 1, 3))
    start_ms, _ = period_bounds_ms(tariff, *day)
    write_intervals(store, "m-1", start_ms, [0.25] * 96, [0.125] * 96)

    priced = bill(store, tariff, "m-1", *day)

    lines = {line.rule_id: line for line in priced.lines}
    assert lines["energy.flat"].amount == Decimal("7.20")  # 24 x 0.30, import not netted
    assert (lines["export.flat"].quantity, lines["export.flat"].amount) == (-12, Decimal("-0.96"))
    assert priced.total == Decimal("6.24")
    assert priced.energy.export_kwh == 12


def test_net_metering_nets_per_tou_period(store: SqliteStore) -> None:
    tariff = tariff_from((TARIFFS / "pv-net-metering.yaml").read_text())
    day = (date(2024, 1, 2), date(2024, 1, 3))  # a Tuesday: peak 16:00-21:00 = 20 quarters
    start_ms, _ = period_bounds_ms(tariff, *day)
    exports = [0.5 if 64 <= k < 84 else 0.0 for k in range(96)]
    write_intervals(store, "m-1", start_ms, [0.25] * 96, exports)

    priced = bill(store, tariff, "m-1", *day)

    # peak: import 5, export 10 -> billed 0, excess 5 x 0.08 = 0.40 credit
    # off-peak: import 19, export 0 -> 19 x 0.17 = 3.23
    # service 15.00 x 1/31 month (0.032258) = 0.48387 -> 0.48; minimum 15.00 x 0.032258 = 0.48
    assert amounts(priced) == {
        "fixed.service": "0.48",
        "energy.tou.peak": "0.00",
        "energy.tou.off_peak": "3.23",
        "export.peak": "-0.40",
        "export.off_peak": "0.00",
    }
    assert priced.total == Decimal("3.31")


def test_minimum_charge_tops_up_and_tax_applies_to_it(store: SqliteStore) -> None:
    tariff = berlin(
        """
versions:
  - valid_from: 2024-01-01
    energy: {type: flat, price: 0.30}
    minimum_charge: {amount: 15.00}
    tax: {description: VAT, percent: 10}
"""
    )
    profile = [0.0] * JAN_INTERVALS
    profile[100] = 10.0  # 10 kWh in the whole month
    fill(store, tariff, *JAN, profile)

    assert amounts(bill(store, tariff, "m-1", *JAN)) == {
        "energy.flat": "3.00",  # 10 x 0.30
        "minimum": "12.00",  # raises 3.00 to 15.00
        "tax.tax": "1.50",  # 10 % of 15.00
    }


def test_a_version_change_splits_the_period(store: SqliteStore) -> None:
    tariff = berlin(
        FLAT
        + """
  - valid_from: 2024-01-16
    fixed: [{id: base, description: Base fee, per: month, price: 12.00}]
    energy: {type: flat, price: 0.32}
    tax: {id: vat, description: VAT, percent: 19}
"""
    )
    fill(store, tariff, *JAN, [0.25] * JAN_INTERVALS)

    priced = bill(store, tariff, "m-1", *JAN)

    got = [(line.rule_id, str(line.tariff_version), str(line.amount)) for line in priced.lines]
    assert got == [
        ("fixed.base", "2024-01-01", "4.84"),  # 15/31 = 0.483871 x 10.00 = 4.83871
        ("energy.flat", "2024-01-01", "108.00"),  # 15 days x 24 kWh = 360 x 0.30
        ("levy.tax_e", "2024-01-01", "7.38"),  # 360 x 0.0205 = 7.38
        ("tax.vat", "2024-01-01", "22.84"),  # 19 % of 120.22 = 22.8418
        ("fixed.base", "2024-01-16", "6.19"),  # 16/31 = 0.516129 x 12.00 = 6.193548
        ("energy.flat", "2024-01-16", "122.88"),  # 384 x 0.32
        ("tax.vat", "2024-01-16", "24.52"),  # 19 % of 129.07 = 24.5233
    ]
    assert priced.total == Decimal("296.65")
    assert priced.lines[0].period_end == date(2024, 1, 16)


@pytest.mark.parametrize(
    ("mode", "currency", "expected"),
    [("ROUND_HALF_UP", "EUR", "0.13"), ("ROUND_HALF_EVEN", "EUR", "0.12"),
     ("ROUND_DOWN", "EUR", "0.12"), ("ROUND_HALF_UP", "JPY", "0")],
)  # fmt: skip
def test_rounding_mode_and_minor_unit(
    store: SqliteStore, mode: str, currency: str, expected: str
) -> None:
    tariff = tariff_from(
        f"""
        id: r
        name: Rounding
        currency: {currency}
        timezone: Europe/Berlin
        rounding: {mode}
        versions:
          - valid_from: 2024-01-01
            energy: {{type: flat, price: 0.25}}
        """
    )
    day = (date(2024, 1, 2), date(2024, 1, 3))
    fill(store, tariff, *day, [0.5] + [0.0] * 95)  # 0.5 kWh x 0.25 = 0.125
    assert amounts(bill(store, tariff, "m-1", *day)) == {"energy.flat": expected}


def test_fingerprint_is_deterministic_and_tracks_reads_and_tariff(store: SqliteStore) -> None:
    tariff = berlin(FLAT)
    fill(store, tariff, *JAN, [0.25] * JAN_INTERVALS)
    first = determinants_for(store, tariff, "m-1", *JAN)
    again = determinants_for(store, tariff, "m-1", *JAN)
    assert inputs_fingerprint(first, tariff) == inputs_fingerprint(again, tariff)
    assert len(inputs_fingerprint(first, tariff)) == 64

    cheaper = berlin(FLAT.replace("price: 0.30", "price: 0.29"))
    assert inputs_fingerprint(first, cheaper) != inputs_fingerprint(first, tariff)

    start_ms, _ = period_bounds_ms(tariff, *JAN)
    store.write_batch([reading("m-1", start_ms + 450_000, 1000.1)])  # one more read
    changed = determinants_for(store, tariff, "m-1", *JAN)
    assert inputs_fingerprint(changed, tariff) != inputs_fingerprint(first, tariff)


def test_determinants_must_match_the_period(store: SqliteStore) -> None:
    tariff = berlin(FLAT)
    fill(store, tariff, *JAN, [0.25] * JAN_INTERVALS)
    determinants = determinants_for(store, tariff, "m-1", *JAN)
    with pytest.raises(PricingError, match=r"compute them with billing\.engine\.period_bounds_ms"):
        price(determinants, tariff, date(2024, 1, 2), date(2024, 2, 1), CUSTOMER)
    with pytest.raises(PricingError, match="no version valid on 2023-12-01"):
        fill2 = determinants_for(store, tariff, "m-1", date(2023, 12, 1), date(2024, 1, 1))
        price(fill2, tariff, date(2023, 12, 1), date(2024, 1, 1), CUSTOMER)
