"""Hand-built invoices for the renderer, chart and ledger tests (no engine needed).

``sample_invoice()`` covers every line component (fixed, energy per TOU period,
demand, export credit, levy, minimum, tax), a three-period TOU chart with a
weekend pattern, a peak-demand interval, estimated energy and VEE events. Amounts
are computed here with the documented rounding (ROUND_HALF_UP to the cent, total
= sum of rounded lines) so the sample is internally consistent.
"""

from __future__ import annotations

import difflib
import os
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from billing.model import (
    Customer,
    DailyUse,
    EnergySummary,
    Invoice,
    LineItem,
    PeakDemand,
    RegisterRead,
    VeeEvent,
)

TZ = "Europe/Berlin"
PERIOD_START = date(2026, 11, 1)
PERIOD_END = date(2026, 12, 1)
TARIFF_VERSION = date(2026, 1, 1)
CENT = Decimal("0.01")
KWH = Decimal("0.001")


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """UTC ms of a local wall-clock time in the sample's time zone."""
    moment = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(TZ))
    return int(moment.timestamp() * 1000)


def sample_daily() -> list[DailyUse]:
    """30 days: weekdays use all three periods, weekends no peak energy."""
    days: list[DailyUse] = []
    for i in range((PERIOD_END - PERIOD_START).days):
        day = PERIOD_START + timedelta(days=i)
        off_peak = (Decimal(5) + Decimal((i * 37) % 23) / 10).quantize(KWH)
        shoulder = (Decimal(3) + Decimal((i * 53) % 19) / 10).quantize(KWH)
        by_period = {"off_peak": off_peak, "shoulder": shoulder}
        if day.weekday() < 5:
            by_period["peak"] = (Decimal(2) + Decimal((i * 29) % 13) / 10).quantize(KWH)
        export = Decimal((i * 11) % 7) / 4
        days.append(DailyUse(day=day, import_kwh_by_period=by_period, export_kwh=export))
    return days


def _line(
    component: str,
    rule_id: str,
    description: str,
    quantity: Decimal,
    unit: str,
    unit_price: Decimal,
) -> LineItem:
    amount = (quantity * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)
    return LineItem.model_validate(
        {
            "component": component,
            "rule_id": rule_id,
            "description": description,
            "period_start": PERIOD_START,
            "period_end": PERIOD_END,
            "quantity": quantity,
            "unit": unit,
            "unit_price": unit_price,
            "amount": amount,
            "tariff_version": TARIFF_VERSION,
        }
    )


def sample_invoice(*, revision: int = 1, content_hash: str | None = None) -> Invoice:
    """A complete November 2026 invoice for meter ``m-0001`` of account ``ACC-1001``."""
    daily = sample_daily()
    by_period: dict[str, Decimal] = {}
    for use in daily:
        for name, kwh in use.import_kwh_by_period.items():
            by_period[name] = by_period.get(name, Decimal(0)) + kwh
    import_kwh = sum(by_period.values(), Decimal(0))
    export_kwh = sum((use.export_kwh for use in daily), Decimal(0))
    estimated_kwh = Decimal("2.750")
    peak = PeakDemand(
        kw=Decimal("7.412"), interval_start_ms=local_ms(2026, 11, 18, 18, 15), tou_period="peak"
    )
    prices = {
        "off_peak": Decimal("0.2150"),
        "shoulder": Decimal("0.2890"),
        "peak": Decimal("0.372"),
    }
    lines = [
        _line("fixed", "fixed.daily", "Standing charge", Decimal(30), "day", Decimal("0.395")),
        *(
            _line(
                "energy",
                f"energy.tou.{name}",
                f"Energy, {name.replace('_', '-')}",
                by_period[name],
                "kWh",
                prices[name],
            )
            for name in ("off_peak", "shoulder", "peak")
        ),
        _line("demand", "demand.monthly_peak", "Peak demand charge", peak.kw, "kW", Decimal("9.8")),
        _line(
            "export",
            "export.feed_in",
            "Feed-in credit for exported energy",
            export_kwh,
            "kWh",
            Decimal("-0.0810"),
        ),
        _line(
            "levy", "levy.renewables", "Renewable energy levy", import_kwh, "kWh", Decimal("0.025")
        ),
        _line(
            "minimum",
            "minimum.monthly",
            "Minimum monthly charge (not reached)",
            Decimal(1),
            "invoice",
            Decimal("0"),
        ),
    ]
    subtotal = sum((line.amount for line in lines), Decimal(0))
    vat = _line("tax", "tax.vat", "VAT 19 %", Decimal(19), "percent", subtotal / 100)
    start_import = Decimal("18234.518")
    start_export = Decimal("1022.250")
    return Invoice(
        invoice_number="INV-ACC-1001-m-0001-202611",
        revision=revision,
        content_hash=content_hash or "sha256:" + "ab12" * 16,
        engine_version="1.0.0",
        meter_id="m-0001",
        customer=Customer(
            account_id="ACC-1001",
            name="Erika Müller & Söhne GmbH",
            address=["Hauptstraße 5", "10115 Berlin", "Germany"],
        ),
        tariff_id="de-tou-demand",
        tariff_name="Business TOU with demand charge",
        currency="EUR",
        timezone=TZ,
        period_start=PERIOD_START,
        period_end=PERIOD_END,
        register_start=RegisterRead(
            at_ms=local_ms(2026, 11, 1),
            import_kwh=start_import,
            export_kwh=start_export,
            estimated=False,
        ),
        register_end=RegisterRead(
            at_ms=local_ms(2026, 12, 1),
            import_kwh=start_import + import_kwh,
            export_kwh=start_export + export_kwh,
            estimated=True,
        ),
        energy=EnergySummary(
            import_kwh=import_kwh,
            import_actual_kwh=import_kwh - estimated_kwh,
            import_estimated_kwh=estimated_kwh,
            export_kwh=export_kwh,
            export_actual_kwh=export_kwh,
            export_estimated_kwh=Decimal(0),
        ),
        daily=daily,
        peak_demand=peak,
        lines=[*lines, vat],
        subtotal=subtotal,
        tax=vat.amount,
        total=subtotal + vat.amount,
        vee_events=[
            VeeEvent(
                kind="gap_estimated",
                start_ms=local_ms(2026, 11, 9, 2, 0),
                end_ms=local_ms(2026, 11, 9, 5, 30),
                register="import",
                kwh=estimated_kwh,
                detail="no reads for 3 h 30 min; energy interpolated linearly between the "
                "reads around the gap",
            ),
            VeeEvent(
                kind="register_reset",
                start_ms=local_ms(2026, 11, 21, 10, 0),
                end_ms=local_ms(2026, 11, 21, 10, 1),
                register="export",
                kwh=Decimal("0.500"),
                detail="export register dropped from 1071.250 to 0.000 (meter replaced); "
                "counting continued from the last read",
            ),
        ],
    )


GOLDEN_DIR = Path(__file__).parent / "golden"


def assert_golden(name: str, data: bytes) -> None:
    """``data`` equals tests/golden/<name> byte for byte; UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN_DIR / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 to create it"
    expected = path.read_bytes()
    if data != expected:
        diff = difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(),
            data.decode("utf-8", "replace").splitlines(),
            f"golden/{name}",
            "rendered",
            lineterm="",
            n=1,
        )
        shown = "\n".join(list(diff)[:60])
        raise AssertionError(
            f"rendering differs from tests/golden/{name} (UPDATE_GOLDEN=1 accepts it):\n{shown}"
        )
