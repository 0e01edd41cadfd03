"""Checks one MQTT message against the wire contract and the meter registry."""

from __future__ import annotations

from backend.registry import MeterRegistry
from electrocloud.contract import Reason, decode_batch, parse_readings_topic
from electrocloud.errors import ContractError
from electrocloud.storage import StoredReading


def validate_message(
    topic: str,
    payload: bytes,
    *,
    now_ms: int,
    max_future_ms: int,
    registry: MeterRegistry,
) -> list[StoredReading]:
    """The readings of a valid message; ContractError with the reason otherwise.

    The payload must decode (``decode_batch`` with the receive time), its ids must
    equal the topic's, and the registry must allow that meter from that gateway.
    """
    topic_gateway, topic_meter = parse_readings_topic(topic)
    batch = decode_batch(payload, now_ms=now_ms, max_future_ms=max_future_ms)
    if (batch.gateway_id, batch.meter_id) != (topic_gateway, topic_meter):
        raise ContractError(
            Reason.TOPIC_MISMATCH,
            f"payload is gateway {batch.gateway_id!r} meter {batch.meter_id!r}, "
            f"topic says gateway {topic_gateway!r} meter {topic_meter!r}",
        )
    registry.check(batch.gateway_id, batch.meter_id)
    return [
        StoredReading.from_contract(batch.gateway_id, batch.meter_id, reading)
        for reading in batch.readings
    ]
