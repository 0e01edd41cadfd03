"""Every Flux query of the project, one function per query.

Each function renders a complete Flux script from typed parameters and does
nothing else, so tools can extract and check every query the project runs
(:func:`all_queries_with_examples`). Data layout (see ``docs/influxdb.md``):
measurement ``meter``; tags ``gateway_id``, ``meter_id``, ``site``; one field per
value column of :class:`electrocloud.storage.StoredReading`, ``seq`` (integer)
and ``flags`` (string, only when present).

Parameters are validated, never pasted: meter ids must match the contract's
``ID_PATTERN`` (which also makes them safe inside a regex), strings are escaped
as Flux string literals, and times are either absolute (epoch milliseconds, an
aware ``datetime`` or an RFC3339 string) or a Flux duration literal relative to
``now()`` such as ``-30d`` or ``1d``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from electrocloud.contract import ID_PATTERN

MEASUREMENT = "meter"
#: Tags written for every point; everything else is a field.
TAG_KEYS: tuple[str, ...] = ("gateway_id", "meter_id", "site")
#: Earliest time any query needs: the whole history.
EPOCH_RFC3339 = "1970-01-01T00:00:00Z"

FluxTime = int | datetime | str
"""Epoch milliseconds, an aware datetime, an RFC3339 string or a Flux duration."""

_ID_RE = re.compile(ID_PATTERN)
_DURATION_RE = re.compile(r"^-?(?:[0-9]+(?:ns|us|µs|ms|s|m|h|d|w|mo|y))+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PIVOT = '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
_MEASUREMENT_FILTER = f'  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}")'


# --- literals ----------------------------------------------------------------


def string_literal(value: str) -> str:
    """``value`` as a double-quoted Flux string literal (``\\``, ``"`` and ``${`` escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _absolute_ms(value: int | datetime | str, what: str) -> int:
    """Epoch ms of an absolute time; ValueError naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a time, got a bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what}: epoch milliseconds cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{what}: {value!r} is neither an RFC3339 time nor a Flux duration"
            ) from None
    if value.tzinfo is None:
        raise ValueError(f"{what}: {value.isoformat()} has no time zone; use UTC")
    return (value - _EPOCH) // timedelta(milliseconds=1)


def time_literal(value: FluxTime, what: str = "time") -> str:
    """A Flux time expression: an RFC3339 literal in UTC, or a duration relative to now()."""
    if isinstance(value, str) and _DURATION_RE.match(value):
        return value
    ms = _absolute_ms(value, what)
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def duration_literal(ms: int) -> str:
    """A Flux duration literal for ``ms`` milliseconds in the largest exact unit (``15m``)."""
    if ms < 0:
        raise ValueError(f"duration cannot be negative, got {ms} ms")
    if ms == 0:
        return "0s"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def meter_filter(meter_ids: Collection[str] | None) -> list[str]:
    """Pipeline lines restricting ``meter_id`` (none for ``None`` = all meters).

    One id compares with ``==``; several use an anchored regex alternation,
    which InfluxDB pushes down to its storage engine (``contains()`` is not).
    Every id must match ``ID_PATTERN``, whose alphabet has no regex syntax.
    """
    if meter_ids is None:
        return []
    if isinstance(meter_ids, str):
        raise ValueError("meter_ids must be a collection of ids, not one string")
    ids = sorted(set(meter_ids))
    if not ids:
        raise ValueError("meter_ids is empty: pass None to select every meter")
    for meter_id in ids:
        if not _ID_RE.match(meter_id):
            raise ValueError(f"meter id {meter_id!r} must match {ID_PATTERN}")
    if len(ids) == 1:
        return [f'  |> filter(fn: (r) => r.meter_id == "{ids[0]}")']
    return [f"  |> filter(fn: (r) => r.meter_id =~ /^({'|'.join(ids)})$/)"]


def _check_bucket(bucket: str) -> str:
    if not bucket or any(ord(char) < 32 for char in bucket):
        raise ValueError(f"bucket name {bucket!r} must be non-empty without control characters")
    return string_literal(bucket)


# --- queries -----------------------------------------------------------------


def readings_query(
    bucket: str, start: FluxTime, stop: FluxTime, meter_ids: Collection[str] | None = None
) -> str:
    """Every reading in ``[start, stop)``, one row per reading (fields pivoted to columns).

    Rows come one table per series (meter, gateway, site); the caller orders them.
    """
    return "\n".join(
        [
            f"from(bucket: {_check_bucket(bucket)})",
            f"  |> range(start: {time_literal(start, 'start')}, "
            f"stop: {time_literal(stop, 'stop')})",
            _MEASUREMENT_FILTER,
            *meter_filter(meter_ids),
            _PIVOT,
        ]
    )


def latest_query(
    bucket: str,
    meter_ids: Collection[str] | None = None,
    start: FluxTime = EPOCH_RFC3339,
    stop: FluxTime = "1d",
) -> str:
    """The newest reading of each meter, one row per meter.

    ``last()`` picks each field's newest point (pushed down to storage), pivot
    joins the fields that share a timestamp, and the newest row per meter wins.
    A field missing from the newest reading (a dropped value) then stays null
    instead of showing an older value. ``stop`` defaults to one day ahead of
    now() because meter clocks may lead the server's (the contract allows it).
    """
    return "\n".join(
        [
            f"from(bucket: {_check_bucket(bucket)})",
            f"  |> range(start: {time_literal(start, 'start')}, "
            f"stop: {time_literal(stop, 'stop')})",
            _MEASUREMENT_FILTER,
            *meter_filter(meter_ids),
            "  |> last()",
            _PIVOT,
            '  |> group(columns: ["meter_id"])',
            '  |> sort(columns: ["_time"], desc: true)',
            "  |> limit(n: 1)",
        ]
    )


def interval_energy_query(
    bucket: str,
    start: int | datetime | str,
    stop: int | datetime | str,
    every_ms: int = 900_000,
    meter_ids: Collection[str] | None = None,
) -> str:
    """Import/export energy per meter per interval from the cumulative registers.

    ``start``/``stop`` must be absolute times. The energy of an interval
    ``[t, t + every)`` is the register at its end minus the register at its
    start, and:

    1. ``aggregateWindow(fn: last, timeSrc: "_start")`` gives, per window, the
       last register value in it (the register at the window's *end*), labelled
       with the window's *start*;
    2. ``difference(nonNegative: true)`` subtracts the previous window's value,
       i.e. the register at this window's start: energy of ``[t, t + every)``
       labelled ``t``. A register that went backwards (reset or meter swap)
       gives null for that window rather than a negative or huge value;
    3. the range starts one window early so the first requested interval has a
       predecessor; difference drops that extra first row.

    Windows are aligned to ``start`` (``offset``), ``createEmpty: false`` skips
    windows without readings, so the energy of a data gap lands in the first
    window after it: nothing lost, nothing counted twice. Data is regrouped by
    meter and field (not ungrouped with ``group()``: that would difference one
    meter against another) and sorted by time, so a meter whose gateway or
    site tag changed still forms one register series. ``spread()`` is never
    used: max - min inside a window ignores the energy between the last reading
    of the previous window and the first of this one, so it undercounts.
    """
    if every_ms <= 0:
        raise ValueError(f"interval must be positive, got {every_ms} ms")
    if isinstance(start, str) and _DURATION_RE.match(start):
        raise ValueError("interval energy needs an absolute start, not a duration")
    if isinstance(stop, str) and _DURATION_RE.match(stop):
        raise ValueError("interval energy needs an absolute stop, not a duration")
    start_ms = _absolute_ms(start, "start")
    stop_ms = _absolute_ms(stop, "stop")
    if stop_ms <= start_ms:
        raise ValueError(f"stop ({stop_ms}) must be after start ({start_ms})")
    if start_ms < every_ms:
        raise ValueError("start must be at least one interval after the epoch")
    every = duration_literal(every_ms)
    offset = duration_literal(start_ms % every_ms)
    return "\n".join(
        [
            f"from(bucket: {_check_bucket(bucket)})",
            f"  |> range(start: {time_literal(start_ms - every_ms)}, "
            f"stop: {time_literal(stop_ms)})",
            _MEASUREMENT_FILTER,
            '  |> filter(fn: (r) => r._field == "import_kwh" or r._field == "export_kwh")',
            *meter_filter(meter_ids),
            '  |> group(columns: ["meter_id", "_field"])',
            '  |> sort(columns: ["_time"])',
            f"  |> aggregateWindow(every: {every}, offset: {offset}, fn: last, "
            'timeSrc: "_start", createEmpty: false)',
            "  |> difference(nonNegative: true)",
            _PIVOT,
        ]
    )


def boundary_reads_query(
    bucket: str,
    start: int | datetime | str,
    stop: int | datetime | str,
    every_ms: int = 900_000,
    meter_ids: Collection[str] | None = None,
    context_reads: int = 2,
    context_ms: int = 400 * 86_400_000,
) -> str:
    """The register reads that fix ``import_kwh``/``export_kwh`` at every window boundary.

    Per meter and register (the storage port's ``boundary_reads``): the first
    and the last read of each window ``[start + k*every, start + (k+1)*every)``
    of ``[start, stop)``, the last ``context_reads`` reads before ``start`` and
    the first ``context_reads`` at or after ``stop`` (within ``context_ms``).
    ``window() |> first()/last()`` keep each read's own ``_time``, which the
    caller needs to interpolate the register at the boundary between them
    (``aggregateWindow`` would relabel it with the window time). Series are
    regrouped per meter and field, never ungrouped, so a meter whose gateway
    or site tag changed still forms one register series and no meter mixes
    with another. A read selected twice (first and last of a one-read window)
    appears once.
    """
    if every_ms <= 0:
        raise ValueError(f"interval must be positive, got {every_ms} ms")
    if context_reads < 1:
        raise ValueError(f"context_reads must be at least 1, got {context_reads}")
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, str) and _DURATION_RE.match(value):
            raise ValueError(f"boundary reads need an absolute {name}, not a duration")
    start_ms = _absolute_ms(start, "start")
    stop_ms = _absolute_ms(stop, "stop")
    if stop_ms <= start_ms:
        raise ValueError(f"stop ({stop_ms}) must be after start ({start_ms})")
    every = duration_literal(every_ms)
    offset = duration_literal(start_ms % every_ms)
    return "\n".join(
        [
            "registers = (start, stop) =>",
            f"    from(bucket: {_check_bucket(bucket)})",
            "        |> range(start: start, stop: stop)",
            "      " + _MEASUREMENT_FILTER,
            '        |> filter(fn: (r) => r._field == "import_kwh" or r._field == "export_kwh")',
            *("      " + line for line in meter_filter(meter_ids)),
            '        |> group(columns: ["meter_id", "_field"])',
            '        |> sort(columns: ["_time"])',
            "",
            f"inside = registers(start: {time_literal(start_ms)}, stop: {time_literal(stop_ms)})",
            f"firsts = inside |> window(every: {every}, offset: {offset}) |> first()",
            f"lasts = inside |> window(every: {every}, offset: {offset}) |> last()",
            f"before = registers(start: {time_literal(max(start_ms - context_ms, 0))}, "
            f"stop: {time_literal(start_ms)})",
            f"    |> tail(n: {context_reads})",
            f"after = registers(start: {time_literal(stop_ms)}, "
            f"stop: {time_literal(stop_ms + context_ms)})",
            f"    |> limit(n: {context_reads})",
            "",
            "union(tables: [before, firsts, lasts, after])",
            '  |> group(columns: ["meter_id", "_field"])',
            '  |> sort(columns: ["_time"])',
            '  |> unique(column: "_time")',
            _PIVOT,
        ]
    )


def meter_ids_query(bucket: str, start: FluxTime = EPOCH_RFC3339, stop: FluxTime = "1d") -> str:
    """Every ``meter_id`` tag value of the measurement (whole history by default)."""
    return "\n".join(
        [
            'import "influxdata/influxdb/schema"',
            "",
            "schema.tagValues(",
            f"    bucket: {_check_bucket(bucket)},",
            '    tag: "meter_id",',
            f'    predicate: (r) => r._measurement == "{MEASUREMENT}",',
            f"    start: {time_literal(start, 'start')},",
            f"    stop: {time_literal(stop, 'stop')},",
            ")",
        ]
    )


def all_queries_with_examples() -> dict[str, str]:
    """Every query rendered with representative parameters, by name."""
    start = "2024-03-01T00:00:00Z"
    stop = "2024-04-01T00:00:00Z"
    return {
        "readings": readings_query("electrocloud", start, stop, ["meter-1", "meter-2"]),
        "readings_one_meter": readings_query("electrocloud", "-1h", "1d", ["meter-1"]),
        "readings_all_meters": readings_query("electrocloud", start, stop),
        "latest": latest_query("electrocloud", ["meter-1", "meter-2"]),
        "latest_all_meters": latest_query("electrocloud"),
        "interval_energy": interval_energy_query(
            "electrocloud", start, stop, 900_000, ["meter-1", "meter-2"]
        ),
        "interval_energy_all_meters_hourly": interval_energy_query(
            "electrocloud", start, stop, 3_600_000
        ),
        "meter_ids": meter_ids_query("electrocloud"),
        "boundary_reads": boundary_reads_query(
            "electrocloud", start, stop, 900_000, ["meter-1", "meter-2"]
        ),
        "boundary_reads_all_meters": boundary_reads_query("electrocloud", start, stop),
    }
