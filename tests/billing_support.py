"""Helpers for the billing tests: real SQLite stores filled with register reads."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from billing.determinants import Determinants, compute_determinants
from billing.engine import PricedBill, period_bounds_ms, price
from billing.model import Customer
from billing.tariff import Tariff, parse_tariff
from electrocloud.storage import StoredReading
from electrocloud.stores.sqlite import SqliteStore

QUARTER_MS = 900_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CUSTOMER = Customer(account_id="A-1", name="Test Customer", address=["1 Test Street"])
TARIFFS = Path(__file__).parent.parent / "billing" / "tariffs"


def reading(
    meter_id: str,
    ts_ms: int,
    import_kwh: float | None,
    export_kwh: float | None = 0.0,
    seq: int = 0,
) -> StoredReading:
    return StoredReading(
        gateway_id="gw-1",
        meter_id=meter_id,
        ts_ms=ts_ms,
        seq=seq,
        import_kwh=import_kwh,
        export_kwh=export_kwh,
    )


def write_intervals(
    store: SqliteStore,
    meter_id: str,
    start_ms: int,
    import_kwh: Sequence[float],
    export_kwh: Sequence[float] | None = None,
    *,
    import_start: float = 1000.0,
    export_start: float = 0.0,
    step_ms: int = QUARTER_MS,
) -> list[StoredReading]:
    """Reads at every step boundary so that interval k holds ``import_kwh[k]``."""
    exports = export_kwh if export_kwh is not None else [0.0] * len(import_kwh)
    imp, exp = import_start, export_start
    readings = [reading(meter_id, start_ms, imp, exp)]
    for k, (i, e) in enumerate(zip(import_kwh, exports, strict=True)):
        imp += i
        exp += e
        readings.append(reading(meter_id, start_ms + (k + 1) * step_ms, imp, exp, seq=k + 1))
    store.write_batch(readings)
    return readings


def tariff_from(text: str, base_dir: Path = TARIFFS) -> Tariff:
    return parse_tariff(textwrap.dedent(text), "test.yaml", base_dir)


def determinants_for(
    store: SqliteStore, tariff: Tariff, meter_id: str, start: date, end: date, **rules: float
) -> Determinants:
    start_ms, end_ms = period_bounds_ms(tariff, start, end)
    return compute_determinants(store, meter_id, start_ms, end_ms, **rules)  # type: ignore[arg-type]


def bill(
    store: SqliteStore, tariff: Tariff, meter_id: str, start: date, end: date, **rules: float
) -> PricedBill:
    determinants = determinants_for(store, tariff, meter_id, start, end, **rules)
    return price(determinants, tariff, start, end, CUSTOMER)


def amounts(priced: PricedBill) -> dict[str, str]:
    """rule_id -> amount as text (for exact comparisons)."""
    return {line.rule_id: str(line.amount) for line in priced.lines}
