"""Test helpers for the edge publisher: a recording MQTT subscriber and sample data.

The recorder is a real paho-mqtt 2.x client with a persistent session (clean
session off, QoS 1), so it also receives what was published while it was
reconnecting after a broker restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.sample import MeterSample
from electrocloud.contract import (
    GatewayStatus,
    Reading,
    ReadingBatch,
    decode_batch,
    decode_status,
    parse_readings_topic,
)

BASE_TS_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def make_sample(meter_id: str, index: int) -> MeterSample:
    """A deterministic sample: its values say which meter and which read it was."""
    return MeterSample(
        meter_id=meter_id,
        ts_ms=BASE_TS_MS + index * 1000,
        values={
            "import_kwh": 1000.0 + index * 0.125,
            "power_w": -350.0 + index,
            "voltage_v.l1": 230.0 + (index % 7) * 0.5,
            "current_a.l1": 1.5,
            "frequency_hz": 50.0,
        },
    )


def expected_reading(meter_id: str, index: int) -> Reading:
    """What a fresh queue stores for the ``index``-th sample of a meter (seq == index)."""
    return make_sample(meter_id, index).to_reading(index)


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or condition}")
        time.sleep(0.02)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Recorder:
    """Subscribes to every electrocloud topic and records each message received."""

    def __init__(
        self,
        port: int,
        *,
        persistent: bool = True,
        tls: tuple[Path, Path, Path] | None = None,  # ca, cert, key
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-recorder-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("test recorder could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe("electrocloud/#", qos=1)

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- views -------------------------------------------------------------------

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def batches(self) -> list[ReadingBatch]:
        out = []
        for message in self.snapshot():
            if message.topic.endswith("/readings"):
                batch = decode_batch(message.payload, now_ms=-1)
                assert parse_readings_topic(message.topic) == (batch.gateway_id, batch.meter_id)
                out.append(batch)
        return out

    def readings(self) -> dict[str, list[Reading]]:
        """Every reading received, per meter, in arrival order (duplicates included)."""
        per_meter: dict[str, list[Reading]] = {}
        for batch in self.batches():
            per_meter.setdefault(batch.meter_id, []).extend(batch.readings)
        return per_meter

    def distinct_count(self) -> int:
        return sum(len({r.seq for r in rs}) for rs in self.readings().values())

    def statuses(self) -> list[GatewayStatus]:
        return [decode_status(m.payload) for m in self.snapshot() if m.topic.endswith("/status")]

    def retained_statuses(self) -> list[GatewayStatus]:
        return [
            decode_status(m.payload)
            for m in self.snapshot()
            if m.topic.endswith("/status") and m.retain
        ]


def check_delivery(received: dict[str, list[Reading]], expected_counts: dict[str, int]) -> int:
    """Assert every expected reading arrived, first deliveries in seq order, content exact.

    A reading received again must be identical to its first delivery (an exact
    redelivery). Returns the number of such duplicates.
    """
    assert set(received) == set(expected_counts)
    duplicates = 0
    for meter_id, count in expected_counts.items():
        first: dict[int, Reading] = {}
        order: list[int] = []
        for reading in received[meter_id]:
            if reading.seq in first:
                assert reading == first[reading.seq], f"{meter_id} seq {reading.seq} changed"
                duplicates += 1
            else:
                first[reading.seq] = reading
                order.append(reading.seq)
        assert order == list(range(count)), f"{meter_id}: seqs missing or out of order"
        for seq, reading in first.items():
            assert reading == expected_reading(meter_id, seq)
    return duplicates
