"""A stream mixing good and bad messages: the bad ones are dead-lettered, the good ones stored."""

from __future__ import annotations

import json
import time
from pathlib import Path

from backend_support import (
    InProcessBackend,
    Publisher,
    backend_config,
    base_ms,
    batch_payload,
    make_readings,
    stored,
    wait_until,
)
from services import MosquittoBroker

from backend.dead_letters import DeadLetterStore
from electrocloud.contract import MAX_PAYLOAD_BYTES, Reading, Reason, readings_topic
from electrocloud.stores.sqlite import SqliteStore

REGISTRY = """
strict: true
meters:
  m-1: {gateway_id: gw-1, site: "Building A"}
  m-2: {gateway_id: gw-1}
  m-3: {gateway_id: gw-2}
  m-9: {gateway_id: gw-9}
"""

GOOD_METERS = [("gw-1", "m-1"), ("gw-1", "m-2"), ("gw-2", "m-3")]


def good_json(gateway_id: str, meter_id: str, **reading: object) -> dict[str, object]:
    base = {"ts_ms": base_ms(), "seq": 1, "import_kwh": 1.0, "power_w": 0.5}
    return {
        "schema_version": 1,
        "gateway_id": gateway_id,
        "meter_id": meter_id,
        "readings": [{**base, **reading}],
    }


def test_bad_messages_are_dead_lettered_with_their_reason_and_good_ones_stored(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    registry = tmp_path / "meters.yaml"
    registry.write_text(REGISTRY)
    config = backend_config(
        tmp_path,
        mosquitto.port,
        name="validation",
        registry=registry,
        dead_letter={"path": str(tmp_path / "dead.sqlite"), "max_payload_bytes": 1024},
        batch={"max_readings": 1000, "max_delay_ms": 100},
    )
    topic = readings_topic
    oversized = json.dumps(good_json("gw-1", "m-1", colour="x" * MAX_PAYLOAD_BYTES)).encode()
    nan = json.dumps(good_json("gw-1", "m-1", power_w=0.5)).encode().replace(b"0.5", b"NaN")
    bad: list[tuple[str, bytes, str]] = [
        (topic("gw-1", "m-1"), b'{"schema_version": 1, "gateway_id": ', Reason.INVALID_JSON),
        (
            topic("gw-1", "m-1"),
            json.dumps(good_json("gw-1", "m-1", import_kwh="12.5")).encode(),
            Reason.INVALID_FIELD,
        ),
        (topic("gw-1", "m-1"), nan, Reason.NON_FINITE_VALUE),
        (
            topic("gw-2", "m-1"),  # payload says gw-1
            json.dumps(good_json("gw-1", "m-1")).encode(),
            Reason.TOPIC_MISMATCH,
        ),
        (
            topic("gw-1", "m-9"),  # the registry pins m-9 to gw-9
            json.dumps(good_json("gw-1", "m-9")).encode(),
            Reason.WRONG_GATEWAY,
        ),
        (
            topic("gw-1", "m-404"),  # strict registry
            json.dumps(good_json("gw-1", "m-404")).encode(),
            Reason.UNKNOWN_METER,
        ),
        (topic("gw-1", "m-1"), oversized, Reason.PAYLOAD_TOO_LARGE),
        (
            topic("gw-1", "m-1"),
            json.dumps({**good_json("gw-1", "m-1"), "schema_version": 2}).encode(),
            Reason.UNKNOWN_SCHEMA_VERSION,
        ),
        (
            topic("gw-1", "m-1"),
            json.dumps(good_json("gw-1", "m-1", ts_ms=int(time.time() * 1000) + 3600_000)).encode(),
            Reason.TIMESTAMP_IN_FUTURE,
        ),
        ("electrocloud/v1/gw 1/m-1/readings", b"{}", Reason.INVALID_ID),
        (
            # Valid by the contract, but beyond SQLite's 64-bit integers: the store refuses it.
            topic("gw-1", "m-2"),
            batch_payload("gw-1", "m-2", [Reading(ts_ms=base_ms() + 7, seq=2**63, import_kwh=1.0)]),
            "store_rejected",
        ),
    ]
    good: list[tuple[str, str, list[Reading]]] = [
        (gateway, meter, make_readings(index, 10 * batch, 10, base_ms()))
        for batch in range(4)
        for index, (gateway, meter) in enumerate(
            [("gw-1", "m-1"), ("gw-1", "m-2"), ("gw-2", "m-3")]
        )
    ]

    with InProcessBackend(tmp_path, config) as backend:
        publisher = Publisher(mosquitto.port)
        # Interleave: a bad message between good ones, so they share batches.
        for i in range(max(len(bad), len(good))):
            if i < len(good):
                publisher.publish_batch(*good[i])
            if i < len(bad):
                publisher.publish(bad[i][0], bad[i][1], wait=False)
        publisher.close()

        store = SqliteStore(tmp_path / "readings.sqlite")
        dead = DeadLetterStore(tmp_path / "dead.sqlite")
        wait_until(lambda: len(dead.letters()) == len(bad), what="every bad message dead-lettered")
        wait_until(lambda: store.count() == 120, what="every good reading stored")
        metrics = backend.service.metrics

        letters = dead.letters()
        assert sorted((letter.topic, letter.reason) for letter in letters) == sorted(
            (t, str(reason)) for t, _, reason in bad
        )
        assert all(letter.detail for letter in letters)
        big = next(letter for letter in letters if letter.reason == Reason.PAYLOAD_TOO_LARGE)
        assert big.payload_size == len(oversized)
        assert big.payload == oversized[:1024]  # kept, bounded
        small = next(letter for letter in letters if letter.reason == Reason.INVALID_JSON)
        assert small.payload == bad[0][1]

        for _, _, reason in bad:
            sample = metrics.registry.get_sample_value(
                "electrocloud_backend_messages_rejected_total", {"reason": str(reason)}
            )
            assert sample == 1, reason

        expected = sorted(
            (r for g, m, readings in good for r in stored(g, m, readings)),
            key=lambda r: (r.meter_id, r.ts_ms),
        )
        assert store.readings(None, 0, 2**62) == expected
        store.close()
        dead.close()
