"""Properties of billing (hypothesis), each on real SQLite files.

- the lines always add up to subtotal, tax and total;
- splitting a period keeps the energy exact and the money within rounding;
- shuffled or duplicated readings do not change a bill;
- a TOU tariff whose periods share one price bills like the flat tariff.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from billing_support import TARIFFS, bill, reading, tariff_from, write_intervals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.determinants import compute_determinants, reference_determinants
from billing.engine import period_bounds_ms
from billing.tariff import load_tariff
from electrocloud.stores.sqlite import SqliteStore

QUARTERS = 2 * 96
PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
profiles = st.lists(st.integers(0, 40), min_size=QUARTERS, max_size=QUARTERS)  # x 0.125 kWh
exports = st.lists(st.integers(0, 8), min_size=QUARTERS, max_size=QUARTERS)


@contextmanager
def fresh_store() -> Iterator[SqliteStore]:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "readings.db")
        try:
            yield store
        finally:
            store.close()


COMMERCIAL = load_tariff(TARIFFS / "commercial-tou-demand.yaml")
PV = load_tariff(TARIFFS / "pv-net-metering.yaml")
HOUSEHOLD = load_tariff(TARIFFS / "de-household-flat.yaml")


@PROPERTY_SETTINGS
@given(
    profile=profiles,
    export=exports,
    day=st.dates(date(2024, 1, 1), date(2024, 12, 29)),
    which=st.sampled_from(["commercial", "pv", "household"]),
)
def test_lines_always_add_up(profile: list[int], export: list[int], day: date, which: str) -> None:
    tariff = {"commercial": COMMERCIAL, "pv": PV, "household": HOUSEHOLD}[which]
    end = day + timedelta(days=2)
    start_ms, end_ms = period_bounds_ms(tariff, day, end)
    quarters = (end_ms - start_ms) // 900_000  # 188..196 with DST
    imports = [(profile * 2)[k] * 0.125 for k in range(quarters)]
    exported = [(export * 2)[k] * 0.125 for k in range(quarters)]
    with fresh_store() as store:
        write_intervals(store, "m-1", start_ms, imports, exported)
        priced = bill(store, tariff, "m-1", day, end)
    non_tax = [line.amount for line in priced.lines if line.component != "tax"]
    taxes = [line.amount for line in priced.lines if line.component == "tax"]
    assert priced.subtotal == sum(non_tax, Decimal(0))
    assert priced.tax == sum(taxes, Decimal(0))
    assert priced.total == priced.subtotal + priced.tax
    assert all(line.amount == line.amount.quantize(Decimal("0.01")) for line in priced.lines)
    assert priced.energy.import_kwh == Decimal(sum(imports)).quantize(Decimal("0.000001"))
    daily_import = sum(sum(d.import_kwh_by_period.values()) for d in priced.daily)
    assert daily_import == priced.energy.import_kwh


@PROPERTY_SETTINGS
@given(
    profile=profiles,
    split_ms=st.integers(1, 2 * 86_400_000 - 1),
    jitter=st.lists(st.integers(-400_000, 400_000), min_size=QUARTERS, max_size=QUARTERS),
)
def test_splitting_a_period_keeps_energy_exact_and_money_within_rounding(
    profile: list[int], split_ms: int, jitter: list[int]
) -> None:
    day = date(2024, 5, 6)
    end = day + timedelta(days=2)
    start_ms, end_ms = period_bounds_ms(HOUSEHOLD, day, end)
    # Reads at irregular times (not on boundaries), with float noise in the values.
    register = 1234.567
    readings = [reading("m-1", start_ms - 300_000, register)]
    for k, (step, shift) in enumerate(zip(profile, jitter, strict=True)):
        register += step * 0.1 + 0.001
        readings.append(reading("m-1", start_ms + (k + 1) * 900_000 + shift, register))
    with fresh_store() as store:
        store.write_batch(readings)
        cut = start_ms + split_ms
        first = compute_determinants(store, "m-1", start_ms, cut)
        second = compute_determinants(store, "m-1", cut, end_ms)
        whole = compute_determinants(store, "m-1", start_ms, end_ms)
        assert (
            first.import_register.total_ukwh + second.import_register.total_ukwh
            == whole.import_register.total_ukwh
        )
        assert first.register_end == second.register_start

        middle = day + timedelta(days=1)
        parts = [
            bill(store, HOUSEHOLD, "m-1", day, middle),
            bill(store, HOUSEHOLD, "m-1", middle, end),
        ]
        together = bill(store, HOUSEHOLD, "m-1", day, end)
    assert sum(p.energy.import_kwh for p in parts) == together.energy.import_kwh
    line_count = sum(len(p.lines) for p in parts) + len(together.lines)
    difference = abs(sum(p.total for p in parts) - together.total)
    # Each rounded line is within half a cent; tax is 19 % of rounded lines.
    assert difference <= Decimal("0.005") * line_count * Decimal("1.19")


@PROPERTY_SETTINGS
@given(profile=profiles, order_seed=st.integers(0, 2**32 - 1), copies=st.integers(1, 3))
def test_shuffled_or_duplicated_readings_do_not_change_a_bill(
    profile: list[int], order_seed: int, copies: int
) -> None:
    day = date(2024, 6, 10)
    end = day + timedelta(days=2)
    start_ms, _ = period_bounds_ms(COMMERCIAL, day, end)
    with fresh_store() as ordered:
        readings = write_intervals(ordered, "m-1", start_ms, [p * 0.125 for p in profile])
        expected = bill(ordered, COMMERCIAL, "m-1", day, end)
    shuffled = readings * copies
    random.Random(order_seed).shuffle(shuffled)
    with fresh_store() as store:
        for index in range(0, len(shuffled), 37):  # many batches, overlapping duplicates
            store.write_batch(shuffled[index : index + 37])
        assert bill(store, COMMERCIAL, "m-1", day, end) == expected
    start_ms, end_ms = period_bounds_ms(COMMERCIAL, day, end)
    reference = reference_determinants(shuffled, "m-1", start_ms, end_ms)
    assert reference.import_register.interval_ukwh.tolist() == [
        round(p * 0.125 * 1e6) for p in profile
    ]


@PROPERTY_SETTINGS
@given(
    profile=st.lists(st.integers(0, 4), min_size=QUARTERS, max_size=QUARTERS),
    cents=st.integers(1, 99),
    day=st.dates(date(2024, 1, 1), date(2024, 12, 29)),
)
def test_tou_with_one_price_for_every_period_equals_flat(
    profile: list[int], cents: int, day: date
) -> None:
    price = f"0.{cents:02d}"
    schedule = (TARIFFS / "commercial-tou-demand.yaml").read_text()
    tou = tariff_from(
        schedule.split("    fixed:")[0]
        + f"""    energy:
      type: tou
      prices:
        peak: {{price: {price}}}
        shoulder: {{price: {price}}}
        off_peak: {{price: {price}}}
"""
    )
    flat = tariff_from(
        schedule.split("    tou:")[0]
        + f"""    energy: {{type: flat, price: {price}}}
"""
    )
    end = day + timedelta(days=2)
    start_ms, end_ms = period_bounds_ms(flat, day, end)
    quarters = (end_ms - start_ms) // 900_000
    with fresh_store() as store:
        write_intervals(store, "m-1", start_ms, [float((profile * 2)[k]) for k in range(quarters)])
        by_tou = bill(store, tou, "m-1", day, end)
        by_flat = bill(store, flat, "m-1", day, end)
    assert by_tou.total == by_flat.total
    assert sum(line.quantity for line in by_tou.lines) == by_flat.lines[0].quantity
    assert len(by_tou.lines) == 3 and len(by_flat.lines) == 1
