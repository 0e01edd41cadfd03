"""Wires the backend together: store, dead letters, registry, pipeline, MQTT, HTTP."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from backend.config import BackendSettings
from backend.dead_letters import DeadLetterStore
from backend.http import HealthServer
from backend.metrics import BackendMetrics
from backend.mqtt import MqttConsumer
from backend.pipeline import Ingestor, PipelineSettings
from backend.registry import MeterRegistry
from backend.stats_writer import start_stats_writer
from backend.store_factory import open_store
from electrocloud.storage import ReadingStore, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackendService:
    """One backend process. ``start`` then ``stop``; not restartable."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self.metrics = BackendMetrics()
        # Loaded first: a bad registry file is a configuration error, reported at once.
        self.registry = (
            MeterRegistry.load(settings.registry) if settings.registry else MeterRegistry()
        )
        self.http: HealthServer | None = None
        self.store: ReadingStore | None = None
        self.dead_letters: DeadLetterStore | None = None
        self.ingestor: Ingestor | None = None
        self.consumer: MqttConsumer | None = None

    def start(self, stop_requested: threading.Event) -> bool:
        """Open everything and start consuming; False if stopped before that finished."""
        s = self.settings
        if s.http.port:
            self.http = HealthServer(s.http.host, s.http.port, self.metrics.registry, self.ready)
            self.http.start()
        sites = self.registry.sites()
        store = self._open(
            lambda: open_store(s.store, site_by_meter=sites), "store", stop_requested
        )
        if store is None:
            return False
        self.store = store
        dead_letters = self._open(
            lambda: DeadLetterStore(
                s.dead_letter.path, busy_timeout_ms=s.store.sqlite.busy_timeout_ms
            ),
            "dead-letter store",
            stop_requested,
        )
        if dead_letters is None:
            return False
        self.dead_letters = dead_letters
        pipeline = PipelineSettings(
            max_batch_readings=s.batch.max_readings,
            max_batch_messages=s.mqtt.receive_maximum,
            max_delay_s=s.batch.max_delay_ms / 1000,
            backlog_max_readings=s.batch.backlog_max_readings,
            max_future_ms=int(s.max_future_s * 1000),
            dead_letter_max_bytes=s.dead_letter.max_payload_bytes,
            retry_min_s=s.store.retry_min_s,
            retry_max_s=s.store.retry_max_s,
        )
        # The consumer and the ingestor call each other: bind through late lambdas.
        self.ingestor = Ingestor(
            store,
            dead_letters,
            self.registry,
            self.metrics,
            pipeline,
            ack=lambda delivery: self._consumer().ack(delivery),
            resync=lambda: self._consumer().resync(),
        )
        self.consumer = MqttConsumer(s.mqtt, self.ingestor.submit, self.metrics)
        self.ingestor.start()
        self.consumer.start()
        # InfluxDB only: the backend's own counters and gateway statuses for Grafana.
        start_stats_writer(s, self.metrics, stop_requested)
        return True

    def _consumer(self) -> MqttConsumer:
        assert self.consumer is not None
        return self.consumer

    def _open(self, opener: Callable[[], T], what: str, stop: threading.Event) -> T | None:
        delay = self.settings.store.retry_min_s
        while not stop.is_set():
            try:
                return opener()
            except StoreUnavailable as exc:
                log.warning("%s unavailable, retrying in %.1f s: %s", what, delay, exc)
            stop.wait(delay)
            delay = min(delay * 2, self.settings.store.retry_max_s)
        return None

    def ready(self) -> tuple[bool, str]:
        problems = []
        if self.consumer is None or not self.consumer.ready:
            problems.append("not connected and subscribed to the broker")
        if self.ingestor is None or not self.ingestor.store_ok:
            problems.append("store not writable")
        return (not problems, "; ".join(problems) or "ready")

    def stop(self) -> None:
        """Stop taking messages, flush and acknowledge what was taken, disconnect."""
        if self.ingestor is not None:
            flushed = self.ingestor.stop(self.settings.shutdown_timeout_s)
            if not flushed:
                log.warning("stopped with unwritten messages; the broker will resend them")
        if self.consumer is not None:
            self.consumer.stop()
        if self.store is not None:
            self.store.close()
        if self.dead_letters is not None:
            self.dead_letters.close()
        if self.http is not None:
            self.http.stop()
        log.info("stopped")
