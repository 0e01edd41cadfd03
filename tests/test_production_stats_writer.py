"""backend/stats_writer.py: the backend's counters and the gateways' status, written as
line protocol to a real InfluxDB-protocol server (VictoriaMetrics) from a real broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from backend_support import wait_until
from production_support import probe
from services import MosquittoBroker
from victoria import VictoriaMetrics

from backend.config import BackendSettings
from backend.metrics import BackendMetrics
from backend.stats_writer import (
    COUNTER_FIELDS,
    GAUGE_FIELDS,
    StatsWriter,
    start_stats_writer,
    stats_lines,
    status_line,
)
from electrocloud.contract import GatewayStatus, encode_status, status_topic


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "victoria") as server:
        yield server


def settings(broker: MosquittoBroker, influx_url: str) -> BackendSettings:
    return BackendSettings.model_validate(
        {
            "mqtt": {"url": broker.url, "client_id": "backend-7"},
            "store": {
                "type": "influxdb",
                "influxdb": {
                    "url": influx_url,
                    "org": "electrocloud",
                    "bucket": "readings",
                    "token": "test-token-not-checked",
                },
            },
        }
    )


def status(gateway: str, state: Literal["online", "offline"], ts_ms: int) -> bytes:
    return encode_status(
        GatewayStatus(
            schema_version=1, gateway_id=gateway, state=state, ts_ms=ts_ms, agent_version="0.1.0"
        )
    )


def latest(server: VictoriaMetrics, match: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Newest value of each exported series, keyed by its labels (without __name__)."""
    result = {}
    for series in server.export(match):
        labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
        result[(("name", series["metric"]["__name__"]), *labels)] = series["values"][-1]
    return result


def test_line_protocol_of_stats_and_status() -> None:
    metrics = BackendMetrics()
    metrics.readings_written.inc(1234)
    metrics.messages_rejected.labels(reason="invalid_json").inc(2)
    metrics.messages_rejected.labels(reason="wrong_gateway").inc()
    metrics.backlog_readings.set(17)
    lines = stats_lines(metrics.registry, "backend 1,a", 1_700_000_000_123)
    assert lines[0] == (
        r"backend_stats,instance=backend\ 1\,a messages_received=0i,readings_received=0i,"
        "readings_written=1234i,messages_deferred=0i,store_failures=0i,backlog_readings=17i,"
        "mqtt_connected=0i 1700000000123"
    )
    assert lines[1:] == [
        r"backend_rejections,instance=backend\ 1\,a,reason=invalid_json messages=2i 1700000000123",
        r"backend_rejections,instance=backend\ 1\,a,reason=wrong_gateway messages=1i 1700000000123",
    ]
    assert status_line(status("gw-1", "offline", 1_700_000_000_000)) == (
        'gateway_status,gateway_id=gw-1 online=0i,state="offline",agent_version="0.1.0" '
        "1700000000000"
    )
    with_backlog = (
        b'{"schema_version": 1, "gateway_id": "gw-2", "state": "online", "ts_ms": 5, '
        b'"queue_depth": 42, "oldest_queued_ts_ms": 3}'
    )
    assert status_line(with_backlog) == (
        'gateway_status,gateway_id=gw-2 online=1i,state="online",'
        "queue_depth=42i,oldest_queued_ts_ms=3i 5"
    )
    assert status_line(b'{"schema_version": 1, "gateway_id": "gw 1"}') is None


def test_stats_and_retained_statuses_reach_the_store(
    mosquitto: MosquittoBroker, victoria: VictoriaMetrics
) -> None:
    now_ms = int(time.time() * 1000)
    publisher = probe(mosquitto.port, "gateway-sim")
    assert not publisher.wait_connack().is_failure
    publisher.publish(status_topic("gw-1"), status("gw-1", "online", now_ms - 5000), retain=True)
    publisher.publish(status_topic("gw-2"), status("gw-2", "offline", now_ms - 4000), retain=True)
    publisher.publish(status_topic("gw-3"), b"not a status", retain=True)

    metrics = BackendMetrics()
    metrics.readings_received.inc(500)
    metrics.readings_written.inc(480)
    metrics.messages_rejected.labels(reason="timestamp_in_future").inc(3)
    stop = threading.Event()
    writer = start_stats_writer(settings(mosquitto, victoria.url), metrics, stop, interval_s=0.2)
    assert writer is not None
    try:
        # Retained statuses arrive on subscribe; a status published later arrives too.
        wait_until(
            lambda: len(latest(victoria, '{__name__="gateway_status_online"}')) == 2,
            30,
            "both retained statuses",
        )
        publisher.publish(status_topic("gw-2"), status("gw-2", "online", now_ms), retain=True)
        wait_until(
            lambda: (
                latest(victoria, '{__name__="gateway_status_online"}')
                == {
                    (("name", "gateway_status_online"), ("gateway_id", "gw-1")): 1,
                    (("name", "gateway_status_online"), ("gateway_id", "gw-2")): 1,
                }
            ),
            30,
            "gw-2 online",
        )
        instance = ("instance", "backend-7")
        written_key = (("name", "backend_stats_readings_written"), instance)
        wait_until(
            lambda: latest(victoria, '{__name__=~"backend_stats_.*"}').get(written_key) == 480,
            30,
            "backend stats",
        )
        stats = latest(victoria, '{__name__=~"backend_stats_.*"}')
        assert stats[(("name", "backend_stats_readings_received"), instance)] == 500
        assert {name for (_, name), *_ in stats} == {
            f"backend_stats_{field}" for field in (*COUNTER_FIELDS, *GAUGE_FIELDS)
        }
        wait_until(lambda: bool(latest(victoria, '{__name__="backend_rejections_messages"}')))
        rejections = latest(victoria, '{__name__="backend_rejections_messages"}')
        assert rejections == {
            (
                ("name", "backend_rejections_messages"),
                instance,
                ("reason", "timestamp_in_future"),
            ): 3
        }
        # The last values are written when the backend stops.
        metrics.readings_written.inc(20)
        writes = writer.writes_ok
        stop.set()
        wait_until(lambda: writer.writes_ok > writes, 10, "the final write")
        wait_until(
            lambda: latest(victoria, '{__name__=~"backend_stats_.*"}').get(written_key) == 500,
            30,
            "the final stats",
        )
    finally:
        stop.set()
        publisher.close()


def test_failed_writes_keep_statuses_for_the_next_one() -> None:
    written: list[bytes] = []
    failing = [True]

    def write(body: bytes) -> None:
        if failing[0]:
            raise ConnectionRefusedError("store down")
        written.append(body)

    writer = StatsWriter(BackendMetrics(), "b", write, clock=lambda: 1.0)
    writer.on_status(status("gw-1", "online", 900))
    assert writer.flush() is False and writer.writes_failed == 1
    failing[0] = False
    assert writer.flush() is True
    assert b"gateway_status,gateway_id=gw-1 online=1i" in written[0]


def test_no_writer_without_an_influxdb_store(mosquitto: MosquittoBroker) -> None:
    sqlite_settings = BackendSettings.model_validate({"mqtt": {"url": mosquitto.url}})
    assert start_stats_writer(sqlite_settings, BackendMetrics(), threading.Event()) is None


def test_stopping_writes_the_last_values_at_once() -> None:
    written: list[bytes] = []
    metrics = BackendMetrics()
    writer = StatsWriter(metrics, "b", written.append, interval_s=3600, clock=lambda: 2.0)
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,))
    thread.start()
    metrics.readings_written.inc(7)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert written == [
        b"backend_stats,instance=b messages_received=0i,readings_received=0i,"
        b"readings_written=7i,messages_deferred=0i,store_failures=0i,backlog_readings=0i,"
        b"mqtt_connected=0i 2000"
    ]
