"""InfluxDB 2 adapter of the storage port, through ``influxdb-client``.

Schema (``docs/influxdb.md``): measurement ``meter``; tags ``gateway_id``,
``meter_id`` and ``site`` (when ``site_by_meter`` names one); a float field per
value column, ``seq`` as an integer field and ``flags`` as a comma-joined string
field only when a reading has flags. Nothing high-cardinality is a tag. Points
carry the meter-side timestamp at millisecond precision, so rewriting a reading
overwrites the same point (InfluxDB keys a point by series and time).

Writes: one synchronous HTTP request per ``write_batch`` with our own retry
policy. The client's default batching ``WriteApi`` is not used on purpose: its
``flush()`` does nothing, it retries and discards batches in a background
thread (a 4xx batch is dropped with only a log line), so ``write_batch`` could
return before, or without, the data being stored. Here a return means the server
answered 2xx; otherwise the caller gets:

- HTTP 401, 403, 404 -> :class:`StoreUnavailable` at once: a wrong token or a
  missing bucket is an operator's problem, not bad data, so the backend keeps
  the data (unacknowledged at the broker) and retries until it is fixed instead
  of dead-lettering every batch;
- any other HTTP 4xx except 429 -> :class:`StoreRejected` at once (the backend
  dead-letters);
- HTTP 429/5xx, connection errors and timeouts -> retried ``retries`` times with
  exponential backoff (``Retry-After`` honoured, capped), then
  :class:`StoreUnavailable`. Retrying is safe because writes are idempotent.

Reads run the Flux queries of :mod:`electrocloud.flux` through ``query_api``
with the same retry policy (a 4xx there is a :class:`StoreError`: a bug or a
configuration problem, not bad data).
"""

from __future__ import annotations

import logging
import math
import operator
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import numpy as np
import urllib3
from influxdb_client.client.flux_csv_parser import FluxCsvParserException, FluxQueryException
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from electrocloud import flux
from electrocloud.contract import ID_PATTERN
from electrocloud.storage import (
    BOUNDARY_CONTEXT_MS,
    BOUNDARY_CONTEXT_READS,
    VALUE_FIELDS,
    BoundaryReads,
    IntervalEnergy,
    RegisterReads,
    StoredReading,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    check_window,
    first_and_last_per_window,
    kwh_to_ukwh,
)

logger = logging.getLogger(__name__)
#: Unauthorized, forbidden, not found: configuration, not data. Never dead-letter on them.
_CONFIGURATION_STATUSES = frozenset({401, 403, 404})

_T = TypeVar("_T")
_ID_RE = re.compile(ID_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# The client annotates precision as the WritePrecision class; its values are plain strings.
_PRECISION_MS = cast(WritePrecision, WritePrecision.MS)

# Line protocol escapes (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/).
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_FIELD_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\"})
_FIELD_PREFIXES = tuple(f"{name}=" for name in VALUE_FIELDS)
_VALUES_OF = operator.attrgetter(*VALUE_FIELDS)


def _check_site(meter_id: str, site: str) -> str:
    # A backslash or control character cannot be escaped reliably in a tag value.
    if not site or "\\" in site or any(ord(char) < 32 for char in site):
        raise ValueError(
            f"site_by_meter[{meter_id!r}] = {site!r}: a site must be non-empty, "
            "without backslashes or control characters"
        )
    return site


def _retry_after_s(exc: ApiException) -> float | None:
    """Seconds from a ``Retry-After: <seconds>`` header, if the server sent one."""
    value = getattr(exc, "retry_after", None)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _to_ms(value: object, column: str) -> int:
    if not isinstance(value, datetime):
        raise StoreError(f"query result: column {column!r} is {value!r}, expected a time")
    return (value - _EPOCH) // _ONE_MS


def _optional_float(values: Mapping[str, Any], name: str) -> float | None:
    value = values.get(name)
    return None if value is None else float(cast(float, value))


class InfluxStore:
    """:class:`electrocloud.storage.ReadingStore` on an InfluxDB 2 bucket.

    ``timeout_s`` bounds each HTTP request; a write that keeps failing
    transiently raises after ``retries + 1`` attempts, sleeping
    ``backoff_s * 2**n`` (jittered to 50-100 %, at most ``max_backoff_s``)
    between them with ``sleep``. With the defaults a dead server is reported
    after at most 4 x 10 s + 3.5 s. Thread-safe: the HTTP connection pool is
    shared.
    """

    def __init__(
        self,
        *,
        url: str,
        org: str,
        bucket: str,
        token: str,
        timeout_s: float = 10,
        site_by_meter: Mapping[str, str] | None = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if not bucket:
            raise ValueError("bucket must not be empty")
        self.url = url
        self.org = org
        self.bucket = bucket
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._sites = {
            meter_id: _check_site(meter_id, site)
            for meter_id, site in (site_by_meter or {}).items()
        }
        # retries=False: urllib3 must not retry behind our back (we count attempts).
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()
        # (gateway_id, meter_id) -> escaped series prefix; a plain dict store is atomic.
        self._prefixes: dict[tuple[str, str], str] = {}

    # --- line protocol ---------------------------------------------------------

    def _prefix(self, gateway_id: str, meter_id: str) -> str:
        """``meter,gateway_id=..,meter_id=..,site=..`` (tags sorted by key, as InfluxDB likes)."""
        key = (gateway_id, meter_id)
        prefix = self._prefixes.get(key)
        if prefix is None:
            for what, value in (("gateway_id", gateway_id), ("meter_id", meter_id)):
                if not _ID_RE.match(value):
                    raise StoreRejected(f"{what} {value!r} must match {ID_PATTERN}")
            prefix = f"{flux.MEASUREMENT},gateway_id={gateway_id},meter_id={meter_id}"
            site = self._sites.get(meter_id)
            if site is not None:
                prefix += f",site={site.translate(_TAG_ESCAPES)}"
            self._prefixes[key] = prefix
        return prefix

    def line_protocol(self, readings: Iterable[StoredReading]) -> bytes:
        """The readings as line protocol, ms timestamps; StoreRejected for a non-finite value.

        Formatted directly rather than through ``Point``: 10 000 three-phase
        readings take ~45 ms here against ~205 ms with ``Point`` (CPython 3.11,
        best of 5, see docs/influxdb.md), and ``Point`` silently drops NaN/inf
        fields where this fails loudly.
        """
        lines = []
        isfinite = math.isfinite
        for reading in readings:
            fields = []
            for name, value in zip(_FIELD_PREFIXES, _VALUES_OF(reading), strict=True):
                if value is not None:
                    if not isfinite(value):
                        self._reject_non_finite(reading)
                    fields.append(f"{name}{float(value)!r}")
            fields.append(f"seq={int(reading.seq)}i")
            if reading.flags:
                flags = ",".join(reading.flags).translate(_STRING_FIELD_ESCAPES)
                fields.append(f'flags="{flags}"')
            prefix = self._prefix(reading.gateway_id, reading.meter_id)
            lines.append(f"{prefix} {','.join(fields)} {int(reading.ts_ms)}")
        return "\n".join(lines).encode()

    @staticmethod
    def _reject_non_finite(reading: StoredReading) -> None:
        for name in VALUE_FIELDS:
            value = getattr(reading, name)
            if value is not None and not math.isfinite(value):
                raise StoreRejected(
                    f"meter {reading.meter_id} at ts_ms {reading.ts_ms}: "
                    f"{name} is {value}, not a finite number"
                )

    # --- retry policy ----------------------------------------------------------

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        delay = min(self.backoff_s * 2.0**attempt, self.max_backoff_s)
        return delay * random.uniform(0.5, 1.0)  # jitter: writers do not retry in lockstep

    def _with_retries(self, what: str, call: Callable[[], _T], *, reject: type[StoreError]) -> _T:
        """Run ``call`` under the retry policy; ``reject`` is raised for HTTP 4xx except 429."""
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                return call()
            except ApiException as exc:
                status = int(exc.status or 0)
                message = getattr(exc, "message", None) or exc.reason
                if status in _CONFIGURATION_STATUSES:
                    raise StoreUnavailable(
                        f"{what}: HTTP {status} from {self.url}: {message} "
                        "(check the token, org and bucket)"
                    ) from exc
                if 400 <= status < 500 and status != 429:
                    raise reject(f"{what}: HTTP {status} from {self.url}: {message}") from exc
                problem = f"HTTP {status}: {message}"
                retry_after = _retry_after_s(exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                delay = self._backoff(attempt, retry_after)
                logger.warning(
                    "%s failed (attempt %d of %d, %s); retrying in %.2f s",
                    what,
                    attempt + 1,
                    attempts,
                    problem,
                    delay,
                )
                self._sleep(delay)
        raise StoreUnavailable(f"{what}: {self.url} failed {attempts} times; last: {problem}")

    # --- ReadingStore ----------------------------------------------------------

    def write_batch(self, readings: Sequence[StoredReading]) -> None:
        """Write the batch in one synchronous request; see the module docstring for errors."""
        if not readings:
            return
        body = self.line_protocol(readings)

        def post() -> None:
            self._write_api.write(
                bucket=self.bucket, org=self.org, record=body, write_precision=_PRECISION_MS
            )

        self._with_retries(f"writing {len(readings)} readings", post, reject=StoreRejected)

    def _query(self, what: str, query: str, parse: Callable[[Iterable[Any]], _T]) -> _T:
        def run() -> _T:
            try:
                return parse(self._query_api.query_stream(query, org=self.org))
            except (FluxQueryException, FluxCsvParserException) as exc:
                raise StoreError(f"{what}: the query failed: {exc}") from exc
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(f"{what}: unexpected query result: {exc!r}") from exc

        return self._with_retries(what, run, reject=StoreError)

    def latest(self, meter_ids: Collection[str] | None = None) -> dict[str, StoredReading]:
        if meter_ids is not None and not meter_ids:
            return {}
        query = flux.latest_query(self.bucket, meter_ids)
        readings = self._query("latest readings", query, parse_readings)
        latest: dict[str, StoredReading] = {}
        for reading in readings:
            known = latest.get(reading.meter_id)
            if known is None or reading.ts_ms > known.ts_ms:
                latest[reading.meter_id] = reading
        return latest

    def readings(
        self, meter_ids: Collection[str] | None, start_ms: int, end_ms: int
    ) -> list[StoredReading]:
        if (meter_ids is not None and not meter_ids) or end_ms <= start_ms:
            return []
        query = flux.readings_query(self.bucket, start_ms, end_ms, meter_ids)
        return self._query("reading readings", query, parse_readings)

    def interval_energy(
        self,
        meter_ids: Collection[str] | None,
        start_ms: int,
        end_ms: int,
        interval_ms: int = 900_000,
    ) -> list[IntervalEnergy]:
        if (meter_ids is not None and not meter_ids) or end_ms <= start_ms:
            return []
        query = flux.interval_energy_query(self.bucket, start_ms, end_ms, interval_ms, meter_ids)
        energies = self._query("interval energy", query, parse_interval_energy)
        return _fill_gaps(energies, start_ms, end_ms, interval_ms)

    def boundary_reads(
        self,
        meter_ids: Collection[str] | None,
        start_ms: int,
        end_ms: int,
        interval_ms: int = 900_000,
    ) -> list[BoundaryReads]:
        """See :meth:`electrocloud.storage.ReadingStore.boundary_reads` (one Flux query)."""
        check_window(start_ms, end_ms, interval_ms)
        if meter_ids is not None and not meter_ids:
            return []
        query = flux.boundary_reads_query(
            self.bucket,
            start_ms,
            end_ms,
            interval_ms,
            meter_ids,
            context_reads=BOUNDARY_CONTEXT_READS,
            context_ms=BOUNDARY_CONTEXT_MS,
        )

        def parse(records: Iterable[Any]) -> list[BoundaryReads]:
            return parse_boundary_reads(records, start_ms, end_ms, interval_ms)

        return self._query("boundary reads", query, parse)

    def meter_ids(self) -> list[str]:
        query = flux.meter_ids_query(self.bucket)
        return self._query("meter ids", query, parse_tag_values)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


# --- result parsing ------------------------------------------------------------


def _values(records: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for record in records:
        yield record.values


def parse_readings(records: Iterable[Any]) -> list[StoredReading]:
    """Pivoted rows (one per reading) as StoredReadings, ordered by meter then time.

    A reading stored twice under different tags (its gateway or site changed
    between writes) appears once: the port promises one reading per meter and ts.
    """
    by_key: dict[tuple[str, int], StoredReading] = {}
    for values in _values(records):
        flags = values.get("flags")
        seq = values.get("seq")
        if seq is None:
            raise StoreError(f"query result: a row of meter {values.get('meter_id')} has no seq")
        reading = StoredReading(
            gateway_id=str(values["gateway_id"]),
            meter_id=str(values["meter_id"]),
            ts_ms=_to_ms(values.get("_time"), "_time"),
            seq=int(seq),
            flags=tuple(flags.split(",")) if flags else (),
            **{name: _optional_float(values, name) for name in VALUE_FIELDS},
        )
        by_key[(reading.meter_id, reading.ts_ms)] = reading
    return [by_key[key] for key in sorted(by_key)]


def parse_interval_energy(records: Iterable[Any]) -> list[IntervalEnergy]:
    """Rows of ``interval_energy_query`` (``_time`` = interval start), ordered by meter then time.

    A null difference (a register went backwards, or a meter has no such
    register) counts as 0 kWh.
    """
    energies = [
        IntervalEnergy(
            meter_id=str(values["meter_id"]),
            start_ms=_to_ms(values.get("_time"), "_time"),
            import_kwh=_optional_float(values, "import_kwh") or 0.0,
            export_kwh=_optional_float(values, "export_kwh") or 0.0,
        )
        for values in _values(records)
    ]
    return sorted(energies, key=lambda energy: (energy.meter_id, energy.start_ms))


def _fill_gaps(
    energies: list[IntervalEnergy], start_ms: int, end_ms: int, interval_ms: int
) -> list[IntervalEnergy]:
    """Every interval of each meter from its first reported one to ``end_ms``.

    The query skips windows without readings (their energy lands in the next
    window with readings); they are reported here as 0 kWh, like the SQLite store.
    """
    by_meter: dict[str, dict[int, IntervalEnergy]] = {}
    for energy in energies:
        if start_ms <= energy.start_ms < end_ms:
            by_meter.setdefault(energy.meter_id, {})[energy.start_ms] = energy
    result = []
    for meter_id in sorted(by_meter):
        known = by_meter[meter_id]
        starts = set(range(min(known), end_ms, interval_ms)) | set(known)
        for window_start in sorted(starts):
            empty = IntervalEnergy(meter_id, window_start, import_kwh=0.0, export_kwh=0.0)
            result.append(known.get(window_start, empty))
    return result


def parse_boundary_reads(
    records: Iterable[Any], start_ms: int, end_ms: int, interval_ms: int
) -> list[BoundaryReads]:
    """Pivoted rows of ``boundary_reads_query`` as per-meter register reads.

    The selection is applied again here (idempotent), so the result has exactly
    the port's shape even if the server returned a little more.
    """
    by_meter: dict[str, dict[str, dict[int, int]]] = {}
    for values in _values(records):
        registers = by_meter.setdefault(str(values["meter_id"]), {})
        ts_ms = _to_ms(values.get("_time"), "_time")
        for register in ("import_kwh", "export_kwh"):
            kwh = _optional_float(values, register)
            if kwh is not None:
                registers.setdefault(register, {})[ts_ms] = kwh_to_ukwh(kwh)
    result = []
    for meter_id in sorted(by_meter):
        selected = []
        for register in ("import_kwh", "export_kwh"):
            reads = sorted(by_meter[meter_id].get(register, {}).items())
            before = [read for read in reads if read[0] < start_ms][-BOUNDARY_CONTEXT_READS:]
            after = [read for read in reads if read[0] >= end_ms][:BOUNDARY_CONTEXT_READS]
            inside = [read for read in reads if start_ms <= read[0] < end_ms]
            inside_ts = np.array([t for t, _ in inside], dtype=np.int64)
            keep = first_and_last_per_window(inside_ts, start_ms, interval_ms)
            inside = [read for read, kept in zip(inside, keep, strict=True) if kept]
            chosen = before + inside + after
            selected.append(
                RegisterReads(
                    ts_ms=np.array([t for t, _ in chosen], dtype=np.int64),
                    ukwh=np.array([v for _, v in chosen], dtype=np.int64),
                )
            )
        result.append(BoundaryReads(meter_id, selected[0], selected[1]))
    return result


def parse_tag_values(records: Iterable[Any]) -> list[str]:
    """The ``_value`` column of ``schema.tagValues()``, sorted."""
    return sorted({str(values["_value"]) for values in _values(records)})


__all__ = [
    "InfluxStore",
    "parse_boundary_reads",
    "parse_interval_energy",
    "parse_readings",
    "parse_tag_values",
]
