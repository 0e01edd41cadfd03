"""The storage port: the one interface between ingestion and its readers.

The backend writes through it; billing, the demo and the CLI read through it.
Adapters: ``electrocloud.stores.sqlite.SqliteStore`` (embedded default) and
``electrocloud.stores.influx.InfluxStore`` (InfluxDB 2). Everything here is
synchronous and thread-safe per adapter instance; async callers run it in a
worker thread.

Semantics every adapter guarantees:

- ``write_batch`` is durable when it returns and idempotent: a reading with the
  same ``(meter_id, ts_ms)`` as a stored one overwrites it, never duplicates it.
- Time ranges are half-open ``[start_ms, end_ms)``, UTC milliseconds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from electrocloud.contract import Reading
from electrocloud.errors import ElectroCloudError


class StoreError(ElectroCloudError):
    """Root of storage errors."""


class StoreUnavailable(StoreError):
    """Transient: the store cannot be reached or is overloaded. Retry later."""


class StoreRejected(StoreError):
    """Permanent: the store refused the data itself (e.g. HTTP 4xx). Dead-letter it."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One reading as stored: the contract reading flattened, with its ids."""

    gateway_id: str
    meter_id: str
    ts_ms: int  # meter-side UTC time of the read
    seq: int
    import_kwh: float | None = None
    export_kwh: float | None = None
    power_w: float | None = None  # signed: negative = export
    voltage_l1_v: float | None = None
    voltage_l2_v: float | None = None
    voltage_l3_v: float | None = None
    current_l1_a: float | None = None
    current_l2_a: float | None = None
    current_l3_a: float | None = None
    frequency_hz: float | None = None
    power_factor: float | None = None
    flags: tuple[str, ...] = ()

    @classmethod
    def from_contract(cls, gateway_id: str, meter_id: str, reading: Reading) -> StoredReading:
        voltage = reading.voltage_v
        current = reading.current_a
        return cls(
            gateway_id=gateway_id,
            meter_id=meter_id,
            ts_ms=reading.ts_ms,
            seq=reading.seq,
            import_kwh=reading.import_kwh,
            export_kwh=reading.export_kwh,
            power_w=reading.power_w,
            voltage_l1_v=voltage.l1 if voltage else None,
            voltage_l2_v=voltage.l2 if voltage else None,
            voltage_l3_v=voltage.l3 if voltage else None,
            current_l1_a=current.l1 if current else None,
            current_l2_a=current.l2 if current else None,
            current_l3_a=current.l3 if current else None,
            frequency_hz=reading.frequency_hz,
            power_factor=reading.power_factor,
            flags=tuple(str(flag) for flag in reading.flags),
        )


#: The value columns of :class:`StoredReading`, in a stable order (ids, ts and seq excluded).
VALUE_FIELDS: tuple[str, ...] = (
    "import_kwh",
    "export_kwh",
    "power_w",
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
    "frequency_hz",
    "power_factor",
)


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    """Energy of one meter in one interval ``[start_ms, start_ms + interval)``, kWh."""

    meter_id: str
    start_ms: int
    import_kwh: float
    export_kwh: float


#: Billing reads registers in whole micro-kWh (10⁻⁶ kWh = 1 mWh): exact integer arithmetic.
UKWH_PER_KWH = 1_000_000

#: Reads kept on each side of a ``boundary_reads`` range, per register (VEE needs neighbours).
BOUNDARY_CONTEXT_READS = 2
#: How far before and after a range the context reads are searched for.
BOUNDARY_CONTEXT_MS = 400 * 86_400_000


def kwh_to_ukwh(kwh: float) -> int:
    """``kwh`` in whole micro-kWh, rounded half away from zero exactly like SQLite ``round()``."""
    scaled = kwh * 1_000_000.0
    return int(scaled + 0.5) if scaled >= 0 else -int(-scaled + 0.5)


@dataclass(frozen=True, eq=False)
class RegisterReads:
    """Reads of one cumulative register of one meter: ascending unique times, values in µkWh."""

    ts_ms: NDArray[np.int64]
    ukwh: NDArray[np.int64]

    @classmethod
    def empty(cls) -> RegisterReads:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(frozen=True, eq=False)
class BoundaryReads:
    """The reads of one meter that fix its registers at every interval boundary of a range.

    See :meth:`ReadingStore.boundary_reads` for which reads these are.
    """

    meter_id: str
    import_register: RegisterReads
    export_register: RegisterReads


def first_and_last_per_window(
    ts_ms: NDArray[np.int64], start_ms: int, interval_ms: int
) -> NDArray[np.bool_]:
    """Mask of the first and the last read of each window ``[start + k*i, start + (k+1)*i)``.

    ``ts_ms`` must be ascending. The register at a window boundary lies between
    the last read before it and the first read at or after it, so these reads
    are all that interpolation needs; the reads between them only repeat it.
    """
    if len(ts_ms) == 0:
        return np.zeros(0, dtype=np.bool_)
    window = (ts_ms - start_ms) // interval_ms
    change = window[1:] != window[:-1]
    keep = np.ones(len(ts_ms), dtype=np.bool_)
    keep[1:-1] = change[:-1] | change[1:]
    return keep


def check_window(start_ms: int, end_ms: int, interval_ms: int) -> None:
    """ValueError unless ``[start_ms, end_ms)`` is a non-empty range of positive intervals."""
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be positive, got {interval_ms}")
    if end_ms <= start_ms:
        raise ValueError(f"end_ms ({end_ms}) must be after start_ms ({start_ms})")


class ReadingStore(Protocol):
    """What ingestion writes to and billing reads from."""

    def write_batch(self, readings: Sequence[StoredReading]) -> None:
        """Store readings durably and idempotently (same meter and ts overwrites)."""

    def latest(self, meter_ids: Collection[str] | None = None) -> dict[str, StoredReading]:
        """The newest reading of each meter (all meters when ``meter_ids`` is None)."""

    def readings(
        self, meter_ids: Collection[str] | None, start_ms: int, end_ms: int
    ) -> list[StoredReading]:
        """Readings in ``[start_ms, end_ms)``, ordered by meter then time."""

    def interval_energy(
        self,
        meter_ids: Collection[str] | None,
        start_ms: int,
        end_ms: int,
        interval_ms: int = 900_000,
    ) -> list[IntervalEnergy]:
        """Import/export energy per meter per interval from the cumulative registers."""

    def boundary_reads(
        self,
        meter_ids: Collection[str] | None,
        start_ms: int,
        end_ms: int,
        interval_ms: int = 900_000,
    ) -> list[BoundaryReads]:
        """Per meter and register, the reads that fix the register at each boundary.

        Boundaries are ``start_ms + k * interval_ms`` and ``end_ms``. Per register
        (reads where it is not null), in ascending time: the last
        :data:`BOUNDARY_CONTEXT_READS` reads before ``start_ms``, the first and
        the last read of each window ``[start + k*i, start + (k+1)*i)`` inside
        ``[start_ms, end_ms)``, and the first :data:`BOUNDARY_CONTEXT_READS`
        reads at or after ``end_ms`` (context reads within
        :data:`BOUNDARY_CONTEXT_MS` of the range). Values are whole µkWh
        (:func:`kwh_to_ukwh`). Meters without any such read are left out;
        ordered by meter id.
        """

    def meter_ids(self) -> list[str]:
        """Every meter with at least one stored reading."""

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
