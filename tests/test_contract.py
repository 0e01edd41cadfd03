"""Wire contract v1: every rejection reason, round trips and topics."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from electrocloud.contract import (
    MAX_PAYLOAD_BYTES,
    GatewayStatus,
    PhaseValues,
    Reading,
    ReadingBatch,
    Reason,
    decode_batch,
    decode_status,
    encode_batch,
    encode_status,
    parse_readings_topic,
    readings_subscription,
    readings_topic,
    status_topic,
)
from electrocloud.errors import ContractError

NOW_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def good_payload(**reading_overrides: object) -> dict[str, object]:
    reading: dict[str, object] = {
        "ts_ms": NOW_MS - 1000,
        "seq": 7,
        "import_kwh": 1234.5,
        "export_kwh": 12.25,
        "power_w": -350.0,
        "voltage_v": {"l1": 231.0, "l2": 229.5, "l3": 230.1},
        "current_a": {"l1": 1.5, "l2": 0.2, "l3": 0.0},
        "frequency_hz": 50.01,
        "power_factor": 0.97,
    }
    reading.update(reading_overrides)
    return {"schema_version": 1, "gateway_id": "gw-01", "meter_id": "m_0001", "readings": [reading]}


def reject(payload: object, **kwargs: int) -> ContractError:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(ContractError) as info:
        decode_batch(raw, now_ms=NOW_MS, **kwargs)
    return info.value


def test_good_payload_round_trips() -> None:
    batch = decode_batch(json.dumps(good_payload()).encode(), now_ms=NOW_MS)
    assert batch.readings[0].power_w == -350.0
    assert batch.readings[0].voltage_v == PhaseValues(l1=231.0, l2=229.5, l3=230.1)
    assert decode_batch(encode_batch(batch), now_ms=NOW_MS) == batch


def test_absent_phases_are_omitted_on_the_wire() -> None:
    reading = Reading(ts_ms=1, seq=0, voltage_v=PhaseValues(l1=230.0))
    batch = ReadingBatch(schema_version=1, gateway_id="g", meter_id="m", readings=(reading,))
    wire = json.loads(encode_batch(batch))
    assert wire["readings"][0]["voltage_v"] == {"l1": 230.0}
    assert "export_kwh" not in wire["readings"][0]


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b"{not json", Reason.INVALID_JSON, None),
        ({**good_payload(), "schema_version": 2}, Reason.UNKNOWN_SCHEMA_VERSION, "schema_version"),
        ({**good_payload(), "gateway_id": "gw/01"}, Reason.INVALID_ID, "gateway_id"),
        ({**good_payload(), "meter_id": "m" * 65}, Reason.INVALID_ID, "meter_id"),
        ({**good_payload(), "meter_id": "m+1"}, Reason.INVALID_ID, "meter_id"),
        (good_payload(import_kwh=-0.001), Reason.NEGATIVE_ENERGY, "readings[0].import_kwh"),
        (good_payload(export_kwh=-5.0), Reason.NEGATIVE_ENERGY, "readings[0].export_kwh"),
        (
            good_payload(power_factor=1.01),
            Reason.POWER_FACTOR_OUT_OF_RANGE,
            "readings[0].power_factor",
        ),
        (
            good_payload(power_factor=-1.5),
            Reason.POWER_FACTOR_OUT_OF_RANGE,
            "readings[0].power_factor",
        ),
        (good_payload(ts_ms=NOW_MS + 3_600_000), Reason.TIMESTAMP_IN_FUTURE, "readings[0].ts_ms"),
        (good_payload(import_kwh="1.5"), Reason.INVALID_FIELD, "readings[0].import_kwh"),
        (good_payload(ts_ms=1.5), Reason.INVALID_FIELD, "readings[0].ts_ms"),
        (good_payload(seq=-1), Reason.INVALID_FIELD, "readings[0].seq"),
        (good_payload(colour="red"), Reason.INVALID_FIELD, "readings[0].colour"),
        (good_payload(flags=["bogus"]), Reason.INVALID_FIELD, "readings[0].flags[0]"),
        ({**good_payload(), "readings": []}, Reason.INVALID_FIELD, "readings"),
        ([1, 2], Reason.INVALID_FIELD, None),
    ],
)
def test_rejections_name_reason_and_field(
    payload: object, reason: Reason, field: str | None
) -> None:
    error = reject(payload)
    assert error.reason == reason
    assert error.field == field


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_values_are_rejected(token: bytes) -> None:
    raw = json.dumps(good_payload(power_w=0.5)).encode().replace(b"0.5", token)
    error = reject(raw)
    assert error.reason == Reason.NON_FINITE_VALUE
    assert error.field == "readings[0].power_w"


def test_non_finite_value_in_a_phase_is_rejected() -> None:
    raw = json.dumps(good_payload()).encode().replace(b"229.5", b"NaN")
    assert reject(raw).reason == Reason.NON_FINITE_VALUE


def test_oversized_payload_is_rejected_before_parsing() -> None:
    raw = b" " * (MAX_PAYLOAD_BYTES + 1)
    assert reject(raw).reason == Reason.PAYLOAD_TOO_LARGE


def test_sequence_must_increase_within_a_batch() -> None:
    payload = good_payload()
    first = payload["readings"][0]  # type: ignore[index]
    payload["readings"] = [first, {**first, "ts_ms": NOW_MS, "seq": 7}]
    assert reject(payload).reason == Reason.SEQUENCE_NOT_INCREASING


def test_future_tolerance_is_configurable() -> None:
    raw = json.dumps(good_payload(ts_ms=NOW_MS + 60_000)).encode()
    assert decode_batch(raw, now_ms=NOW_MS).readings[0].ts_ms == NOW_MS + 60_000
    with pytest.raises(ContractError) as info:
        decode_batch(raw, now_ms=NOW_MS, max_future_ms=30_000)
    assert info.value.reason == Reason.TIMESTAMP_IN_FUTURE


def test_unknown_version_wins_over_other_errors() -> None:
    payload = {**good_payload(import_kwh=-1.0), "schema_version": 99}
    assert reject(payload).reason == Reason.UNKNOWN_SCHEMA_VERSION


def test_topics() -> None:
    assert readings_topic("gw-01", "m1") == "electrocloud/v1/gw-01/m1/readings"
    assert status_topic("gw-01") == "electrocloud/v1/gw-01/status"
    assert parse_readings_topic("electrocloud/v1/gw-01/m1/readings") == ("gw-01", "m1")
    assert readings_subscription("grp") == "$share/grp/electrocloud/v1/+/+/readings"
    for bad in ("electrocloud/v1/gw/m1/status", "electrocloud/v2/gw/m1/readings", "a/b"):
        with pytest.raises(ContractError):
            parse_readings_topic(bad)
    with pytest.raises(ContractError) as info:
        readings_topic("gw/x", "m1")
    assert info.value.reason == Reason.INVALID_ID


def test_status_round_trip_and_rejection() -> None:
    status = GatewayStatus(schema_version=1, gateway_id="gw", state="offline", ts_ms=5)
    assert decode_status(encode_status(status)) == status
    with pytest.raises(ContractError):
        decode_status(b'{"schema_version": 1, "gateway_id": "gw", "state": "asleep", "ts_ms": 1}')


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(
    seqs=st.lists(st.integers(0, 2**40), min_size=1, max_size=20, unique=True),
    energy=st.floats(0, 1e9, allow_nan=False),
    power=finite,
    pf=st.floats(-1, 1),
)
def test_any_valid_batch_round_trips(
    seqs: list[int], energy: float, power: float, pf: float
) -> None:
    readings = tuple(
        Reading(ts_ms=NOW_MS - i, seq=s, import_kwh=energy, power_w=power, power_factor=pf)
        for i, s in enumerate(sorted(seqs))
    )
    batch = ReadingBatch(schema_version=1, gateway_id="g", meter_id="m", readings=readings)
    decoded = decode_batch(encode_batch(batch), now_ms=NOW_MS)
    assert decoded == batch
    assert all(math.isfinite(r.power_w or 0.0) for r in decoded.readings)
