"""Local calendar of 15-minute intervals and TOU period lookup, cached.

Every meter billed for the same period shares one calendar (local date, month,
day type, slot of day per interval), so it is computed once per period and
tariff zone; public holidays come from the ``holidays`` package, cached per
country, subdivision and year.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import numpy as np
from numpy.typing import NDArray

from billing.tariff import DAY_TYPES, TouSchedule, parse_months

WEEKDAY, SATURDAY, SUNDAY, HOLIDAY = range(4)


@lru_cache(maxsize=256)
def holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """Public holidays of one year."""
    calendar = holidays.country_holidays(country, subdiv=subdivision, years=year)
    return frozenset(calendar.keys())


def day_type(day: date, country: str | None, subdivision: str | None) -> int:
    """Index into DAY_TYPES: a public holiday wins over the weekday."""
    if country is not None and day in holiday_dates(country, subdivision, day.year):
        return HOLIDAY
    return {5: SATURDAY, 6: SUNDAY}.get(day.weekday(), WEEKDAY)


def local_midnight_ms(day: date, timezone: str) -> int:
    """UTC ms of the start of ``day`` in ``timezone``."""
    local = datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone))
    return int(local.astimezone(UTC).timestamp() * 1000)


@dataclass(frozen=True, eq=False)
class IntervalCalendar:
    """Local attributes of each interval start (arrays of one length)."""

    start_ms: NDArray[np.int64]
    day_index: NDArray[np.int64]  # into ``days``
    month: NDArray[np.int64]  # 1..12
    day_type: NDArray[np.int64]  # index into DAY_TYPES
    slot: NDArray[np.int64]  # 0..95, local time of day // 15 min
    days: tuple[date, ...]  # local dates, ascending

    def day_ordinals(self) -> NDArray[np.int64]:
        ordinals = np.array([d.toordinal() for d in self.days], dtype=np.int64)
        return ordinals[self.day_index]


@lru_cache(maxsize=64)
def interval_calendar(
    timezone: str,
    country: str | None,
    subdivision: str | None,
    start_ms: int,
    end_ms: int,
    interval_ms: int,
) -> IntervalCalendar:
    """The calendar of the intervals ``start_ms + k * interval_ms`` before ``end_ms``."""
    zone = ZoneInfo(timezone)
    starts = np.arange(start_ms, end_ms, interval_ms, dtype=np.int64)
    days: list[date] = []
    day_index, month, kind, slot = [], [], [], []
    for ms in starts.tolist():
        local = datetime.fromtimestamp(ms / 1000, zone)
        day = local.date()
        if not days or days[-1] != day:
            days.append(day)
        day_index.append(len(days) - 1)
        month.append(local.month)
        kind.append(day_type(day, country, subdivision))
        slot.append(local.hour * 4 + local.minute // 15)
    return IntervalCalendar(
        start_ms=starts,
        day_index=np.array(day_index, dtype=np.int64),
        month=np.array(month, dtype=np.int64),
        day_type=np.array(kind, dtype=np.int64),
        slot=np.array(slot, dtype=np.int64),
        days=tuple(days),
    )


# id(schedule) -> (schedule, grid, season by month); the schedule is kept so its id stays unique.
_GRIDS: dict[int, tuple[TouSchedule, NDArray[np.int64], NDArray[np.int64]]] = {}


def schedule_arrays(schedule: TouSchedule) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(grid[season, day_type, slot] -> period, season index by month - 1), cached."""
    cached = _GRIDS.get(id(schedule))
    if cached is None or cached[0] is not schedule:
        grid = np.array(schedule.grid(), dtype=np.int64)
        seasons = np.array(schedule.season_of_month(), dtype=np.int64)
        cached = (schedule, grid, seasons)
        if len(_GRIDS) > 1024:
            _GRIDS.clear()
        _GRIDS[id(schedule)] = cached
    return cached[1], cached[2]


# (id(schedule), id(calendar)) -> (schedule, calendar, periods): every meter of a period reuses it.
_PERIODS: dict[tuple[int, int], tuple[TouSchedule, IntervalCalendar, NDArray[np.int64]]] = {}


def periods_of(schedule: TouSchedule, calendar: IntervalCalendar) -> NDArray[np.int64]:
    """Period index (into ``schedule.periods``) of every interval (cached, read-only)."""
    key = (id(schedule), id(calendar))
    cached = _PERIODS.get(key)
    if cached is None or cached[0] is not schedule or cached[1] is not calendar:
        grid, seasons = schedule_arrays(schedule)
        periods = grid[seasons[calendar.month - 1], calendar.day_type, calendar.slot]
        periods.setflags(write=False)
        if len(_PERIODS) > 256:
            _PERIODS.clear()
        cached = (schedule, calendar, periods)
        _PERIODS[key] = cached
    return cached[2]


def months_mask(
    months: str | int | list[int] | None, calendar: IntervalCalendar
) -> NDArray[np.bool_]:
    if months is None:
        return np.ones(len(calendar.month), dtype=np.bool_)
    return np.isin(calendar.month, parse_months(months))


def explain_grid(schedule: TouSchedule) -> str:
    """The schedule as text: per season and day type, the period of each hour.

    An hour whose quarters are in different periods shows the first quarter's
    period followed by ``*``.
    """
    abbreviations = _abbreviations(schedule.periods)
    lines = ["periods: " + ", ".join(f"{abbreviations[p]} = {p}" for p in schedule.periods)]
    grid = schedule.grid()
    header = "           " + " ".join(f"{hour:>3}" for hour in range(24))
    for index, season in enumerate(schedule.seasons):
        months = ",".join(str(m) for m in season.month_numbers)
        lines.append("")
        lines.append(f"season {season.name} (months {months}; default {season.default})")
        lines.append(header)
        for type_index, type_name in enumerate(DAY_TYPES):
            cells = []
            for hour in range(24):
                quarters = grid[index][type_index][hour * 4 : hour * 4 + 4]
                name = abbreviations[schedule.periods[quarters[0]]]
                mixed = "*" if len(set(quarters)) > 1 else " "
                cells.append(f"{name:>2}{mixed}")
            lines.append((f"{type_name:<10} " + " ".join(cells)).rstrip())
    return "\n".join(lines)


def _abbreviations(periods: list[str]) -> dict[str, str]:
    """Two-letter, unique abbreviations of period names."""
    result: dict[str, str] = {}
    for name in periods:
        parts = name.split("_")
        candidate = (parts[0][0] + (parts[1][0] if len(parts) > 1 else parts[0][1:2])).upper()
        suffix = 0
        while candidate in result.values():
            suffix += 1
            candidate = f"{candidate[0]}{suffix}"
        result[name] = candidate
    return result
