"""The broker restarts under a running backend: it reconnects and the session carries on."""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_support import (
    BackendProcess,
    Publisher,
    backend_config,
    base_ms,
    make_readings,
    stored,
    wait_until,
)
from services import MosquittoBroker

from electrocloud.stores.sqlite import SqliteStore

pytestmark = pytest.mark.slow


def test_backend_survives_a_broker_restart_without_loss(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    backend = BackendProcess(
        tmp_path, backend_config(tmp_path, mosquitto.port, name="a"), "a"
    ).start()
    try:
        backend.wait_ready()
        base = base_ms()
        before = [make_readings(1, 10 * i, 10, base) for i in range(5)]
        after = [make_readings(1, 50 + 10 * i, 10, base) for i in range(5)]
        publisher = Publisher(mosquitto.port)
        for readings in before:
            publisher.publish_batch("gw-1", "m-1", readings)
        publisher.close()
        store = SqliteStore(tmp_path / "readings.sqlite")
        wait_until(lambda: store.count() == 50, what="the first 50 readings")

        mosquitto.stop()
        wait_until(lambda: not backend.ready(), what="/readyz reporting the lost broker")
        assert backend.metric("electrocloud_backend_mqtt_connected") == 0
        mosquitto.start()
        backend.wait_ready()  # reconnected and subscribed again

        publisher = Publisher(mosquitto.port)
        for readings in after:
            publisher.publish_batch("gw-1", "m-1", readings)
        publisher.close()
        wait_until(lambda: store.count() == 100, what="all 100 readings")
        want = [r for readings in before + after for r in stored("gw-1", "m-1", readings)]
        assert store.readings(["m-1"], 0, 2**62) == want
        store.close()
        assert backend.terminate() == 0
    finally:
        backend.stop_quietly()
