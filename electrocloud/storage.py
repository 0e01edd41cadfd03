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

    def meter_ids(self) -> list[str]:
        """Every meter with at least one stored reading."""

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
