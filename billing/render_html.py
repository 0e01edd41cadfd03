"""HTML rendering of an invoice (Jinja2 template ``billing/templates/invoice.html.j2``).

The page is self-contained (inline CSS and SVG, no script, no external
resources), laid out for A4 printing, and byte-stable: the same invoice always
gives the same bytes. Numbers are formatted here, not in the template, with the
same place rules as the canonical JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from billing.chart import daily_tou_chart, period_colors, period_label, period_order
from billing.invoice_json import decimal_text, money_places, quantity_places
from billing.model import Invoice, LineItem, RegisterRead, VeeEvent

TEMPLATE = "invoice.html.j2"

_COMPONENT_LABELS = {
    "fixed": "Fixed",
    "energy": "Energy",
    "demand": "Demand",
    "export": "Export credit",
    "levy": "Levy",
    "minimum": "Minimum",
    "tax": "Tax",
}
_VEE_LABELS = {
    "gap_estimated": "Gap estimated",
    "register_reset": "Register reset",
    "rollover": "Register rollover",
    "spike_rejected": "Spike rejected",
}


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("billing", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def grouped(text: str) -> str:
    """Thousands separators on the integer part of a plain decimal string."""
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, dot, fraction = digits.partition(".")
    return f"{sign}{int(whole):,}{dot}{fraction}"


def money(value: Decimal, places: int) -> str:
    """Printed amount with ``places`` decimals and thousands separators ("1,234.50")."""
    return grouped(decimal_text(value, places))


def kwh(value: Decimal) -> str:
    return grouped(decimal_text(value, 3))


def period_text(start: date, end_exclusive: date) -> str:
    """A half-open day range printed inclusively: "01-30 Nov 2026", "15 Oct-14 Nov 2026"."""
    last = end_exclusive - timedelta(days=1)
    if last <= start:
        return f"{start:%d %b %Y}"
    if (start.year, start.month) == (last.year, last.month):
        return f"{start:%d}-{last:%d %b %Y}"
    if start.year == last.year:
        return f"{start:%d %b}-{last:%d %b %Y}"
    return f"{start:%d %b %Y}-{last:%d %b %Y}"


def local_time(at_ms: int, timezone: str) -> str:
    moment = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(timezone))
    return f"{moment:%d %b %Y %H:%M %Z}"


@dataclass(frozen=True)
class _LineRow:
    component: str
    description: str
    rule_id: str
    period: str
    quantity: str
    unit: str
    unit_price: str
    amount: str
    credit: bool


@dataclass(frozen=True)
class _ReadRow:
    label: str
    at: str
    import_kwh: str
    export_kwh: str
    estimated: bool


@dataclass(frozen=True)
class _VeeRow:
    kind: str
    register: str
    window: str
    kwh: str
    detail: str


@dataclass(frozen=True)
class _LegendRow:
    label: str
    color: str
    kwh: str


def _line_row(line: LineItem, money_dp: int) -> _LineRow:
    return _LineRow(
        component=_COMPONENT_LABELS[line.component],
        description=line.description,
        rule_id=line.rule_id,
        period=period_text(line.period_start, line.period_end),
        quantity=grouped(decimal_text(line.quantity, quantity_places(line.unit))),
        unit=line.unit,
        unit_price=grouped(decimal_text(line.unit_price, 4)),
        amount=money(line.amount, money_dp),
        credit=line.amount < 0,
    )


def _read_row(label: str, read: RegisterRead, timezone: str) -> _ReadRow:
    return _ReadRow(
        label=label,
        at=local_time(read.at_ms, timezone),
        import_kwh=kwh(read.import_kwh),
        export_kwh=kwh(read.export_kwh),
        estimated=read.estimated,
    )


def _vee_row(event: VeeEvent, timezone: str) -> _VeeRow:
    return _VeeRow(
        kind=_VEE_LABELS[event.kind],
        register=event.register,
        window=f"{local_time(event.start_ms, timezone)} - {local_time(event.end_ms, timezone)}",
        kwh=kwh(event.kwh),
        detail=event.detail,
    )


def invoice_context(invoice: Invoice) -> dict[str, object]:
    """Everything the template prints, already formatted."""
    tz = invoice.timezone
    money_dp = money_places(invoice)
    periods = period_order(invoice.daily)
    colors = period_colors(periods)
    period_totals = {
        name: sum(
            (use.import_kwh_by_period.get(name, Decimal(0)) for use in invoice.daily), Decimal(0)
        )
        for name in periods
    }
    peak = invoice.peak_demand
    chart = daily_tou_chart(
        invoice.daily, invoice.period_start, invoice.period_end, tz, invoice.peak_demand
    )
    return {
        "invoice": invoice,
        "title": f"Invoice {invoice.invoice_number}"
        + (f" (revision {invoice.revision})" if invoice.revision > 1 else ""),
        "period": period_text(invoice.period_start, invoice.period_end),
        "lines": [_line_row(line, money_dp) for line in invoice.lines],
        "subtotal": money(invoice.subtotal, money_dp),
        "tax": money(invoice.tax, money_dp),
        "total": money(invoice.total, money_dp),
        "energy": {
            "import_kwh": kwh(invoice.energy.import_kwh),
            "import_actual_kwh": kwh(invoice.energy.import_actual_kwh),
            "import_estimated_kwh": kwh(invoice.energy.import_estimated_kwh),
            "export_kwh": kwh(invoice.energy.export_kwh),
            "export_actual_kwh": kwh(invoice.energy.export_actual_kwh),
            "export_estimated_kwh": kwh(invoice.energy.export_estimated_kwh),
            "import_has_estimate": invoice.energy.import_estimated_kwh != 0,
            "export_has_estimate": invoice.energy.export_estimated_kwh != 0,
        },
        "reads": [
            _read_row("Start", invoice.register_start, tz),
            _read_row("End", invoice.register_end, tz),
        ],
        "peak": None
        if peak is None
        else {
            "kw": kwh(peak.kw),
            "at": local_time(peak.interval_start_ms, tz),
            "tou_period": period_label(peak.tou_period) if peak.tou_period else None,
        },
        "tou_legend": [
            _LegendRow(period_label(name), colors[name], kwh(period_totals[name]))
            for name in periods
        ],
        "chart": Markup(chart),  # built with escaping in billing.chart
        "vee": [_vee_row(event, tz) for event in invoice.vee_events],
    }


def invoice_html(invoice: Invoice) -> str:
    """The invoice as one self-contained, printable HTML page."""
    return _environment().get_template(TEMPLATE).render(invoice_context(invoice))
