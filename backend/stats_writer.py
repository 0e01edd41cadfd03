"""Writes the backend's own counters and the gateways' status to InfluxDB, for Grafana.

Grafana reads only InfluxDB (no Prometheus in the compose stack), so each backend
process also writes, every ``interval_s`` and once more when it stops:

- ``backend_stats,instance=<client id>``: the counters and gauges of
  :class:`backend.metrics.BackendMetrics` (``COUNTER_FIELDS``, ``GAUGE_FIELDS``),
  cumulative since the process started (a restart starts them at 0 again);
- ``backend_rejections,instance=<client id>,reason=<reason> messages=<n>``: the
  dead-lettered messages by reason, cumulative likewise;
- ``gateway_status,gateway_id=<id> online=1i|0i,state="online"|"offline"[,queue_depth=Ni]``
  stamped with the status's own ``ts_ms``: every retained status message the
  broker holds on ``electrocloud/v1/+/status``, and each change. All replicas
  write the same point for one status (same series and time), so it is stored once.

Only with ``store.type: influxdb``: it writes to the same bucket with the same
(write-only) token. Best effort: a failed write is logged and retried with the
next interval, and never touches ingestion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from backend.config import BackendSettings, MqttSettings
from backend.metrics import BackendMetrics
from backend.mqtt import apply_credentials
from electrocloud.contract import STATUS_QOS, TOPIC_ROOT, decode_status
from electrocloud.errors import ContractError

log = logging.getLogger(__name__)

STATS = "backend_stats"
REJECTIONS = "backend_rejections"
STATUS = "gateway_status"
#: Fields of a ``gateway_status`` point (the last three only when the status has them).
STATUS_FIELDS = ("online", "state", "agent_version", "queue_depth", "oldest_queued_ts_ms")
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/status"

#: backend_stats field -> Prometheus sample it is read from.
COUNTER_FIELDS = {
    "messages_received": "electrocloud_backend_messages_received_total",
    "readings_received": "electrocloud_backend_readings_received_total",
    "readings_written": "electrocloud_backend_readings_written_total",
    "messages_deferred": "electrocloud_backend_messages_deferred_total",
    "store_failures": "electrocloud_backend_store_failures_total",
}
GAUGE_FIELDS = {
    "backlog_readings": "electrocloud_backend_backlog_readings",
    "mqtt_connected": "electrocloud_backend_mqtt_connected",
}
_REJECTED_SAMPLE = "electrocloud_backend_messages_rejected_total"
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stats_lines(registry: CollectorRegistry, instance: str, ts_ms: int) -> list[str]:
    """Line protocol for the current values of ``registry`` (ms timestamps)."""
    samples: dict[str, float] = {}
    rejected: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == _REJECTED_SAMPLE:
                rejected[sample.labels["reason"]] = sample.value
            else:
                samples[sample.name] = sample.value
    fields = [
        f"{field}={int(samples.get(sample, 0))}i"
        for field, sample in {**COUNTER_FIELDS, **GAUGE_FIELDS}.items()
    ]
    lines = [f"{STATS},instance={_tag(instance)} {','.join(fields)} {ts_ms}"]
    lines.extend(
        f"{REJECTIONS},instance={_tag(instance)},reason={_tag(reason)} "
        f"messages={int(count)}i {ts_ms}"
        for reason, count in sorted(rejected.items())
    )
    return lines


def status_line(payload: bytes) -> str | None:
    """``gateway_status`` line for a status payload; None if it breaks the contract."""
    try:
        status = decode_status(payload)
    except ContractError as exc:
        log.debug("ignoring an invalid gateway status: %s", exc)
        return None
    fields = [
        f"online={1 if status.state == 'online' else 0}i",
        f"state={_string_field(status.state)}",
    ]
    if status.agent_version is not None:
        fields.append(f"agent_version={_string_field(status.agent_version)}")
    if status.queue_depth is not None:
        fields.append(f"queue_depth={status.queue_depth}i")
    if status.oldest_queued_ts_ms is not None:
        fields.append(f"oldest_queued_ts_ms={status.oldest_queued_ts_ms}i")
    return f"{STATUS},gateway_id={_tag(status.gateway_id)} {','.join(fields)} {status.ts_ms}"


class StatsWriter:
    """Samples ``metrics`` every ``interval_s`` and hands line protocol to ``write``.

    ``write`` (one request per call, raising on failure) is the only I/O; statuses
    arriving between two samples are written with the next one.
    """

    def __init__(
        self,
        metrics: BackendMetrics,
        instance: str,
        write: Callable[[bytes], None],
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.instance = instance
        self.interval_s = interval_s
        self._write = write
        self._clock = clock
        self._lock = threading.Lock()
        self._pending_status: list[str] = []
        self.writes_ok = 0
        self.writes_failed = 0

    def on_status(self, payload: bytes) -> None:
        line = status_line(payload)
        if line is not None:
            with self._lock:
                self._pending_status.append(line)

    def flush(self) -> bool:
        """Write the current stats and any pending statuses; False if the write failed."""
        with self._lock:
            statuses, self._pending_status = self._pending_status, []
        ts_ms = int(self._clock() * 1000)
        lines = stats_lines(self.metrics.registry, self.instance, ts_ms) + statuses
        try:
            self._write("\n".join(lines).encode())
        except Exception as exc:  # best effort: log, keep the statuses, retry next time
            with self._lock:
                self._pending_status[:0] = statuses
            self.writes_failed += 1
            log.warning("writing backend stats failed (will retry): %s", exc)
            return False
        self.writes_ok += 1
        return True

    def run(self, stop: threading.Event) -> None:
        """Flush every ``interval_s`` until ``stop`` is set, then once more."""
        while not stop.wait(self.interval_s):
            self.flush()
        self.flush()


def _status_client(settings: MqttSettings, client_id: str, writer: StatsWriter) -> mqtt.Client:
    """A clean-session MQTT client for the retained statuses (not the ingestion session)."""
    v311 = getattr(settings, "protocol", "5") == "3.1.1"  # a broker without MQTT v5
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311 if v311 else mqtt.MQTTv5,
    )
    apply_credentials(client, settings)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            c.subscribe(STATUS_SUBSCRIPTION, qos=STATUS_QOS)

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        writer.on_status(bytes(message.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, round(settings.reconnect_max_s)))
    return client


def influx_writer(settings: BackendSettings) -> Callable[[bytes], None] | None:
    """A synchronous line-protocol write to the store's bucket; None unless it is InfluxDB."""
    influx = settings.store.influxdb
    if settings.store.type != "influxdb" or influx is None:
        return None
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.domain.write_precision import WritePrecision

    precision = cast(WritePrecision, WritePrecision.MS)  # annotated as the class, is a str

    client = InfluxDBClient(
        url=influx.url,
        token=influx.token.get_secret_value(),
        org=influx.org,
        timeout=int(influx.timeout_s * 1000),
        retries=False,
    )
    write_api = client.write_api(write_options=SYNCHRONOUS)

    def write(body: bytes) -> None:
        write_api.write(
            bucket=influx.bucket, org=influx.org, record=body, write_precision=precision
        )

    return write


def start_stats_writer(
    settings: BackendSettings,
    metrics: BackendMetrics,
    stop: threading.Event,
    *,
    interval_s: float = 10.0,
) -> StatsWriter | None:
    """Start writing stats and statuses in daemon threads until ``stop`` is set.

    Returns None (and does nothing) unless the store is InfluxDB.
    """
    write = influx_writer(settings)
    if write is None:
        return None
    instance = settings.mqtt.effective_client_id()
    writer = StatsWriter(metrics, instance, write, interval_s=interval_s)
    client = _status_client(settings.mqtt, f"{instance}-status", writer)
    client.connect_async(settings.mqtt.host, settings.mqtt.port, settings.mqtt.keepalive_s)
    client.loop_start()

    def run() -> None:
        try:
            writer.run(stop)
        finally:
            client.disconnect()
            client.loop_stop()

    threading.Thread(target=run, name="stats-writer", daemon=True).start()
    log.info("writing backend stats to the store every %.0f s as %r", interval_s, instance)
    return writer


__all__ = [
    "COUNTER_FIELDS",
    "GAUGE_FIELDS",
    "REJECTIONS",
    "STATS",
    "STATUS",
    "StatsWriter",
    "start_stats_writer",
    "stats_lines",
    "status_line",
]
