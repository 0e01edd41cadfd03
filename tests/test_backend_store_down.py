"""Store down: another process holds the SQLite write lock while messages arrive.

Nothing is acknowledged while the store cannot be written: a backend killed
during the outage gets every message again from the broker, and once the lock
is released everything lands exactly once.
"""

from __future__ import annotations

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
from sqlite_lock_holder import LockHolder

from electrocloud.contract import Reading
from electrocloud.storage import StoredReading
from electrocloud.stores.sqlite import SqliteStore

pytestmark = pytest.mark.slow

BACKLOG = "electrocloud_backend_backlog_readings"


@pytest.fixture
def procs() -> Iterator[list[BackendProcess]]:
    started: list[BackendProcess] = []
    yield started
    for proc in started:
        proc.stop_quietly()


def messages(first_seq: int, count: int) -> list[tuple[str, str, list[Reading]]]:
    base = base_ms()
    return [
        (f"gw-{i % 2}", f"m-{i % 4}", make_readings(i % 4, first_seq + 5 * (i // 4), 5, base))
        for i in range(count)
    ]


def expected(*streams: list[tuple[str, str, list[Reading]]]) -> list[StoredReading]:
    rows = [r for stream in streams for g, m, readings in stream for r in stored(g, m, readings)]
    return sorted(rows, key=lambda r: (r.meter_id, r.ts_ms))


def publish(port: int, stream: list[tuple[str, str, list[Reading]]]) -> None:
    publisher = Publisher(port)
    for gateway, meter, readings in stream:
        publisher.publish_batch(gateway, meter, readings)
    publisher.close()


def test_nothing_is_acknowledged_while_the_store_is_locked_and_all_lands_after(
    tmp_path: Path, mosquitto: MosquittoBroker, procs: list[BackendProcess]
) -> None:
    db = tmp_path / "readings.sqlite"
    config = backend_config(tmp_path, mosquitto.port, name="a")
    backend = BackendProcess(tmp_path, config, "a").start().wait_ready()
    procs.append(backend)
    first, second = messages(0, 40), messages(1000, 40)  # 200 readings each

    with LockHolder(db) as lock:
        publish(mosquitto.port, first)
        wait_until(lambda: backend.metric(BACKLOG) == 200, what="200 readings held in memory")
        wait_until(
            lambda: backend.metric("electrocloud_backend_store_failures_total") > 0,
            what="failed write attempts",
        )
        assert backend.metric("electrocloud_backend_readings_written_total") == 0
        assert not backend.ready()  # /readyz: store not writable

        # Killed during the outage: had anything been acknowledged, it would be lost now.
        backend.kill()
        backend.start()
        wait_until(lambda: backend.metric(BACKLOG) == 200, what="the broker resending all 200")
        publish(mosquitto.port, second)
        # Receive Maximum (50 messages of 5 readings) caps what the broker sends us
        # unacknowledged; it keeps the other 30 messages.
        assert config["mqtt"]["receive_maximum"] == 50
        wait_until(lambda: backend.metric(BACKLOG) == 250, what="250 readings held in memory")
        reader = SqliteStore(db)
        assert reader.count() == 0
        lock.release()

    want = expected(first, second)
    wait_until(lambda: reader.count() == len(want), what="every reading stored")
    assert reader.readings(None, 0, 2**62) == want
    wait_until(backend.ready, what="ready again")
    assert backend.metric(BACKLOG) == 0
    assert backend.terminate() == 0
    reader.close()


def test_backlog_beyond_its_bound_stays_at_the_broker_and_comes_back(
    tmp_path: Path, mosquitto: MosquittoBroker, procs: list[BackendProcess]
) -> None:
    db = tmp_path / "readings.sqlite"
    config = backend_config(
        tmp_path,
        mosquitto.port,
        name="small",
        mqtt={"receive_maximum": 30},
        batch={"max_readings": 500, "max_delay_ms": 50, "backlog_max_readings": 50},
    )
    backend = BackendProcess(tmp_path, config, "small").start().wait_ready()
    procs.append(backend)
    stream = messages(0, 40)  # 200 readings in messages of 5

    with LockHolder(db) as lock:
        publish(mosquitto.port, stream)
        # 30 messages in flight (receive maximum): 10 fill the backlog, 20 are deferred.
        wait_until(
            lambda: backend.metric("electrocloud_backend_messages_deferred_total") == 20,
            what="messages deferred",
        )
        assert backend.metric(BACKLOG) == 50
        lock.release()

    reader = SqliteStore(db)
    want = expected(stream)
    wait_until(lambda: reader.count() == len(want), what="every reading stored")
    assert reader.readings(None, 0, 2**62) == want
    assert "deferred messages redelivered" in backend.log()
    assert backend.terminate() == 0
    reader.close()
