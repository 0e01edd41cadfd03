"""The invoice data model: what the pricing engine produces and the renderers print.

Money and energy quantities are ``decimal.Decimal``, never float. The JSON
form of :class:`Invoice` (``Invoice.model_dump_json``) is the canonical record
(schema documented in docs/invoice-schema.md); HTML and PDF are renderings of it.

Rounding (see docs/billing.md): every line amount is rounded to the currency's
minor unit with the tariff's rounding mode (ROUND_HALF_UP by default); the
total is the sum of the rounded lines, so the printed lines always add up.
"""

from __future__ import annotations

import warnings
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

INVOICE_SCHEMA_VERSION: Literal[1] = 1

Component = Literal["fixed", "energy", "demand", "export", "levy", "minimum", "tax"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineItem(_Model):
    """One priced line: quantity x unit price = amount (rounded), over a period."""

    component: Component
    rule_id: str  # the tariff rule that produced it, e.g. "energy.tou.peak.block1"
    description: str  # printed text, e.g. "Energy, peak (summer), first 100 kWh"
    period_start: date  # inclusive, in the tariff's time zone
    period_end: date  # exclusive
    quantity: Decimal  # in ``unit``; negative for credits where that reads naturally
    unit: Literal["kWh", "kW", "day", "month", "percent", "invoice"]
    unit_price: Decimal  # currency per unit, unrounded as in the tariff
    amount: Decimal  # rounded to the minor unit; negative = credit
    tariff_version: date  # valid_from of the tariff version that priced this line


class RegisterRead(_Model):
    """A register value at a billing boundary (interpolated between the reads around it)."""

    at_ms: int  # boundary, UTC ms
    import_kwh: Decimal
    export_kwh: Decimal
    estimated: bool  # True when no real read lies on both sides of the boundary


class EnergySummary(_Model):
    import_kwh: Decimal  # total for the period (actual + estimated)
    import_actual_kwh: Decimal
    import_estimated_kwh: Decimal
    export_kwh: Decimal
    export_actual_kwh: Decimal
    export_estimated_kwh: Decimal


class DailyUse(_Model):
    """Import per TOU period for one local day (drives the invoice chart)."""

    day: date
    import_kwh_by_period: dict[str, Decimal]  # TOU period name -> kWh; "all" for flat tariffs
    export_kwh: Decimal


class PeakDemand(_Model):
    kw: Decimal  # highest 15-minute average import power
    interval_start_ms: int  # UTC ms of the start of that interval
    tou_period: str | None = None


# "register" is the metering word; pydantic warns only because ABCMeta has a method of
# that name, which Field() below keeps from acting as a default.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class VeeEvent(_Model):
        """Something validation/estimation changed or flagged."""

        kind: Literal["gap_estimated", "register_reset", "rollover", "spike_rejected"]
        start_ms: int
        end_ms: int
        # Field() makes it required: ABCMeta.register would otherwise act as its default.
        register: Literal["import", "export"] = Field()
        kwh: Decimal  # energy estimated (gap, spike) or carried across (reset, rollover)
        detail: str


class Customer(_Model):
    account_id: str
    name: str
    address: list[str] = Field(default_factory=list)


class Invoice(_Model):
    schema_version: Literal[1] = INVOICE_SCHEMA_VERSION
    invoice_number: str  # deterministic: from account, meter and period (see ledger)
    revision: int = Field(ge=1)  # 1 first; +1 each time the inputs change
    content_hash: str  # sha256 over reads, tariff version(s) and engine version
    engine_version: str
    meter_id: str
    customer: Customer
    tariff_id: str
    tariff_name: str
    currency: str  # ISO 4217, e.g. "EUR"
    timezone: str  # IANA name of the tariff's zone
    period_start: date  # inclusive, local
    period_end: date  # exclusive, local
    register_start: RegisterRead
    register_end: RegisterRead
    energy: EnergySummary
    daily: list[DailyUse]
    peak_demand: PeakDemand | None = None
    lines: list[LineItem]
    subtotal: Decimal  # sum of non-tax lines
    tax: Decimal  # sum of tax lines
    total: Decimal  # subtotal + tax = sum of all line amounts
    vee_events: list[VeeEvent] = Field(default_factory=list)
