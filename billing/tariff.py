"""Tariffs as data: YAML files validated by pydantic (format reference: docs/billing.md).

A tariff has an id, a currency, a time zone, a rounding rule, an optional
public-holiday calendar and effective-dated *versions*. A version lists
composable components: fixed charges, one energy charge (flat, tiered,
time-of-use or dynamic), demand charges, an export credit, levies, a minimum
charge and a tax. Every price is a Decimal in the tariff's currency.

:func:`load_tariff` reports every problem with the file and line
(:class:`electrocloud.errors.ConfigError`).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from electrocloud.config import read_config_text, read_yaml_with_lines, validation_problems
from electrocloud.errors import ConfigError, ConfigProblem

Price = Annotated[Decimal, Field(allow_inf_nan=False)]
NonNegative = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

ROUNDING_MODES = (
    "ROUND_HALF_UP",
    "ROUND_HALF_EVEN",
    "ROUND_HALF_DOWN",
    "ROUND_UP",
    "ROUND_DOWN",
    "ROUND_CEILING",
    "ROUND_FLOOR",
)
RoundingMode = Literal[
    "ROUND_HALF_UP",
    "ROUND_HALF_EVEN",
    "ROUND_HALF_DOWN",
    "ROUND_UP",
    "ROUND_DOWN",
    "ROUND_CEILING",
    "ROUND_FLOOR",
]

#: ISO 4217 currencies whose minor unit is not 2 digits (others default to 2).
MINOR_UNITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "JOD": 3}

DAY_TYPES = ("weekday", "saturday", "sunday", "holiday")
SLOTS_PER_DAY = 96  # 15-minute resolution
_TIME_RE = re.compile(r"^([01][0-9]|2[0-4]):(00|15|30|45)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- tiers and TOU ----------------------------------------------------------------


class Block(_Strict):
    """One block of a tiered price: up to ``up_to_kwh`` cumulative kWh (None = no limit)."""

    up_to_kwh: NonNegative | None = None
    price: Price


class Tiers(_Strict):
    """Blocks on cumulative kWh; ``basis``: limits per month (prorated) or per day (x days)."""

    basis: Literal["monthly", "daily"] = "monthly"
    blocks: list[Block] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> Tiers:
        limits = [b.up_to_kwh for b in self.blocks]
        if limits[-1] is not None:
            raise ValueError("the last block must have no up_to_kwh (it takes the rest)")
        if any(limit is None for limit in limits[:-1]):
            raise ValueError("only the last block may omit up_to_kwh")
        bounded = [limit for limit in limits[:-1] if limit is not None]
        if any(b <= a for a, b in itertools.pairwise(bounded)):
            raise ValueError("up_to_kwh must increase from block to block")
        return self


class PeriodPrice(_Strict):
    """The price of one TOU period: ``price`` (flat) or ``tiers``."""

    price: Price | None = None
    tiers: Tiers | None = None

    @model_validator(mode="after")
    def _one(self) -> PeriodPrice:
        if (self.price is None) == (self.tiers is None):
            raise ValueError("give exactly one of price or tiers")
        return self


class TimeRange(_Strict):
    """``[from, to)`` local time on the 15-minute grid, ``to`` may be 24:00."""

    from_: str = Field(alias="from")
    to: str
    period: Name

    @field_validator("from_", "to")
    @classmethod
    def _grid(cls, value: str) -> str:
        match = _TIME_RE.match(value)
        if not match or (match.group(1) == "24" and match.group(2) != "00"):
            raise ValueError(f"{value!r} is not HH:MM on the 15-minute grid (00:00 to 24:00)")
        return value

    @staticmethod
    def slot(value: str) -> int:
        hours, minutes = value.split(":")
        return int(hours) * 4 + int(minutes) // 15

    @model_validator(mode="after")
    def _order(self) -> TimeRange:
        if self.slot(self.to) <= self.slot(self.from_):
            raise ValueError(f"'to' {self.to} must be after 'from' {self.from_}")
        return self


def parse_months(text: str | int | list[int]) -> list[int]:
    """``"6-9"``, ``"11-2"`` (wraps), ``"1,3,5-7"``, ``7`` or ``[6, 7]`` -> month numbers."""
    if isinstance(text, int):
        parts = [str(text)]
    elif isinstance(text, list):
        parts = [str(item) for item in text]
    else:
        parts = [part.strip() for part in str(text).split(",")]
    months: list[int] = []
    for part in parts:
        ends = part.split("-")
        if len(ends) > 2 or not all(end.strip().isdigit() for end in ends):
            raise ValueError(f"{part!r} is not a month or a month range like 6-9")
        first, last = int(ends[0]), int(ends[-1])
        if not (1 <= first <= 12 and 1 <= last <= 12):
            raise ValueError(f"{part!r}: months are 1 to 12")
        month = first
        while True:
            months.append(month)
            if month == last:
                break
            month = month % 12 + 1
    return months


class Season(_Strict):
    """Months with one daily pattern per day type; uncovered times get ``default``.

    Day-type keys: ``weekday``, ``saturday``, ``sunday``, ``holiday`` and the
    shorthands ``weekend`` (Saturday and Sunday) and ``all``. Lookup order:
    the day type itself, then ``weekend`` (Saturday/Sunday), then ``all``; a
    public holiday without its own key follows Sunday.
    """

    name: Name
    months: str | int | list[int]
    default: Name
    weekday: list[TimeRange] | None = None
    saturday: list[TimeRange] | None = None
    sunday: list[TimeRange] | None = None
    holiday: list[TimeRange] | None = None
    weekend: list[TimeRange] | None = None
    all: list[TimeRange] | None = None

    @field_validator("months")
    @classmethod
    def _months(cls, value: str | int | list[int]) -> str | int | list[int]:
        parse_months(value)
        return value

    @cached_property
    def month_numbers(self) -> list[int]:
        return parse_months(self.months)

    def ranges(self, day_type: str) -> list[TimeRange]:
        chain = {
            "weekday": (self.weekday, self.all),
            "saturday": (self.saturday, self.weekend, self.all),
            "sunday": (self.sunday, self.weekend, self.all),
            "holiday": (self.holiday, self.sunday, self.weekend, self.all),
        }[day_type]
        return next((ranges for ranges in chain if ranges is not None), [])

    @model_validator(mode="after")
    def _no_overlap(self) -> Season:
        for key in ("weekday", "saturday", "sunday", "holiday", "weekend", "all"):
            ranges = getattr(self, key) or []
            taken = [False] * SLOTS_PER_DAY
            for r in ranges:
                for slot in range(TimeRange.slot(r.from_), TimeRange.slot(r.to)):
                    if taken[slot]:
                        raise ValueError(f"{key}: range {r.from_}-{r.to} overlaps another")
                    taken[slot] = True
        return self


class TouSchedule(_Strict):
    """Named periods over seasons (every month exactly once) and 15-minute day patterns."""

    periods: list[Name] = Field(min_length=1)
    seasons: list[Season] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> TouSchedule:
        if len(set(self.periods)) != len(self.periods):
            raise ValueError("periods must be unique")
        seen: dict[int, str] = {}
        for season in self.seasons:
            for month in season.month_numbers:
                if month in seen:
                    raise ValueError(
                        f"month {month} is in both season {seen[month]!r} and {season.name!r}"
                    )
                seen[month] = season.name
            used = {season.default}
            for key in ("weekday", "saturday", "sunday", "holiday", "weekend", "all"):
                used |= {r.period for r in getattr(season, key) or []}
            unknown = sorted(used - set(self.periods))
            if unknown:
                raise ValueError(
                    f"season {season.name!r} uses undeclared periods {unknown}; "
                    f"declared: {self.periods}"
                )
        missing = sorted(set(range(1, 13)) - set(seen))
        if missing:
            raise ValueError(f"months {missing} are in no season")
        return self

    def season_of_month(self) -> list[int]:
        """Season index for months 1..12 (index 0 = January)."""
        by_month = {}
        for index, season in enumerate(self.seasons):
            for month in season.month_numbers:
                by_month[month] = index
        return [by_month[m] for m in range(1, 13)]

    def grid(self) -> list[list[list[int]]]:
        """``grid[season][day_type][slot]`` -> period index (day types as in DAY_TYPES)."""
        result = []
        for season in self.seasons:
            default = self.periods.index(season.default)
            by_type = []
            for day_type in DAY_TYPES:
                slots = [default] * SLOTS_PER_DAY
                for r in season.ranges(day_type):
                    for slot in range(TimeRange.slot(r.from_), TimeRange.slot(r.to)):
                        slots[slot] = self.periods.index(r.period)
                by_type.append(slots)
            result.append(by_type)
        return result


# --- components -------------------------------------------------------------------


class FixedCharge(_Strict):
    id: RuleId
    description: str
    per: Literal["day", "month"]
    price: Price


class FlatEnergy(_Strict):
    type: Literal["flat"]
    price: Price


class TieredEnergy(_Strict):
    type: Literal["tiered"]
    tiers: Tiers


class TouEnergy(_Strict):
    """Energy priced by TOU period (the version's ``tou`` schedule); each flat or tiered."""

    type: Literal["tou"]
    prices: dict[Name, PeriodPrice]


class PriceSeries(_Strict):
    """A price series file: CSV ``start,price`` (ISO 8601 with offset), sorted, one step.

    Effective price = ``price x multiplier + adder`` (``unit``: price per kWh or MWh).
    """

    file: str
    unit: Literal["kWh", "MWh"] = "kWh"
    adder: Price = Decimal(0)
    multiplier: Price = Decimal(1)


class DynamicEnergy(_Strict):
    type: Literal["dynamic"]
    series: PriceSeries


EnergyCharge = Annotated[
    FlatEnergy | TieredEnergy | TouEnergy | DynamicEnergy, Field(discriminator="type")
]


class DemandCharge(_Strict):
    """Peak 15-minute average import kW in the period times ``price_per_kw``.

    ``periods``: only intervals in these periods of the version's ``demand_tou``
    (or ``tou``) schedule count; ``months``: only intervals in these months.
    """

    id: RuleId
    description: str
    price_per_kw: Price
    periods: list[Name] | None = None
    months: str | int | list[int] | None = None

    @field_validator("months")
    @classmethod
    def _months(cls, value: str | int | list[int] | None) -> str | int | list[int] | None:
        if value is not None:
            parse_months(value)
        return value


class ExportCredit(_Strict):
    """Credit per exported kWh: ``price`` (flat), ``prices`` by TOU period, or ``series``.

    ``mode``: ``net_billing`` credits every exported kWh; ``net_metering`` nets
    import against export per TOU period (per period for the ``all`` flat case)
    and credits only the excess export.
    """

    mode: Literal["net_billing", "net_metering"]
    description: str = "Export credit"
    price: Price | None = None
    prices: dict[Name, Price] | None = None
    series: PriceSeries | None = None

    @model_validator(mode="after")
    def _one(self) -> ExportCredit:
        given = [x for x in (self.price, self.prices, self.series) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of price, prices (by TOU period) or series")
        if self.mode == "net_metering" and self.series is not None:
            raise ValueError("net_metering nets per TOU period: use price or prices, not series")
        return self


class Levy(_Strict):
    id: RuleId
    description: str
    price_per_kwh: Price


class MinimumCharge(_Strict):
    """The non-tax subtotal is raised to ``amount`` per month (prorated by days)."""

    description: str = "Minimum charge"
    amount: NonNegative


class Tax(_Strict):
    id: RuleId = "tax"
    description: str
    percent: NonNegative


class TariffVersion(_Strict):
    valid_from: date
    tou: TouSchedule | None = None
    demand_tou: TouSchedule | None = None  # defaults to ``tou``
    fixed: list[FixedCharge] = Field(default_factory=list)
    energy: EnergyCharge | None = None
    demand: list[DemandCharge] = Field(default_factory=list)
    export: ExportCredit | None = None
    levies: list[Levy] = Field(default_factory=list)
    minimum_charge: MinimumCharge | None = None
    tax: Tax | None = None

    @property
    def demand_schedule(self) -> TouSchedule | None:
        return self.demand_tou or self.tou

    @model_validator(mode="after")
    def _references(self) -> TariffVersion:
        periods = set(self.tou.periods) if self.tou else set()
        if isinstance(self.energy, TouEnergy):
            if self.tou is None:
                raise ValueError("energy type tou needs a tou schedule in this version")
            if set(self.energy.prices) != periods:
                raise ValueError(
                    f"energy.prices must price every TOU period exactly: schedule has "
                    f"{sorted(periods)}, prices have {sorted(self.energy.prices)}"
                )
        if self.export is not None and self.export.prices is not None:
            if self.tou is None:
                raise ValueError("export.prices by TOU period needs a tou schedule")
            if set(self.export.prices) != periods:
                raise ValueError(f"export.prices must price every TOU period {sorted(periods)}")
        if self.export is not None and self.export.mode == "net_metering":
            if isinstance(self.energy, DynamicEnergy):
                raise ValueError("net_metering cannot net against dynamic energy prices")
            if self.export.prices is not None and not isinstance(self.energy, TouEnergy):
                raise ValueError("net_metering with export.prices needs TOU energy")
        demand_periods = set(self.demand_schedule.periods) if self.demand_schedule else set()
        for charge in self.demand:
            unknown = sorted(set(charge.periods or []) - demand_periods)
            if unknown:
                raise ValueError(
                    f"demand {charge.id!r}: periods {unknown} are not in the demand schedule"
                )
        ids = [c.id for c in self.fixed] + [c.id for c in self.demand] + [c.id for c in self.levies]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"rule ids must be unique within a version: {duplicates}")
        return self


class HolidayCalendar(_Strict):
    """Public holidays from the ``holidays`` package: ISO country and optional subdivision."""

    country: str
    subdivision: str | None = None

    @model_validator(mode="after")
    def _known(self) -> HolidayCalendar:
        import holidays

        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision, years=2024)
        except NotImplementedError:
            raise ValueError(f"the holidays package has no country {self.country!r}") from None
        except Exception as exc:  # the package raises plain errors for unknown subdivisions
            raise ValueError(str(exc)) from None
        return self


class Tariff(_Strict):
    id: RuleId
    name: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    timezone: str
    minor_unit: Annotated[int, Field(ge=0, le=4)] | None = None
    rounding: RoundingMode = "ROUND_HALF_UP"
    holidays: HolidayCalendar | None = None
    description: str = ""
    source: str = ""  # where the tariff comes from, e.g. a URDB rate
    versions: list[TariffVersion] = Field(min_length=1)

    _base_dir: Path = PrivateAttr(default=Path("."))
    _series: dict[str, list[tuple[int, Decimal]]] = PrivateAttr(default_factory=dict)
    _series_sha256: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone like Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _versions_ordered(self) -> Tariff:
        starts = [v.valid_from for v in self.versions]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ValueError("versions must be in ascending valid_from order, no repeats")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def minor_digits(self) -> int:
        return self.minor_unit if self.minor_unit is not None else MINOR_UNITS.get(self.currency, 2)

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.minor_digits)

    def round_money(self, amount: Decimal) -> Decimal:
        """``amount`` rounded to the currency's minor unit with the tariff's mode."""
        return amount.quantize(self.quantum, rounding=self.rounding)

    def version_at(self, day: date) -> TariffVersion:
        valid = [v for v in self.versions if v.valid_from <= day]
        if not valid:
            raise ValueError(
                f"tariff {self.id} has no version valid on {day} "
                f"(the first starts {self.versions[0].valid_from})"
            )
        return valid[-1]

    def series(self, spec: PriceSeries) -> list[tuple[int, Decimal]]:
        """The (start UTC ms, effective price per kWh) steps of a price series file."""
        return self._series[spec.file]

    def series_sha256(self) -> dict[str, str]:
        return dict(self._series_sha256)


def _series_specs(tariff: Tariff) -> list[tuple[int, str, PriceSeries]]:
    found = []
    for index, version in enumerate(tariff.versions):
        if isinstance(version.energy, DynamicEnergy):
            found.append((index, "energy", version.energy.series))
        if version.export is not None and version.export.series is not None:
            found.append((index, "export", version.export.series))
    return found


def load_series(path: Path, spec: PriceSeries) -> tuple[list[tuple[int, Decimal]], str]:
    """Parse a price series CSV; returns the effective per-kWh steps and the file's sha256."""
    data = path.read_bytes()
    rows = list(csv.reader(data.decode("utf-8").splitlines()))
    steps: list[tuple[int, Decimal]] = []
    for number, row in enumerate(rows, start=1):
        if not row or row[0].startswith("#") or row[0].strip() == "start":
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{number}: expected 'start,price', got {row!r}")
        try:
            when = datetime.fromisoformat(row[0].strip())
            price = Decimal(row[1].strip())
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        if when.tzinfo is None:
            raise ValueError(f"{path}:{number}: {row[0]!r} needs a UTC offset")
        ms = int(when.astimezone(UTC).timestamp() * 1000)
        if steps and ms <= steps[-1][0]:
            raise ValueError(f"{path}:{number}: times must ascend")
        per_kwh = price / 1000 if spec.unit == "MWh" else price
        steps.append((ms, per_kwh * spec.multiplier + spec.adder))
    if len(steps) < 2:
        raise ValueError(f"{path}: a price series needs at least two rows")
    step = steps[1][0] - steps[0][0]
    if step not in (900_000, 3_600_000) or any(
        b[0] - a[0] != step for a, b in itertools.pairwise(steps)
    ):
        raise ValueError(f"{path}: rows must be evenly 15 minutes or 1 hour apart, no gaps")
    return steps, hashlib.sha256(data).hexdigest()


def _line_of(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def parse_tariff(text: str, source: str, base_dir: Path) -> Tariff:
    """Validate YAML ``text`` as a tariff; price series paths are relative to ``base_dir``."""
    data, lines = read_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigProblem(f"{source}:1", "(top level)", "a tariff must be a mapping")]
        )
    try:
        tariff = Tariff.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            source, validation_problems(exc, Tariff, source=source, lines=lines)
        ) from None
    tariff._base_dir = base_dir
    problems = []
    for index, part, spec in _series_specs(tariff):
        loc: tuple[str | int, ...] = ("versions", index, part, "series", "file")
        where = f"{source}:{_line_of(lines, loc) or 1}"
        path = base_dir / spec.file
        try:
            steps, digest = load_series(path, spec)
        except OSError as exc:
            problems.append(ConfigProblem(where, f"versions[{index}].{part}.series.file", str(exc)))
            continue
        except ValueError as exc:
            problems.append(ConfigProblem(where, f"versions[{index}].{part}.series.file", str(exc)))
            continue
        tariff._series[spec.file] = steps
        tariff._series_sha256[spec.file] = digest
    if problems:
        raise ConfigError(source, problems)
    return tariff


def load_tariff(path: str | Path) -> Tariff:
    """Load and validate a tariff YAML file (ConfigError naming file:line on problems)."""
    source = str(path)
    text = read_config_text(path)
    return parse_tariff(text, source, Path(path).parent)


def load_tariffs(directory: str | Path) -> dict[str, Tariff]:
    """Every ``*.yaml`` tariff in ``directory`` by id (ConfigError on a repeated id)."""
    found: dict[str, Tariff] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        tariff = load_tariff(path)
        if tariff.id in found:
            raise ConfigError(
                str(path),
                [ConfigProblem(str(path), "id", f"tariff id {tariff.id!r} is used twice")],
            )
        found[tariff.id] = tariff
    return found


def versions_in(tariff: Tariff, start: date, end: date) -> Sequence[TariffVersion]:
    """The versions that price some day of ``[start, end)``."""
    days_used = []
    for version in tariff.versions:
        later = [v.valid_from for v in tariff.versions if v.valid_from > version.valid_from]
        until = min(later) if later else date.max
        if version.valid_from < end and until > start:
            days_used.append(version)
    return days_used


__all__ = [
    "Block",
    "DemandCharge",
    "DynamicEnergy",
    "ExportCredit",
    "FixedCharge",
    "FlatEnergy",
    "HolidayCalendar",
    "Levy",
    "MinimumCharge",
    "PriceSeries",
    "Season",
    "Tariff",
    "TariffVersion",
    "Tax",
    "TieredEnergy",
    "Tiers",
    "TouEnergy",
    "TouSchedule",
    "load_tariff",
    "load_tariffs",
    "parse_tariff",
]
