"""The pricing engine: determinants + tariff -> priced lines, with an explain trace.

Pure arithmetic on a handful of numbers: the determinants are already 15-minute
energies in whole µkWh (numpy); here they are grouped by TOU period, day and
version and priced with Decimal. Rounding (docs/billing.md): each line's amount
is rounded to the currency's minor unit with the tariff's mode; subtotal, tax
and total are sums of rounded lines, so the printed lines add up.

A billing period is ``[period_start, period_end)`` in local dates of the
tariff's zone. A period that spans a version change is priced in segments,
each with its own version; fixed charges, monthly tier limits and the minimum
charge are prorated by days (a day of a month = 1 / days in that month).
"""

from __future__ import annotations

import bisect
import calendar as calendar_module
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from billing.determinants import Determinants, ukwh_to_kwh
from billing.model import (
    Component,
    Customer,
    DailyUse,
    EnergySummary,
    Invoice,
    LineItem,
    PeakDemand,
    RegisterRead,
    VeeEvent,
)
from billing.tariff import (
    DynamicEnergy,
    FlatEnergy,
    PriceSeries,
    Tariff,
    TariffVersion,
    TieredEnergy,
    Tiers,
    TouEnergy,
    versions_in,
)
from billing.tou import (
    IntervalCalendar,
    interval_calendar,
    local_midnight_ms,
    months_mask,
    periods_of,
)
from electrocloud.errors import ElectroCloudError

ENGINE_VERSION = "electrocloud-billing 1.0"

_KWH_PLACES = Decimal("0.000001")
_ALL = "all"


class PricingError(ElectroCloudError):
    """The bill cannot be priced (period outside the tariff, missing prices, ...)."""


class ExplainStep(BaseModel):
    """One step of ``--explain``: which rule, which inputs, which arithmetic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str
    text: str


class PricedBill(BaseModel):
    """Everything an :class:`~billing.model.Invoice` holds except what the ledger assigns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine_version: str
    inputs_fingerprint: str
    meter_id: str
    customer: Customer
    tariff_id: str
    tariff_name: str
    currency: str
    timezone: str
    period_start: date
    period_end: date
    register_start: RegisterRead
    register_end: RegisterRead
    energy: EnergySummary
    daily: list[DailyUse]
    peak_demand: PeakDemand | None
    lines: list[LineItem]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    vee_events: list[VeeEvent]
    explain: list[ExplainStep]

    def to_invoice(
        self, *, invoice_number: str, revision: int, content_hash: str | None = None
    ) -> Invoice:
        """The invoice record; ``content_hash`` defaults to the inputs fingerprint."""
        data = self.model_dump(exclude={"explain", "inputs_fingerprint"})
        return Invoice(
            invoice_number=invoice_number,
            revision=revision,
            content_hash=content_hash or self.inputs_fingerprint,
            **data,
        )


# --- helpers -----------------------------------------------------------------------


def period_bounds_ms(tariff: Tariff, period_start: date, period_end: date) -> tuple[int, int]:
    """UTC ms of local midnight at the start of ``period_start`` and of ``period_end``."""
    if period_end <= period_start:
        raise PricingError(f"period end {period_end} must be after its start {period_start}")
    return (
        local_midnight_ms(period_start, tariff.timezone),
        local_midnight_ms(period_end, tariff.timezone),
    )


def month_fraction(start: date, end: date) -> Fraction:
    """Months in ``[start, end)``: each day counts 1 / (days in its month)."""
    total = Fraction(0)
    day = start
    while day < end:
        days_in_month = calendar_module.monthrange(day.year, day.month)[1]
        month_end = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        upto = min(end, month_end)
        total += Fraction((upto - day).days, days_in_month)
        day = upto
    return total


def _decimal(fraction: Fraction, places: Decimal = _KWH_PLACES) -> Decimal:
    return (Decimal(fraction.numerator) / Decimal(fraction.denominator)).quantize(places)


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


@dataclass
class _Segment:
    """One part of the period priced by one tariff version."""

    version: TariffVersion
    start: date
    end: date
    lo: int  # interval slice
    hi: int
    months: Decimal  # prorated months, 6 places
    days: int
    lines: list[LineItem] = field(default_factory=list)


class _Pricer:
    def __init__(
        self,
        determinants: Determinants,
        tariff: Tariff,
        calendar: IntervalCalendar,
    ) -> None:
        self.d = determinants
        self.tariff = tariff
        self.cal = calendar
        self.imp = determinants.import_register.interval_ukwh
        self.exp = determinants.export_register.interval_ukwh
        self.lengths = np.diff(determinants.boundaries_ms)
        self.explain: list[ExplainStep] = []

    def step(self, rule_id: str, text: str) -> None:
        self.explain.append(ExplainStep(rule_id=rule_id, text=text))

    def line(
        self,
        seg: _Segment,
        component: Component,
        rule_id: str,
        description: str,
        quantity: Decimal,
        unit: str,
        unit_price: Decimal,
        exact: Decimal | None = None,
        how: str = "",
    ) -> LineItem:
        """Add a line: amount = round(quantity x unit_price) unless ``exact`` is given."""
        unrounded = quantity * unit_price if exact is None else exact
        amount = self.tariff.round_money(unrounded)
        item = LineItem(
            component=component,
            rule_id=rule_id,
            description=description,
            period_start=seg.start,
            period_end=seg.end,
            quantity=quantity,
            unit=unit,  # type: ignore[arg-type]
            unit_price=unit_price,
            amount=amount,
            tariff_version=seg.version.valid_from,
        )
        seg.lines.append(item)
        arithmetic = how or f"{_fmt(quantity)} {unit} x {_fmt(unit_price)}"
        self.step(
            rule_id,
            f"{description} [{seg.start} to {seg.end}, version {seg.version.valid_from}]: "
            f"{arithmetic} = {_fmt(unrounded)} -> {amount} {self.tariff.currency} "
            f"({self.tariff.rounding})",
        )
        return item

    # --- energy grouping ---------------------------------------------------------

    def period_names(self, version: TariffVersion) -> list[str]:
        return list(version.tou.periods) if version.tou is not None else [_ALL]

    def period_index(self, version: TariffVersion, lo: int, hi: int) -> NDArray[np.int64]:
        if version.tou is None:
            return np.zeros(hi - lo, dtype=np.int64)
        return periods_of(version.tou, self.cal)[lo:hi]

    def by_period(
        self, values: NDArray[np.int64], index: NDArray[np.int64], count: int
    ) -> list[int]:
        return [int(values[index == period].sum()) for period in range(count)]

    # --- components --------------------------------------------------------------

    def fixed(self, seg: _Segment) -> None:
        for charge in seg.version.fixed:
            if charge.per == "day":
                quantity, unit = Decimal(seg.days), "day"
            else:
                quantity, unit = seg.months, "month"
            self.line(
                seg, "fixed", f"fixed.{charge.id}", charge.description, quantity, unit, charge.price
            )

    def tier_lines(
        self,
        seg: _Segment,
        kwh: Decimal,
        tiers: Tiers,
        rule_id: str,
        label: str,
    ) -> None:
        scale = seg.months if tiers.basis == "monthly" else Decimal(seg.days)
        scale_text = f"{_fmt(scale)} {'months' if tiers.basis == 'monthly' else 'days'}"
        remaining = kwh
        lower = Decimal(0)
        for number, block in enumerate(tiers.blocks, start=1):
            if block.up_to_kwh is None:
                size = remaining
                bounds = f"above {_fmt(lower)} kWh"
            else:
                upper = (block.up_to_kwh * scale).quantize(_KWH_PLACES)
                size = max(min(remaining, upper - lower), Decimal(0))
                bounds = (
                    f"{_fmt(lower)} to {_fmt(upper)} kWh ({_fmt(block.up_to_kwh)} x {scale_text})"
                )
                lower = upper
            if size <= 0 and number > 1:
                continue
            remaining -= size
            self.line(
                seg,
                "energy",
                f"{rule_id}.block{number}",
                f"{label}, block {number} ({bounds})",
                size,
                "kWh",
                block.price,
            )
            if remaining <= 0 and block.up_to_kwh is not None:
                break

    def energy(self, seg: _Segment, billable: dict[str, int]) -> None:
        energy = seg.version.energy
        if energy is None:
            return
        if isinstance(energy, FlatEnergy):
            kwh = ukwh_to_kwh(sum(billable.values()))
            self.line(seg, "energy", "energy.flat", "Energy", kwh, "kWh", energy.price)
        elif isinstance(energy, TieredEnergy):
            kwh = ukwh_to_kwh(sum(billable.values()))
            self.tier_lines(seg, kwh, energy.tiers, "energy.tiered", "Energy")
        elif isinstance(energy, TouEnergy):
            for name in self.period_names(seg.version):
                price = energy.prices[name]
                kwh = ukwh_to_kwh(billable.get(name, 0))
                label = f"Energy, {name.replace('_', ' ')}"
                if price.price is not None:
                    self.line(seg, "energy", f"energy.tou.{name}", label, kwh, "kWh", price.price)
                elif price.tiers is not None:
                    self.tier_lines(seg, kwh, price.tiers, f"energy.tou.{name}", label)
        elif isinstance(energy, DynamicEnergy):
            self.series_line(
                seg, energy.series, self.imp, "energy", "energy.dynamic", "Energy, dynamic price"
            )

    def series_line(
        self,
        seg: _Segment,
        spec: PriceSeries,
        values: NDArray[np.int64],
        component: Component,
        rule_id: str,
        label: str,
        sign: int = 1,
    ) -> None:
        steps = self.tariff.series(spec)
        starts = [s for s, _ in steps]
        step_ms = starts[1] - starts[0]
        exact = Decimal(0)
        total_ukwh = 0
        by_price: dict[Decimal, int] = {}
        for k in range(seg.lo, seg.hi):
            ms = int(self.cal.start_ms[k])
            index = bisect.bisect_right(starts, ms) - 1
            if index < 0 or ms >= starts[index] + step_ms:
                when = datetime.fromtimestamp(ms / 1000, UTC).isoformat()
                raise PricingError(
                    f"price series {spec.file} has no price for the interval at {when}"
                )
            ukwh = int(values[k])
            if ukwh:
                price = steps[index][1]
                by_price[price] = by_price.get(price, 0) + ukwh
            total_ukwh += ukwh
        for price, ukwh in by_price.items():
            exact += ukwh_to_kwh(ukwh) * price
        kwh = ukwh_to_kwh(total_ukwh)
        average = (exact / kwh).quantize(_KWH_PLACES) if kwh else Decimal(0)
        self.line(
            seg,
            component,
            rule_id,
            f"{label} (average {_fmt(average)} per kWh)",
            sign * kwh,
            "kWh",
            average,
            exact=sign * exact,
            how=(
                f"sum over {seg.hi - seg.lo} intervals of kWh x (series price x "
                f"{_fmt(spec.multiplier)} + {_fmt(spec.adder)}) from {spec.file}"
            ),
        )

    def demand(self, seg: _Segment) -> None:
        schedule = seg.version.demand_schedule
        for charge in seg.version.demand:
            mask = months_mask(charge.months, self.cal)[seg.lo : seg.hi].copy()
            if charge.periods is not None and schedule is not None:
                index = periods_of(schedule, self.cal)[seg.lo : seg.hi]
                wanted = [schedule.periods.index(p) for p in charge.periods]
                mask &= np.isin(index, wanted)
            if not mask.any():
                continue
            energy = self.imp[seg.lo : seg.hi]
            lengths = self.lengths[seg.lo : seg.hi]
            power = np.where(mask, energy * (900_000 / lengths), -1)  # equal-length comparison
            k = int(np.argmax(power))
            kw = (Decimal(int(energy[k])) * 3600 / Decimal(int(lengths[k])) / 1000).quantize(
                _KWH_PLACES
            )
            at = datetime.fromtimestamp(int(self.cal.start_ms[seg.lo + k]) / 1000, self.tariff.zone)
            where = f" in {', '.join(charge.periods)}" if charge.periods else ""
            self.line(
                seg,
                "demand",
                f"demand.{charge.id}",
                f"{charge.description} (peak{where} at {at:%Y-%m-%d %H:%M})",
                kw,
                "kW",
                charge.price_per_kw,
                how=(
                    f"peak 15-minute import {ukwh_to_kwh(int(energy[k]))} kWh / "
                    f"{int(lengths[k]) / 3_600_000:g} h = {_fmt(kw)} kW "
                    f"x {_fmt(charge.price_per_kw)}"
                ),
            )

    def export(self, seg: _Segment, excess: dict[str, int]) -> None:
        credit = seg.version.export
        if credit is None:
            return
        if credit.series is not None:
            self.series_line(
                seg,
                credit.series,
                self.exp,
                "export",
                "export.dynamic",
                credit.description,
                sign=-1,
            )
            return
        names = list(excess) if credit.prices is not None else [_ALL]
        for name in names:
            if credit.prices is not None:
                price = credit.prices[name]
                ukwh = excess[name]
                rule, label = f"export.{name}", f"{credit.description}, {name.replace('_', ' ')}"
            else:
                price = credit.price or Decimal(0)
                ukwh = sum(excess.values())
                rule, label = "export.flat", credit.description
            self.line(seg, "export", rule, label, -ukwh_to_kwh(ukwh), "kWh", price)

    def levies(self, seg: _Segment, billable_ukwh: int) -> None:
        kwh = ukwh_to_kwh(billable_ukwh)
        for levy in seg.version.levies:
            self.line(
                seg, "levy", f"levy.{levy.id}", levy.description, kwh, "kWh", levy.price_per_kwh
            )

    def minimum(self, seg: _Segment) -> None:
        rule = seg.version.minimum_charge
        if rule is None:
            return
        floor = self.tariff.round_money(rule.amount * seg.months)
        charged = sum((line.amount for line in seg.lines), Decimal(0))
        self.step(
            "minimum",
            f"minimum charge: {_fmt(rule.amount)} x {_fmt(seg.months)} months = {_fmt(floor)}; "
            f"charges so far {_fmt(charged)}",
        )
        if charged < floor:
            self.line(
                seg,
                "minimum",
                "minimum",
                f"{rule.description} (raises {_fmt(charged)} to {_fmt(floor)})",
                Decimal(1),
                "invoice",
                floor - charged,
            )

    def tax(self, seg: _Segment) -> None:
        rule = seg.version.tax
        if rule is None:
            return
        base = sum((line.amount for line in seg.lines), Decimal(0))
        self.line(
            seg,
            "tax",
            f"tax.{rule.id}",
            f"{rule.description} {_fmt(rule.percent)} % of {_fmt(base)}",
            rule.percent,
            "percent",
            base / 100,
        )

    # --- a segment -----------------------------------------------------------------

    def segment(self, seg: _Segment) -> list[LineItem]:
        version = seg.version
        names = self.period_names(version)
        index = self.period_index(version, seg.lo, seg.hi)
        imports = self.by_period(self.imp[seg.lo : seg.hi], index, len(names))
        exports = self.by_period(self.exp[seg.lo : seg.hi], index, len(names))
        netting = version.export is not None and version.export.mode == "net_metering"
        billable: dict[str, int] = {}
        excess: dict[str, int] = {}
        for i, name in enumerate(names):
            if netting:
                billable[name] = max(imports[i] - exports[i], 0)
                excess[name] = max(exports[i] - imports[i], 0)
            else:
                billable[name] = imports[i]
                excess[name] = exports[i]
            self.step(
                f"energy.{name}",
                f"{seg.start} to {seg.end}, period {name}: import {ukwh_to_kwh(imports[i])} kWh, "
                f"export {ukwh_to_kwh(exports[i])} kWh"
                + (
                    f"; net metering: billed {ukwh_to_kwh(billable[name])} kWh, "
                    f"excess export {ukwh_to_kwh(excess[name])} kWh"
                    if netting
                    else ""
                ),
            )
        self.fixed(seg)
        self.energy(seg, billable)
        self.demand(seg)
        self.export(seg, excess)
        self.levies(seg, sum(billable.values()))
        self.minimum(seg)
        self.tax(seg)
        return seg.lines


# --- public API ----------------------------------------------------------------------


def _segments(
    tariff: Tariff, period_start: date, period_end: date, cal: IntervalCalendar
) -> list[_Segment]:
    ordinals = cal.day_ordinals()
    segments = []
    try:
        tariff.version_at(period_start)
    except ValueError as exc:
        raise PricingError(str(exc)) from None
    for version in versions_in(tariff, period_start, period_end):
        later = [v.valid_from for v in tariff.versions if v.valid_from > version.valid_from]
        start = max(period_start, version.valid_from)
        end = min([period_end, *later])
        lo = int(np.searchsorted(ordinals, start.toordinal(), side="left"))
        hi = int(np.searchsorted(ordinals, end.toordinal(), side="left"))
        segments.append(
            _Segment(
                version=version,
                start=start,
                end=end,
                lo=lo,
                hi=hi,
                months=_decimal(month_fraction(start, end)),
                days=(end - start).days,
            )
        )
    return segments


def _daily(pricer: _Pricer, segments: list[_Segment]) -> list[DailyUse]:
    cal = pricer.cal
    daily = []
    for seg in segments:
        names = pricer.period_names(seg.version)
        index = pricer.period_index(seg.version, seg.lo, seg.hi)
        day_index = cal.day_index[seg.lo : seg.hi]
        first = int(day_index[0]) if len(day_index) else 0
        days = int(day_index[-1]) - first + 1 if len(day_index) else 0
        flat = (day_index - first) * len(names) + index
        imports = np.bincount(
            flat, weights=pricer.imp[seg.lo : seg.hi], minlength=days * len(names)
        )
        exports = np.bincount(
            day_index - first, weights=pricer.exp[seg.lo : seg.hi], minlength=days
        )
        for offset in range(days):
            by_period = {
                name: ukwh_to_kwh(round(imports[offset * len(names) + i]))
                for i, name in enumerate(names)
            }
            daily.append(
                DailyUse(
                    day=cal.days[first + offset],
                    import_kwh_by_period=by_period,
                    export_kwh=ukwh_to_kwh(round(exports[offset])),
                )
            )
    return daily


def _peak(pricer: _Pricer, segments: list[_Segment]) -> PeakDemand | None:
    if len(pricer.imp) == 0:
        return None
    power = pricer.imp * (900_000 / pricer.lengths)
    k = int(np.argmax(power))
    kw = (Decimal(int(pricer.imp[k])) * 3600 / Decimal(int(pricer.lengths[k])) / 1000).quantize(
        _KWH_PLACES
    )
    period = None
    for seg in segments:
        if seg.lo <= k < seg.hi and seg.version.tou is not None:
            period = seg.version.tou.periods[int(periods_of(seg.version.tou, pricer.cal)[k])]
    return PeakDemand(kw=kw, interval_start_ms=int(pricer.cal.start_ms[k]), tou_period=period)


def price(
    determinants: Determinants,
    tariff: Tariff,
    period_start: date,
    period_end: date,
    customer: Customer,
) -> PricedBill:
    """Price one meter's determinants for ``[period_start, period_end)`` (local dates)."""
    start_ms, end_ms = period_bounds_ms(tariff, period_start, period_end)
    if (determinants.start_ms, determinants.end_ms) != (start_ms, end_ms):
        raise PricingError(
            f"determinants cover [{determinants.start_ms}, {determinants.end_ms}) ms but the "
            f"period {period_start} to {period_end} in {tariff.timezone} is "
            f"[{start_ms}, {end_ms}); compute them with billing.engine.period_bounds_ms"
        )
    holidays = tariff.holidays
    cal = interval_calendar(
        tariff.timezone,
        holidays.country if holidays else None,
        holidays.subdivision if holidays else None,
        start_ms,
        end_ms,
        determinants.interval_ms,
    )
    pricer = _Pricer(determinants, tariff, cal)
    _explain_registers(pricer, determinants)
    segments = _segments(tariff, period_start, period_end, cal)
    lines: list[LineItem] = []
    for seg in segments:
        lines += pricer.segment(seg)
    subtotal = sum((line.amount for line in lines if line.component != "tax"), Decimal(0))
    tax = sum((line.amount for line in lines if line.component == "tax"), Decimal(0))
    total = subtotal + tax
    pricer.step("total", f"subtotal {_fmt(subtotal)} + tax {_fmt(tax)} = total {_fmt(total)}")
    imp, exp = determinants.import_register, determinants.export_register
    energy = EnergySummary(
        import_kwh=ukwh_to_kwh(imp.total_ukwh),
        import_actual_kwh=ukwh_to_kwh(imp.total_ukwh - imp.estimated_ukwh),
        import_estimated_kwh=ukwh_to_kwh(imp.estimated_ukwh),
        export_kwh=ukwh_to_kwh(exp.total_ukwh),
        export_actual_kwh=ukwh_to_kwh(exp.total_ukwh - exp.estimated_ukwh),
        export_estimated_kwh=ukwh_to_kwh(exp.estimated_ukwh),
    )
    return PricedBill(
        engine_version=ENGINE_VERSION,
        inputs_fingerprint=inputs_fingerprint(determinants, tariff),
        meter_id=determinants.meter_id,
        customer=customer,
        tariff_id=tariff.id,
        tariff_name=tariff.name,
        currency=tariff.currency,
        timezone=tariff.timezone,
        period_start=period_start,
        period_end=period_end,
        register_start=determinants.register_start,
        register_end=determinants.register_end,
        energy=energy,
        daily=_daily(pricer, segments),
        peak_demand=_peak(pricer, segments),
        lines=lines,
        subtotal=subtotal,
        tax=tax,
        total=total,
        vee_events=list(determinants.vee_events),
        explain=pricer.explain,
    )


def _explain_registers(pricer: _Pricer, d: Determinants) -> None:
    zone = pricer.tariff.zone
    for name, reg in (("import", d.import_register), ("export", d.export_register)):
        t = reg.clean.ts_ms
        for label, index in (("start", 0), ("end", -1)):
            b = int(d.boundaries_ms[index])
            at = datetime.fromtimestamp(b / 1000, zone).isoformat()
            value = ukwh_to_kwh(int(reg.boundary_meter_ukwh[index]))
            if len(t) == 0:
                pricer.step(f"register.{name}", f"{name} register: no reads")
                continue
            i = int(np.searchsorted(t, b, side="right")) - 1
            if 0 <= i < len(t) and int(t[i]) == b:
                how = "read exactly at the boundary"
            elif 0 <= i < len(t) - 1:
                how = (
                    f"interpolated between {ukwh_to_kwh(int(reg.clean.raw_ukwh[i]))} kWh at "
                    f"{datetime.fromtimestamp(int(t[i]) / 1000, zone).isoformat()} and "
                    f"{ukwh_to_kwh(int(reg.clean.raw_ukwh[i + 1]))} kWh at "
                    f"{datetime.fromtimestamp(int(t[i + 1]) / 1000, zone).isoformat()}"
                )
            else:
                how = "no read on both sides: held at the nearest read (estimated)"
            pricer.step(
                f"register.{name}.{label}", f"{name} register at {label} {at}: {value} kWh, {how}"
            )
        pricer.step(
            f"register.{name}",
            f"{name} energy = register end - register start (VEE-corrected) = "
            f"{ukwh_to_kwh(reg.total_ukwh)} kWh, "
            f"of which estimated {ukwh_to_kwh(reg.estimated_ukwh)} kWh",
        )
    for event in d.vee_events:
        pricer.step(f"vee.{event.kind}", f"{event.register}: {event.detail}")


def inputs_fingerprint(determinants: Determinants, tariff: Tariff) -> str:
    """sha256 over the reads, the VEE rules, the tariff version(s) used and ENGINE_VERSION."""
    zone = tariff.zone
    local_start = datetime.fromtimestamp(determinants.start_ms / 1000, zone).date()
    local_end = datetime.fromtimestamp(determinants.end_ms / 1000, zone).date()
    versions = versions_in(tariff, local_start, max(local_end, local_start))
    rules = determinants.rules
    payload = {
        "engine": ENGINE_VERSION,
        "meter_id": determinants.meter_id,
        "period_ms": [determinants.start_ms, determinants.end_ms, determinants.interval_ms],
        "vee": [rules.rollover_ukwh, rules.max_power_kw, rules.gap_ms],
        "tariff": {
            "id": tariff.id,
            "currency": tariff.currency,
            "timezone": tariff.timezone,
            "minor_unit": tariff.minor_digits,
            "rounding": tariff.rounding,
            "holidays": tariff.holidays.model_dump(mode="json") if tariff.holidays else None,
            "versions": [v.model_dump(mode="json", by_alias=True) for v in versions],
            "series": tariff.series_sha256(),
        },
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    # The reads as little-endian int64 bytes: the same on every platform, and fast.
    for reg in (determinants.import_register, determinants.export_register):
        for array in (reg.reads.ts_ms, reg.reads.ukwh):
            digest.update(len(array).to_bytes(8, "little"))
            digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    return digest.hexdigest()
