"""The ingestion pipeline: validate, micro-batch, write durably, then acknowledge.

Threads: :meth:`Ingestor.submit` runs in paho's network thread. It validates the
message (cheap, CPU only) and hands it to the writer thread through a queue;
it never blocks on the store. The writer thread collects a batch (``max_readings``,
``max_messages`` or ``max_delay``, whichever comes first), writes the readings in
one store call and the dead letters in one dead-letter call, and only then
acknowledges every message of the batch, in the order they arrived.

The in-memory backlog holds at most ``backlog_max_readings``. A message that does
not fit waits up to ``backlog_wait_s`` for the writer to make room (paho then
reads nothing more: back-pressure to the broker). While the store is unavailable
the writer retries the same batch with exponential backoff and acknowledges
nothing; messages that still find no room are left unacknowledged (the broker
keeps them; a reconnect once the backlog has drained makes it resend them).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from backend.dead_letters import DeadLetter, DeadLetterStore
from backend.metrics import BackendMetrics
from backend.mqtt import Delivery
from backend.registry import MeterRegistry
from backend.validate import validate_message
from electrocloud.errors import ContractError
from electrocloud.storage import ReadingStore, StoredReading, StoreRejected, StoreUnavailable

log = logging.getLogger(__name__)

#: Dead-letter reason for data the store itself refused (not a wire-contract reason).
STORE_REJECTED = "store_rejected"


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_batch_readings: int = 5000
    # Also write once a batch holds this many messages. The service sets the MQTT
    # Receive Maximum: a broker that keeps to it sends nothing more until those are
    # acknowledged, so waiting for max_delay_s would only stall the stream.
    max_batch_messages: int | None = None
    max_delay_s: float = 0.5
    backlog_max_readings: int = 100_000
    # How long a message that does not fit waits for room before it is deferred.
    backlog_wait_s: float = 1.0
    max_future_ms: int = 300_000
    dead_letter_max_bytes: int = 64 * 1024
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class _Accepted:
    delivery: Delivery
    readings: list[StoredReading]

    @property
    def size(self) -> int:
        return len(self.readings)


@dataclass(frozen=True, slots=True)
class _Rejected:
    delivery: Delivery
    letter: DeadLetter

    @property
    def size(self) -> int:
        return 1


_Item = _Accepted | _Rejected
_STOP = object()
_Outcome = Literal["written", "rejected", "aborted"]


class Ingestor:
    """Owns the writer thread. ``ack`` acknowledges one delivery at the broker."""

    def __init__(
        self,
        store: ReadingStore,
        dead_letters: DeadLetterStore,
        registry: MeterRegistry,
        metrics: BackendMetrics,
        settings: PipelineSettings,
        *,
        ack: Callable[[Delivery], bool],
        resync: Callable[[], None],
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._registry = registry
        self._metrics = metrics
        self._settings = settings
        self._ack = ack
        self._resync = resync
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below
        self._room = threading.Condition(self._lock)  # notified when the backlog shrinks
        self._backlog = 0  # readings (and dead letters) received, not yet handled
        self._deferred = False  # some message was left unacknowledged: resync later
        self._accepting = True
        self._store_ok = True
        self._abort = threading.Event()  # give up retrying (shutdown deadline passed)
        self._thread = threading.Thread(target=self._run, name="backend-writer", daemon=True)

    # --- MQTT thread ----------------------------------------------------------

    def submit(self, delivery: Delivery) -> bool:
        """Validate and queue a message; False if it was left unacknowledged instead."""
        self._metrics.messages_received.inc()
        with self._lock:
            if not self._accepting:
                return False  # shutting down: the broker resends it to this session
            if self._deferred:  # no need to parse what is left at the broker anyway
                self._metrics.messages_deferred.inc()
                return False
        item: _Item
        try:
            readings = validate_message(
                delivery.topic,
                delivery.payload,
                now_ms=delivery.received_ms,
                max_future_ms=self._settings.max_future_ms,
                registry=self._registry,
            )
            # The raw payload is not needed once parsed: keep the backlog small.
            # (Built directly: dataclasses.replace costs several µs per message.)
            item = _Accepted(
                Delivery(
                    delivery.topic,
                    b"",
                    delivery.mid,
                    delivery.qos,
                    delivery.received_ms,
                    delivery.generation,
                ),
                readings,
            )
        except ContractError as exc:
            detail = f"{exc.field}: {exc.detail}" if exc.field else exc.detail
            item = _Rejected(delivery, self._letter(delivery, exc.reason, detail))
        with self._lock:
            if not self._deferred and not self._fits(item.size):
                # Back-pressure first: while this thread waits, paho reads nothing more
                # and the broker holds the rest. Mosquitto 2.0 sends beyond the Receive
                # Maximum (docs/backend.md), so a backend catching up fills its backlog.
                self._room.wait_for(
                    lambda: not self._accepting or self._fits(item.size),
                    timeout=self._settings.backlog_wait_s,
                )
            if not self._accepting:
                return False
            # Still no room (the store is slow or down): leave it at the broker. Every
            # later message is deferred too until the resync, so the backlog drains
            # completely and the reconnect brings back only messages never taken here
            # (anything still held would be delivered and written a second time).
            if self._deferred or not self._fits(item.size):
                self._deferred = True
                self._metrics.messages_deferred.inc()
                return False
            self._backlog += item.size
            self._metrics.backlog_readings.set(self._backlog)
            # Inside the lock, so nothing lands behind the stop marker.
            self._queue.put(item)
        if isinstance(item, _Accepted):
            self._metrics.readings_received.inc(item.size)
        return True

    def _fits(self, size: int) -> bool:
        # An empty backlog always takes a message, however large, or it never could.
        return not self._backlog or self._backlog + size <= self._settings.backlog_max_readings

    def _letter(self, delivery: Delivery, reason: str, detail: str) -> DeadLetter:
        return DeadLetter.of(
            reason=reason,
            detail=detail,
            topic=delivery.topic,
            received_ms=delivery.received_ms,
            payload=delivery.payload,
            max_payload_bytes=self._settings.dead_letter_max_bytes,
        )

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Stop taking messages, flush what was taken; True if all of it was handled.

        Retries against an unavailable store end after ``timeout_s``; whatever is
        left then stays unacknowledged, and the broker resends it on restart.
        """
        with self._lock:
            self._accepting = False
            self._queue.put(_STOP)
            self._room.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join()
        with self._lock:
            return self._backlog == 0

    @property
    def store_ok(self) -> bool:
        with self._lock:
            return self._store_ok

    @property
    def backlog_readings(self) -> int:
        with self._lock:
            return self._backlog

    # --- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        batch: list[_Item] = []
        size = 0
        deadline = 0.0
        max_messages = self._settings.max_batch_messages or float("inf")
        while True:
            item: _Item | object | None
            try:
                if not batch:
                    item = self._queue.get()
                else:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush(batch)
                return
            if isinstance(item, _Accepted | _Rejected):
                if not batch:
                    deadline = time.monotonic() + self._settings.max_delay_s
                batch.append(item)
                size += item.size
            if batch and (
                size >= self._settings.max_batch_readings
                or len(batch) >= max_messages
                or time.monotonic() >= deadline
            ):
                if not self._flush(batch):
                    return  # aborted by shutdown
                batch, size = [], 0
                self._maybe_resync()

    def _flush(self, batch: Sequence[_Item]) -> bool:
        """Write, dead-letter and acknowledge ``batch``; False if shutdown aborted it."""
        if not batch:
            return True
        accepted = [item for item in batch if isinstance(item, _Accepted)]
        letters = [item.letter for item in batch if isinstance(item, _Rejected)]
        readings = [reading for item in accepted for reading in item.readings]
        outcome, _ = self._write(readings)
        if outcome == "aborted":
            return False
        if outcome == "rejected":
            # Find the message(s) the store refuses; write the others.
            for message in accepted:
                single, detail = self._write(message.readings)
                if single == "aborted":
                    return False
                if single == "rejected":
                    letters.append(self._letter(message.delivery, STORE_REJECTED, detail))
        if not self._retry(lambda: self._dead_letters.write(letters), what="dead-letter store"):
            return False
        for letter in letters:
            self._metrics.messages_rejected.labels(reason=letter.reason).inc()
            log.warning("dead-lettered %s: %s: %s", letter.topic, letter.reason, letter.detail)
        for item in batch:
            self._ack(item.delivery)
        with self._lock:
            self._backlog -= sum(item.size for item in batch)
            self._metrics.backlog_readings.set(self._backlog)
            self._room.notify_all()
        return True

    def _write(self, readings: list[StoredReading]) -> tuple[_Outcome, str]:
        """Write with retries; the outcome, and the store's reason if it refused."""
        if not readings:
            return "written", ""
        try:
            written = self._retry(lambda: self._timed_write(readings), what="store")
        except StoreRejected as exc:
            return "rejected", str(exc)
        return ("written" if written else "aborted"), ""

    def _timed_write(self, readings: list[StoredReading]) -> None:
        started = time.perf_counter()
        self._store.write_batch(readings)
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        self._metrics.readings_written.inc(len(readings))
        self._metrics.last_write_time.set_to_current_time()

    def _retry(self, action: Callable[[], None], *, what: str) -> bool:
        """Run ``action`` until it succeeds (True) or shutdown aborts (False).

        StoreUnavailable, and any unexpected error, is retried with exponential
        backoff: losing the stream to a bug in an adapter would be worse.
        StoreRejected propagates.
        """
        delay = self._settings.retry_min_s
        failures = 0
        while True:
            try:
                action()
            except StoreRejected:
                raise
            except Exception as exc:
                failures += 1
                self._metrics.store_failures.inc()
                with self._lock:
                    self._store_ok = False
                if failures == 1:
                    level = logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR
                    log.log(level, "%s unavailable, retrying: %s", what, exc, exc_info=level > 30)
                if self._abort.wait(delay):
                    log.warning("giving up on %s at shutdown; messages stay unacknowledged", what)
                    return False
                delay = min(delay * 2, self._settings.retry_max_s)
                continue
            if failures:
                log.info("%s available again after %d failed attempts", what, failures)
            with self._lock:
                self._store_ok = True
            return True

    def _maybe_resync(self) -> None:
        # While deferring nothing new is taken, so the backlog drains to empty; resyncing
        # only then means no message held here is resent and written a second time.
        with self._lock:
            due = self._deferred and self._accepting and self._backlog == 0
            if due:
                self._deferred = False
        if due:
            self._resync()
