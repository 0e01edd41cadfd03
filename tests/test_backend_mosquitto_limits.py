"""The Mosquitto limits docs/backend.md quotes, measured on the real broker.

Mosquitto silently drops QoS 1 messages for a session whose queue is full; the
backend's no-loss guarantee holds only with the broker settings documented there.
"""

from __future__ import annotations

from pathlib import Path

from mosquitto_limits import (
    DEFAULT_LIMITS,
    offline_survivors,
    receive_maximum_window,
    stalled_survivors,
)
from services import MosquittoBroker


def test_default_max_queued_messages_drops_beyond_1000_for_an_offline_session(
    tmp_path: Path,
) -> None:
    with MosquittoBroker(tmp_path / "mq", extra_config=DEFAULT_LIMITS) as broker:
        assert offline_survivors(broker.port, 1500) == 1000


def test_default_max_queued_messages_drops_for_a_session_that_stops_acknowledging(
    tmp_path: Path,
) -> None:
    # What a backend whose store is down sees: receive maximum in flight + 1000 queued.
    with MosquittoBroker(tmp_path / "mq", extra_config=DEFAULT_LIMITS) as broker:
        assert stalled_survivors(broker.port, 100, 1500) == 1100


def test_unlimited_queue_keeps_every_message(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "mq", extra_config="max_queued_messages 0") as broker:
        assert offline_survivors(broker.port, 1500) == 1500
        assert stalled_survivors(broker.port, 100, 1500) == 1500


def test_receive_maximum_bounds_unacknowledged_messages(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "mq", extra_config=DEFAULT_LIMITS) as broker:
        unacked, _after_one_ack, total = receive_maximum_window(broker.port, 10, 100)
    # The v5 Receive Maximum (10) wins over max_inflight_messages (20) for v5 clients.
    assert unacked == 10
    assert total == 100
