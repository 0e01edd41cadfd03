"""Wire contract v1: MQTT topics and JSON payloads between edge and backend.

Documented with examples in ``docs/wire-contract.md``. Every producer encodes
with :func:`encode_batch`, every consumer decodes with :func:`decode_batch`;
both sides therefore apply exactly the same rules.

Units and signs live in the field names:

- ``import_kwh`` / ``export_kwh``: cumulative energy registers, kWh, never negative;
- ``power_w``: total active power, W, signed; negative means export to the grid;
- ``voltage_v`` / ``current_a``: per phase (``l1``..``l3``), absent phases omitted;
- ``frequency_hz``; ``power_factor`` in [-1, 1].

``ts_ms`` is the meter-side UTC time of the read in milliseconds since the epoch
(when the gateway read the meter, never when a server received it). ``seq`` grows
by one per reading of a meter and survives agent restarts, so ``(meter_id, seq)``
identifies a reading and gaps are visible.
"""

from __future__ import annotations

import re
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from electrocloud.errors import ContractError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
TOPIC_ROOT = "electrocloud/v1"

#: Ids become MQTT topic levels and database tags: keep them to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

#: Largest payload accepted, bytes. A 60-reading batch of a three-phase meter is ~20 kB.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_BATCH = 1000
#: How far a device timestamp may lead the receiver's clock before it is rejected.
DEFAULT_MAX_FUTURE_MS = 5 * 60 * 1000

READINGS_QOS = 1
STATUS_QOS = 1


class Reason(StrEnum):
    """Machine-readable rejection reasons (stable: used in dead letters and metrics)."""

    INVALID_JSON = "invalid_json"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    INVALID_ID = "invalid_id"
    NON_FINITE_VALUE = "non_finite_value"
    NEGATIVE_ENERGY = "negative_energy"
    POWER_FACTOR_OUT_OF_RANGE = "power_factor_out_of_range"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    SEQUENCE_NOT_INCREASING = "sequence_not_increasing"
    INVALID_FIELD = "invalid_field"
    TOPIC_MISMATCH = "topic_mismatch"  # topic ids differ from the payload's
    WRONG_GATEWAY = "wrong_gateway"  # the meter registry pins this meter to another gateway
    UNKNOWN_METER = "unknown_meter"  # strict registry: meter not registered


class Flag(StrEnum):
    """Quality flags an edge agent attaches to a reading."""

    IMPORT_KWH_DECREASED = "import_kwh_decreased"  # register went backwards: reset or rollover
    EXPORT_KWH_DECREASED = "export_kwh_decreased"
    VALUE_DROPPED = "value_dropped"  # an implausible value was removed; see ``dropped``


_REASON_BY_PYDANTIC_TYPE = {
    "finite_number": Reason.NON_FINITE_VALUE,
    "json_invalid": Reason.INVALID_JSON,
    "json_type": Reason.INVALID_JSON,
}


def _fail(reason: Reason, message: str) -> PydanticCustomError:
    return PydanticCustomError(reason.value, message)


#: Checked against ID_PATTERN by validators so every bad id reports ``invalid_id``.
DeviceId = str


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhaseValues(_Frozen):
    """Per-phase values; a phase the meter does not have is omitted."""

    l1: FiniteFloat | None = None
    l2: FiniteFloat | None = None
    l3: FiniteFloat | None = None


class Reading(_Frozen):
    """One read of one meter."""

    ts_ms: int = Field(ge=0, description="meter-side UTC time of the read, ms since epoch")
    seq: int = Field(ge=0, description="per-meter sequence number, +1 per reading")
    import_kwh: FiniteFloat | None = None
    export_kwh: FiniteFloat | None = None
    power_w: FiniteFloat | None = None  # signed: negative = export
    voltage_v: PhaseValues | None = None
    current_a: PhaseValues | None = None
    frequency_hz: FiniteFloat | None = None
    power_factor: FiniteFloat | None = None
    flags: tuple[Flag, ...] = ()
    dropped: tuple[str, ...] = ()  # names of implausible values the edge removed

    @field_validator("import_kwh", "export_kwh")
    @classmethod
    def _energy_not_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise _fail(Reason.NEGATIVE_ENERGY, "cumulative energy cannot be negative")
        return value

    @field_validator("power_factor")
    @classmethod
    def _power_factor_range(cls, value: float | None) -> float | None:
        if value is not None and not -1.0 <= value <= 1.0:
            raise _fail(Reason.POWER_FACTOR_OUT_OF_RANGE, "power factor must be in [-1, 1]")
        return value

    @field_validator("ts_ms")
    @classmethod
    def _not_in_future(cls, value: int, info: ValidationInfo) -> int:
        context = info.context or {}
        now_ms = context.get("now_ms")
        if now_ms is not None:
            max_future = context.get("max_future_ms", DEFAULT_MAX_FUTURE_MS)
            if value > now_ms + max_future:
                raise _fail(
                    Reason.TIMESTAMP_IN_FUTURE,
                    f"timestamp leads the receiver's clock by {(value - now_ms) / 1000:.0f} s",
                )
        return value


class ReadingBatch(_Frozen):
    """The payload of ``electrocloud/v1/<gateway_id>/<meter_id>/readings``."""

    schema_version: Literal[1]
    gateway_id: DeviceId
    meter_id: DeviceId
    readings: tuple[Reading, ...] = Field(min_length=1, max_length=MAX_READINGS_PER_BATCH)

    @field_validator("gateway_id", "meter_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise _fail(Reason.INVALID_ID, f"id must match {ID_PATTERN}")
        return value

    @model_validator(mode="after")
    def _sequence_increases(self) -> ReadingBatch:
        previous = -1
        for reading in self.readings:
            if reading.seq <= previous:
                raise _fail(
                    Reason.SEQUENCE_NOT_INCREASING,
                    f"seq {reading.seq} follows {previous} in the same batch",
                )
            previous = reading.seq
        return self


class GatewayStatus(_Frozen):
    """Retained payload of ``electrocloud/v1/<gateway_id>/status`` (offline = Last Will)."""

    schema_version: Literal[1]
    gateway_id: DeviceId
    state: Literal["online", "offline"]
    ts_ms: int = Field(ge=0)
    agent_version: str | None = None
    # Store-and-forward backlog when the status was sent (republished periodically
    # while online), so operators see a gateway falling behind before data ages.
    queue_depth: int | None = Field(default=None, ge=0)
    oldest_queued_ts_ms: int | None = Field(default=None, ge=0)  # meter time, UTC ms


# --- topics -----------------------------------------------------------------


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid gateway/meter id, else raise ContractError."""
    if not _ID_RE.match(value):
        raise ContractError(Reason.INVALID_ID, f"{what} {value!r} must match {ID_PATTERN}")
    return value


def readings_topic(gateway_id: str, meter_id: str) -> str:
    gateway = check_id(gateway_id, "gateway_id")
    return f"{TOPIC_ROOT}/{gateway}/{check_id(meter_id, 'meter_id')}/readings"


def status_topic(gateway_id: str) -> str:
    return f"{TOPIC_ROOT}/{check_id(gateway_id, 'gateway_id')}/status"


def readings_subscription(share_group: str | None = None) -> str:
    """Topic filter matching every gateway's readings, optionally as an MQTT v5 shared one."""
    topic_filter = f"{TOPIC_ROOT}/+/+/readings"
    return f"$share/{share_group}/{topic_filter}" if share_group else topic_filter


def parse_readings_topic(topic: str) -> tuple[str, str]:
    """Split a readings topic into ``(gateway_id, meter_id)``; ContractError if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != "readings":
        raise ContractError(Reason.TOPIC_MISMATCH, f"{topic!r} is not a readings topic")
    return check_id(parts[2], "gateway_id"), check_id(parts[3], "meter_id")


# --- encoding ---------------------------------------------------------------


def encode_batch(batch: ReadingBatch) -> bytes:
    """Serialise a batch compactly (absent values omitted)."""
    return batch.model_dump_json(exclude_none=True, exclude_defaults=False).encode()


def encode_status(status: GatewayStatus) -> bytes:
    return status.model_dump_json(exclude_none=True).encode()


def _field_path(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _reason_for(error: Any) -> Reason:
    kind = str(error["type"])
    if kind in Reason.__members__.values():
        return Reason(kind)
    loc = error.get("loc", ())
    if loc and loc[-1] == "schema_version":
        return Reason.UNKNOWN_SCHEMA_VERSION
    return _REASON_BY_PYDANTIC_TYPE.get(kind, Reason.INVALID_FIELD)


def decode_batch(
    payload: bytes | str,
    *,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> ReadingBatch:
    """Parse and validate a readings payload.

    ``now_ms`` is the receiver's clock (defaults to the system clock); pass
    ``now_ms=-1`` only in tools that must accept any timestamp (replays).
    Raises :class:`ContractError` with the first problem's reason.
    """
    size = len(payload)
    if size > max_bytes:
        raise ContractError(Reason.PAYLOAD_TOO_LARGE, f"{size} bytes exceeds {max_bytes}")
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    context = None if now_ms < 0 else {"now_ms": now_ms, "max_future_ms": max_future_ms}
    try:
        # strict: a string "1.5" where a number belongs is a producer bug, not a value.
        return ReadingBatch.model_validate_json(payload, strict=True, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # An unknown version makes every other error moot: report it first.
        ranked = sorted(errors, key=lambda e: _reason_for(e) != Reason.UNKNOWN_SCHEMA_VERSION)
        first = ranked[0]
        reason = _reason_for(first)
        field = _field_path(tuple(first.get("loc", ()))) or None
        extra = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ContractError(reason, f"{first['msg']}{extra}", field=field) from None


def decode_status(payload: bytes | str) -> GatewayStatus:
    try:
        return GatewayStatus.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ContractError(
            _reason_for(first), first["msg"], field=_field_path(tuple(first["loc"])) or None
        ) from None
