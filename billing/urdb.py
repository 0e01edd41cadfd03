"""Convert an OpenEI Utility Rate Database (URDB) rate into a tariff YAML file.

Converted: fixed charges (``fixedchargefirstmeter`` + ``fixedchargeunits``, or
the older ``fixedmonthlycharge``), ``minmonthlycharge``, energy
(``energyratestructure`` with ``rate`` + ``adj``, 12 x 24
``energyweekdayschedule``/``energyweekendschedule`` with 0-based periods; one
period -> flat or tiered, several single-tier periods -> time of use), flat
demand (``flatdemandstructure`` + ``flatdemandmonths``) and TOU demand
(``demandratestructure`` + its schedules). Months with the same weekday and
weekend rows form one season; weekends are Saturday and Sunday (URDB has no
public holidays, so the output has no holiday calendar).

Refused with :class:`UrdbError` (never silently dropped): anything this
format cannot express -- tiers inside several TOU periods (URDB applies tier
limits to total monthly use across periods), demand tiers, tier units other
than kWh or kWh daily, sell rates, coincident or reactive demand, ratchets,
demand windows other than 15 minutes, annual minimums, fuel adjustments.

Warned about and listed as comments in the output (not charges the converter
can apply): the free-text ``energyattrs``/``demandattrs`` and
``fixedchargeeaaddl`` (a charge per *additional* meter; a tariff here bills
one meter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from billing.tariff import parse_tariff
from electrocloud.errors import ElectroCloudError


class UrdbError(ElectroCloudError):
    """The URDB rate uses something the tariff format cannot express."""


@dataclass
class Conversion:
    yaml_text: str
    warnings: list[str] = field(default_factory=list)


_UNSUPPORTED_IF_SET = {
    "annualmincharge": "an annual minimum charge",
    "coincidentratestructure": "coincident demand charges",
    "coincidentrateunit": "coincident demand charges",
    "demandratchetpercentage": "a demand ratchet",
    "lookbackpercent": "a demand look-back ratchet",
    "lookbackrange": "a demand look-back ratchet",
    "demandreactivepowercharge": "a reactive power charge",
    "fueladjustmentsmonthly": "monthly fuel adjustments",
}


def _is_set(value: Any) -> bool:
    if value is None or value == "" or value == []:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, list):
        return any(_is_set(item) for item in value)
    return True


def _number(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UrdbError(f"{what}: expected a number, got {value!r}")
    try:
        return Decimal(str(value))
    except ArithmeticError:
        raise UrdbError(f"{what}: {value!r} is not a number") from None


def _out(value: Decimal) -> float | int:
    """A YAML number that reads back as exactly ``value``."""
    normal = value.normalize()
    return int(normal) if normal == normal.to_integral() else float(normal)


def _months_text(months: Sequence[int]) -> str:
    """[1, 2, 3, 5, 10, 11, 12] -> '1-3,5,10-12'."""
    parts = []
    run: list[int] = []
    for month in sorted(months):
        if run and month == run[-1] + 1:
            run.append(month)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [month]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def _matrix(rate: Mapping[str, Any], key: str, periods: int) -> list[list[int]]:
    value = rate.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 12
        or not all(isinstance(row, list) and len(row) == 24 for row in value)
    ):
        raise UrdbError(f"{key} must be 12 rows (months) of 24 hours")
    for month, row in enumerate(value, start=1):
        for hour, period in enumerate(row):
            if not isinstance(period, int) or not 0 <= period < periods:
                raise UrdbError(
                    f"{key}[month {month}][hour {hour}] = {period!r}: not a period id "
                    f"0..{periods - 1}"
                )
    return value


def _hour_ranges(row: Sequence[int], default: int, name: str) -> list[dict[str, str]]:
    ranges = []
    hour = 0
    while hour < 24:
        period = row[hour]
        end = hour
        while end < 24 and row[end] == period:
            end += 1
        if period != default:
            ranges.append(
                {"from": f"{hour:02d}:00", "to": f"{end:02d}:00", "period": f"{name}{period}"}
            )
        hour = end
    return ranges


def _schedule(
    weekday: list[list[int]], weekend: list[list[int]], name: str, periods: int
) -> dict[str, Any]:
    """A TOU schedule: months with identical weekday and weekend rows form a season."""
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for month in range(12):
        groups.setdefault((tuple(weekday[month]), tuple(weekend[month])), []).append(month + 1)
    seasons = []
    for number, ((day_row, end_row), months) in enumerate(groups.items(), start=1):
        hours = list(day_row) + list(end_row)
        default = max(sorted(set(hours)), key=hours.count)
        seasons.append(
            {
                "name": f"season_{number}",
                "months": _months_text(months),
                "default": f"{name}{default}",
                "weekday": _hour_ranges(day_row, default, name),
                "weekend": _hour_ranges(end_row, default, name),
            }
        )
    return {"periods": [f"{name}{i}" for i in range(periods)], "seasons": seasons}


def _tier_rate(tier: Mapping[str, Any], what: str) -> Decimal:
    if _is_set(tier.get("sell")):
        raise UrdbError(f"{what}: sell rates (export credits) are not converted")
    if "rate" not in tier:
        raise UrdbError(f"{what}: has no rate")
    rate = _number(tier["rate"], f"{what}.rate")
    if "adj" in tier and tier["adj"] is not None:
        rate += _number(tier["adj"], f"{what}.adj")
    return rate


def _energy(rate: Mapping[str, Any], version: dict[str, Any]) -> None:
    structure = rate.get("energyratestructure")
    if not structure:
        return
    if not isinstance(structure, list) or not all(isinstance(p, list) and p for p in structure):
        raise UrdbError("energyratestructure must be a list of periods, each a list of tiers")
    # A tier without "unit" shares the rate's unit (kWh when none is given).
    units = {str(t["unit"]) for period in structure for t in period if "unit" in t} or {"kWh"}
    if not units <= {"kWh", "kWh daily"} or len(units) > 1:
        raise UrdbError(
            f"energy tier unit(s) {sorted(units)}: only 'kWh' (monthly) or 'kWh daily' "
            "limits can be converted"
        )
    basis = "daily" if units == {"kWh daily"} else "monthly"

    def tiers(period: list[Mapping[str, Any]], index: int) -> dict[str, Any]:
        blocks = []
        for number, tier in enumerate(period):
            what = f"energyratestructure[{index}][{number}]"
            block: dict[str, Any] = {"price": _out(_tier_rate(tier, what))}
            if number < len(period) - 1:
                if "max" not in tier:
                    raise UrdbError(f"{what}: a tier before the last needs 'max'")
                block = {"up_to_kwh": _out(_number(tier["max"], f"{what}.max")), **block}
            blocks.append(block)
        return {"basis": basis, "blocks": blocks}

    periods = len(structure)
    if periods == 1:
        if len(structure[0]) == 1:
            price = _tier_rate(structure[0][0], "energyratestructure[0][0]")
            version["energy"] = {"type": "flat", "price": _out(price)}
        else:
            version["energy"] = {"type": "tiered", "tiers": tiers(structure[0], 0)}
        return
    tiered = [i for i, period in enumerate(structure) if len(period) > 1]
    if tiered:
        raise UrdbError(
            f"energy periods {tiered} have tiers: URDB applies tier limits to total monthly "
            "use across TOU periods, which this tariff format cannot express"
        )
    weekday = _matrix(rate, "energyweekdayschedule", periods)
    weekend = _matrix(rate, "energyweekendschedule", periods)
    version["tou"] = _schedule(weekday, weekend, "period_", periods)
    version["energy"] = {
        "type": "tou",
        "prices": {
            f"period_{i}": {"price": _out(_tier_rate(p[0], f"energyratestructure[{i}][0]"))}
            for i, p in enumerate(structure)
        },
    }


def _single_tier(structure: Any, key: str) -> list[Decimal]:
    if not isinstance(structure, list) or not all(isinstance(p, list) and p for p in structure):
        raise UrdbError(f"{key} must be a list of periods, each a list of tiers")
    rates = []
    for index, period in enumerate(structure):
        if len(period) > 1:
            raise UrdbError(f"{key}[{index}] has demand tiers, which cannot be converted")
        rates.append(_tier_rate(period[0], f"{key}[{index}][0]"))
    return rates


def _demand(rate: Mapping[str, Any], version: dict[str, Any]) -> None:
    charges: list[dict[str, Any]] = []
    window = rate.get("demandwindow")
    if window not in (None, 15, 15.0):
        raise UrdbError(f"demandwindow {window} min: demand is measured over 15 minutes here")
    flat = rate.get("flatdemandstructure")
    if flat:
        if rate.get("flatdemandunit", "kW") != "kW":
            raise UrdbError(f"flatdemandunit {rate.get('flatdemandunit')!r}: only kW converts")
        rates = _single_tier(flat, "flatdemandstructure")
        months = rate.get("flatdemandmonths")
        if not isinstance(months, list) or len(months) != 12:
            raise UrdbError("flatdemandmonths must list the flat demand period of all 12 months")
        for index, price in enumerate(rates):
            in_months = [m + 1 for m, period in enumerate(months) if period == index]
            if price == 0 or not in_months:
                continue
            charge: dict[str, Any] = {
                "id": f"flat_demand_{index}",
                "description": "Demand charge",
                "price_per_kw": _out(price),
            }
            if len(in_months) < 12:
                charge["months"] = _months_text(in_months)
            charges.append(charge)
    tou = rate.get("demandratestructure")
    if tou:
        if rate.get("demandrateunit", "kW") != "kW":
            raise UrdbError(f"demandrateunit {rate.get('demandrateunit')!r}: only kW converts")
        rates = _single_tier(tou, "demandratestructure")
        weekday = _matrix(rate, "demandweekdayschedule", len(rates))
        weekend = _matrix(rate, "demandweekendschedule", len(rates))
        version["demand_tou"] = _schedule(weekday, weekend, "demand_period_", len(rates))
        for index, price in enumerate(rates):
            if price != 0:
                charges.append(
                    {
                        "id": f"tou_demand_{index}",
                        "description": f"Time-of-use demand, demand period {index}",
                        "price_per_kw": _out(price),
                        "periods": [f"demand_period_{index}"],
                    }
                )
    if charges:
        version["demand"] = charges


def _fixed(rate: Mapping[str, Any], version: dict[str, Any], warnings: list[str]) -> None:
    first = rate.get("fixedchargefirstmeter")
    older = rate.get("fixedmonthlycharge")
    if _is_set(first):
        units = rate.get("fixedchargeunits", "$/month")
        per = {"$/month": "month", "$/day": "day"}.get(str(units))
        if per is None:
            raise UrdbError(f"fixedchargeunits {units!r}: only $/month and $/day convert")
        price = _number(first, "fixedchargefirstmeter")
        if _is_set(older) and _number(older, "fixedmonthlycharge") != price and per == "month":
            warnings.append(
                f"fixedmonthlycharge {older} differs from fixedchargefirstmeter {first}; "
                "using fixedchargefirstmeter"
            )
    elif _is_set(older):
        per, price = "month", _number(older, "fixedmonthlycharge")
    else:
        return
    version["fixed"] = [
        {"id": "fixed", "description": "Fixed charge", "per": per, "price": _out(price)}
    ]
    if _is_set(rate.get("fixedchargeeaaddl")):
        warnings.append(
            f"fixedchargeeaaddl {rate['fixedchargeeaaddl']}: a charge per additional meter, "
            "not converted (a tariff here bills one meter)"
        )


def _attrs(rate: Mapping[str, Any], key: str, warnings: list[str]) -> None:
    for item in rate.get(key) or []:
        if isinstance(item, Mapping):
            for name, value in item.items():
                warnings.append(f"{key}: {name}: {value} (free text, not applied)")
        else:
            warnings.append(f"{key}: {item} (free text, not applied)")


def _slug(text: str) -> str:
    cleaned = "".join(c.lower() if c.isalnum() else "-" for c in text)
    return "-".join(part for part in cleaned.split("-") if part)[:64] or "urdb-rate"


def convert_urdb(
    document: Mapping[str, Any],
    *,
    timezone: str,
    tariff_id: str | None = None,
    source: str = "URDB rate",
) -> Conversion:
    """Convert one URDB rate (or an API answer ``{"items": [rate]}``) into tariff YAML.

    The output is validated as a tariff before it is returned.
    """
    rate: Mapping[str, Any] = document
    if "items" in document:
        items = document["items"]
        if not isinstance(items, list) or len(items) != 1:
            raise UrdbError("the file holds several rates: keep exactly one in 'items'")
        rate = items[0]
    warnings: list[str] = []
    refused = [
        f"{key} ({meaning})"
        for key, meaning in _UNSUPPORTED_IF_SET.items()
        if _is_set(rate.get(key))
    ]
    if refused:
        raise UrdbError("cannot convert: the rate has " + "; ".join(refused))
    start = rate.get("startdate")
    if not isinstance(start, int | float):
        raise UrdbError("startdate (epoch seconds) is missing: the tariff needs a valid_from")
    version: dict[str, Any] = {"valid_from": datetime.fromtimestamp(start, UTC).date().isoformat()}
    _fixed(rate, version, warnings)
    _energy(rate, version)
    _demand(rate, version)
    minimum = rate.get("minmonthlycharge")
    if _is_set(minimum):
        version["minimum_charge"] = {"amount": _out(_number(minimum, "minmonthlycharge"))}
    _attrs(rate, "energyattrs", warnings)
    _attrs(rate, "demandattrs", warnings)
    if not any(key in version for key in ("fixed", "energy", "demand", "minimum_charge")):
        raise UrdbError("the rate has no charges this converter understands")

    name = str(rate.get("name") or "URDB rate")
    label = str(rate.get("label") or "")
    tariff: dict[str, Any] = {
        "id": tariff_id or _slug(f"urdb-{label or name}"),
        "name": name,
        "currency": "USD",
        "timezone": timezone,
        "rounding": "ROUND_HALF_UP",
        "source": str(rate.get("uri") or f"URDB {label}").strip(),
        "description": f"{rate.get('utility', '')}: {name}".strip(": "),
        "versions": [version],
    }
    header = [
        f"# Converted from OpenEI URDB rate {label or '(no label)'} "
        "by electrocloud tariff import-urdb.",
        f"# {rate.get('utility', '')}: {name}",
    ]
    if isinstance(rate.get("enddate"), int | float):
        end = datetime.fromtimestamp(rate["enddate"], UTC).date()
        header.append(f"# URDB end date {end} (informational: add a new version when it changes).")
    header.append("# Weekends are Saturday and Sunday; URDB has no public holidays.")
    if warnings:
        header.append("# Not converted (free text or not a charge on this meter):")
        header += [f"#   - {warning}" for warning in warnings]
    text = "\n".join(header) + "\n" + yaml.safe_dump(tariff, sort_keys=False, allow_unicode=True)
    parse_tariff(text, source, Path("."))  # must be a valid tariff
    return Conversion(yaml_text=text, warnings=warnings)
