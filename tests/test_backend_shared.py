"""Two backend processes on one shared subscription, one SQLite file: exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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

from electrocloud.contract import Reading
from electrocloud.storage import StoredReading
from electrocloud.stores.sqlite import SqliteStore

pytestmark = pytest.mark.slow

GATEWAYS = [f"gw-{g}" for g in range(4)]
METERS_PER_GATEWAY = 5
MESSAGES_PER_METER = 30
READINGS_PER_MESSAGE = 5  # 4 * 5 * 30 * 5 = 3000 readings in 600 messages


def stream() -> list[tuple[str, str, list[Reading]]]:
    """Messages in publish order: round-robin over meters, each meter's seq increasing."""
    base = base_ms()
    messages = []
    for m in range(MESSAGES_PER_METER):
        for g, gateway in enumerate(GATEWAYS):
            for k in range(METERS_PER_GATEWAY):
                index = g * METERS_PER_GATEWAY + k
                readings = make_readings(
                    index, m * READINGS_PER_MESSAGE, READINGS_PER_MESSAGE, base
                )
                messages.append((gateway, f"{gateway}-m{k}", readings))
    return messages


def expected(messages: list[tuple[str, str, list[Reading]]]) -> list[StoredReading]:
    rows = [r for gateway, meter, readings in messages for r in stored(gateway, meter, readings)]
    return sorted(rows, key=lambda r: (r.meter_id, r.ts_ms))


@pytest.fixture
def backends(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[list[BackendProcess]]:
    procs = []
    for name in ("a", "b"):
        config = backend_config(
            tmp_path,
            mosquitto.port,
            name=name,
            store={"sqlite": {"busy_timeout_ms": 2000}},
            batch={"max_readings": 200, "max_delay_ms": 100},
        )
        config["store"]["sqlite"]["path"] = str(tmp_path / "readings.sqlite")
        procs.append(BackendProcess(tmp_path, config, name))
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop_quietly()


def written(proc: BackendProcess) -> float:
    return proc.metric("electrocloud_backend_readings_written_total")


def test_two_processes_split_the_stream_and_store_each_reading_once(
    tmp_path: Path, mosquitto: MosquittoBroker, backends: list[BackendProcess]
) -> None:
    for proc in backends:
        proc.start()
    for proc in backends:
        proc.wait_ready()
    messages = stream()

    publisher = Publisher(mosquitto.port)
    for gateway, meter, readings in messages:
        publisher.publish_batch(gateway, meter, readings)
    publisher.close()

    store = SqliteStore(tmp_path / "readings.sqlite")
    want = expected(messages)
    wait_until(lambda: store.count() == len(want), what=f"{len(want)} readings stored")
    assert store.readings(None, 0, 2**62) == want

    # Both took part, and each message was handled by exactly one of them.
    wait_until(lambda: sum(written(p) for p in backends) == len(want), what="written metrics")
    assert all(written(proc) > 0 for proc in backends)
    received = [proc.metric("electrocloud_backend_messages_received_total") for proc in backends]
    assert sum(received) == len(messages)
    for proc in backends:
        assert proc.terminate() == 0
    store.close()


def test_killed_process_restarted_with_its_client_id_loses_and_duplicates_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker, backends: list[BackendProcess]
) -> None:
    victim = backends[0]
    for proc in backends:
        proc.start()
    for proc in backends:
        proc.wait_ready()
    messages = stream()
    publishing_done = threading.Event()

    def publish() -> None:
        publisher = Publisher(mosquitto.port)
        for i, (gateway, meter, readings) in enumerate(messages):
            publisher.publish_batch(gateway, meter, readings)
            if i % 20 == 19:
                publisher.flush()
                time.sleep(0.02)  # a steady stream rather than one burst
        publisher.close()
        publishing_done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        # Kill while it holds received, unwritten (so unacknowledged) messages.
        wait_until(
            lambda: (
                written(victim) > 0 and victim.metric("electrocloud_backend_backlog_readings") > 0
            ),
            what="the victim writing, with a backlog",
        )
        assert not publishing_done.is_set(), "the stream ended before the kill"
        victim.kill()  # SIGKILL: no flush, no acks, no DISCONNECT
        victim.start()  # same config, so the same client id and session
        victim.wait_ready()
    finally:
        thread.join()

    store = SqliteStore(tmp_path / "readings.sqlite")
    want = expected(messages)
    wait_until(lambda: store.count() == len(want), what=f"{len(want)} readings stored")
    assert store.readings(None, 0, 2**62) == want
    # The restarted process took its share again: the broker held it for the session.
    wait_until(lambda: written(victim) > 0, what="the restarted victim writing")
    for proc in backends:
        assert proc.terminate() == 0
    store.close()
