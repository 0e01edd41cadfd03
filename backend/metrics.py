"""Prometheus metrics of one backend process (its own registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "electrocloud_backend_messages_received",
            "MQTT messages received (valid or not, redeliveries included)",
            registry=r,
        )
        self.readings_received = Counter(
            "electrocloud_backend_readings_received",
            "Readings in messages that passed validation",
            registry=r,
        )
        self.readings_written = Counter(
            "electrocloud_backend_readings_written",
            "Readings durably written to the store (overwrites of redeliveries included)",
            registry=r,
        )
        self.messages_rejected = Counter(
            "electrocloud_backend_messages_rejected",
            "Messages dead-lettered, by reason",
            ["reason"],
            registry=r,
        )
        self.messages_deferred = Counter(
            "electrocloud_backend_messages_deferred",
            "Messages left unacknowledged because the backlog was full (the broker redelivers)",
            registry=r,
        )
        self.store_failures = Counter(
            "electrocloud_backend_store_failures",
            "Failed write attempts while the store was unavailable",
            registry=r,
        )
        self.write_seconds = Histogram(
            "electrocloud_backend_write_seconds",
            "Duration of one successful batch write to the store",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.backlog_readings = Gauge(
            "electrocloud_backend_backlog_readings",
            "Readings received but not yet written (or dead letters not yet stored)",
            registry=r,
        )
        self.last_write_time = Gauge(
            "electrocloud_backend_last_write_timestamp_seconds",
            "Unix time of the last successful batch write",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "electrocloud_backend_mqtt_connected",
            "1 while connected to the broker",
            registry=r,
        )
