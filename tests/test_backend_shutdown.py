"""SIGTERM / Ctrl-C: stop consuming, flush and acknowledge what was taken, disconnect."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from backend_support import (
    BackendProcess,
    Publisher,
    backend_config,
    base_ms,
    make_readings,
    wait_until,
)
from services import MosquittoBroker
from sqlite_lock_holder import LockHolder

from electrocloud.stores.sqlite import SqliteStore

pytestmark = pytest.mark.slow


def test_sigterm_flushes_the_pending_batch_and_acknowledges_it(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # A batch that only a size or shutdown can close: messages wait in memory.
    slow = backend_config(
        tmp_path, mosquitto.port, name="a", batch={"max_readings": 10_000, "max_delay_ms": 600_000}
    )
    backend = BackendProcess(tmp_path, slow, "a").start().wait_ready()
    try:
        publisher = Publisher(mosquitto.port)
        base = base_ms()
        for i in range(20):
            publisher.publish_batch("gw-1", f"m-{i % 4}", make_readings(i % 4, 5 * i, 5, base))
        publisher.flush()
        wait_until(
            lambda: backend.metric("electrocloud_backend_backlog_readings") == 100,
            what="100 readings waiting in the batch",
        )
        store = SqliteStore(tmp_path / "readings.sqlite")
        assert store.count() == 0

        assert backend.terminate() == 0
        assert store.count() == 100  # written on the way out
        assert "stopped with unwritten messages" not in backend.log()

        # Same client id, normal batching: were the acks sent before DISCONNECT, the
        # broker has nothing to resend, so only the new message arrives.
        quick = backend_config(tmp_path, mosquitto.port, name="a")
        backend = BackendProcess(tmp_path, quick, "a").start().wait_ready()
        publisher.publish_batch("gw-1", "m-9", make_readings(9, 0, 1, base))
        publisher.close()
        wait_until(lambda: store.count() == 101, what="the new reading stored")
        assert backend.metric("electrocloud_backend_messages_received_total") == 1

        assert backend.process is not None
        backend.process.send_signal(signal.SIGINT)  # Ctrl-C takes the same path
        assert backend.process.wait(20) == 0
        store.close()
    finally:
        backend.stop_quietly()


def test_sigterm_while_the_store_is_down_gives_up_in_time_and_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = backend_config(tmp_path, mosquitto.port, name="a", shutdown_timeout_s=1)
    backend = BackendProcess(tmp_path, config, "a").start().wait_ready()
    try:
        publisher = Publisher(mosquitto.port)
        base = base_ms()
        with LockHolder(tmp_path / "readings.sqlite") as lock:
            for i in range(10):
                publisher.publish_batch("gw-1", "m-1", make_readings(1, 5 * i, 5, base))
            publisher.flush()
            wait_until(
                lambda: backend.metric("electrocloud_backend_backlog_readings") == 50,
                what="50 readings waiting for the store",
            )
            assert backend.terminate() == 0  # within shutdown_timeout_s, not hanging
            assert "stopped with unwritten messages" in backend.log()
            lock.release()

        backend = BackendProcess(tmp_path, config, "a").start()
        store = SqliteStore(tmp_path / "readings.sqlite")
        wait_until(lambda: store.count() == 50, what="the unacknowledged readings, redelivered")
        publisher.close()
        store.close()
    finally:
        backend.stop_quietly()
