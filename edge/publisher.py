"""MQTT publisher: drains the on-disk queue to the broker at QoS 1.

A row leaves the queue only after the broker's PUBACK for the message that
carried it. Anything unacknowledged when the connection drops stays queued and
is sent again after reconnecting, built from the same stored JSON, so a
duplicate is always an exact redelivery of the same ``(meter_id, seq)``.

The gateway's retained status (``online`` on connect, ``offline`` on a clean
shutdown and as the Last Will) lives on :func:`~electrocloud.contract.status_topic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttSettings
from edge.queue import QueuedBatch, ReadingQueue
from electrocloud.contract import (
    MAX_PAYLOAD_BYTES,
    READINGS_QOS,
    STATUS_QOS,
    GatewayStatus,
    ReadingBatch,
    check_id,
    encode_batch,
    encode_status,
    readings_topic,
    status_topic,
)
from electrocloud.mqtt_settings import TlsSettings

log = logging.getLogger(__name__)

#: Room for the batch envelope (ids, schema_version) around the readings' JSON.
_ENVELOPE_BYTES = 1024
#: A connection that lasted this long resets the reconnect backoff.
_STABLE_CONNECTION_S = 10.0
#: How long a clean shutdown waits for the offline status's PUBACK.
_STATUS_TIMEOUT_S = 2.0
#: CONNACK codes meaning "this broker does not speak MQTT v5": 1 is a 3.1.1 broker's
#: "unacceptable protocol version" (paho maps it to 132 for v5 clients), 132 a v5 one.
_UNSUPPORTED_PROTOCOL = frozenset({1, 132})

Protocol = Literal["5", "3.1.1"]


@dataclass(slots=True)
class PublisherStats:
    """Counters since start (read-only for callers)."""

    connected: bool = False
    protocol: Protocol | None = None  # of the current (or last) connection
    published_messages: int = 0  # acknowledged by the broker (PUBACK)
    published_readings: int = 0
    last_publish_ms: int | None = None  # wall time of the last PUBACK
    reconnects: int = 0  # successful connections after the first
    connect_failures: int = 0
    refused_messages: int = 0  # MQTT v5 PUBACK with a failure reason code
    in_flight: int = 0  # messages awaiting PUBACK now


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a publish with a failure reason code (MQTT v5 PUBACK)."""


class _CheckingClient(aiomqtt.Client):
    """aiomqtt client that does not count a refused publish as delivered.

    aiomqtt resolves ``publish()`` from paho's ``on_publish`` callback whatever the
    PUBACK's reason code. Under MQTT v5 a broker may refuse a message that way
    (e.g. 0x87 "Not authorized" from an ACL); its rows must stay queued. Such a
    publish is left unresolved here and :attr:`refused` ends the connection, so
    the rows are sent again after reconnecting (and the refusal is logged).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = asyncio.Event()
        self.refusal: ReasonCode | None = None
        self.receive_maximum: int | None = None  # from the v5 CONNACK, if the broker set one

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        # paho ignores the broker's MQTT v5 Receive Maximum (and cannot change its own
        # limit on an open connection); exceeding it is a protocol error that ends the
        # connection, so the drain loop keeps to it.
        self.receive_maximum = getattr(properties, "ReceiveMaximum", None)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason_code.is_failure:
            self.refusal = reason_code
            self.refused.set()
            return
        super()._on_publish(client, userdata, mid, reason_code, properties)


class _QuietLibraryLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """paho's and aiomqtt's own log lines, all at DEBUG.

    They would report every lost connection again (paho logs a broken socket as
    ERROR); the publisher logs losing and regaining the broker once itself.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


_LIBRARY_LOG = cast(logging.Logger, _QuietLibraryLog(logging.getLogger(f"{__name__}.mqtt")))


class _Lost(Exception):
    """The connection ended; carries why (for the one log line)."""


class _Refused(Exception):
    """The broker refused a message; the connection was closed to retry later."""


class Publisher:
    """Publishes queued readings; reconnects with backoff; keeps the retained status.

    Call :meth:`notify` after each commit to the queue, run :meth:`run` as a task,
    and :meth:`close` to shut down cleanly (retained ``offline`` status).
    """

    def __init__(
        self,
        *,
        gateway_id: str,
        mqtt: MqttSettings,
        queue: ReadingQueue,
        agent_version: str,
        shutdown_grace_s: float = 5.0,
    ) -> None:
        self.gateway_id = check_id(gateway_id, "gateway_id")
        self.settings = mqtt
        self.queue = queue
        self.agent_version = agent_version
        self.shutdown_grace_s = shutdown_grace_s  # close() waits this long for PUBACKs
        self.client_id = mqtt.client_id or f"electrocloud-edge-{gateway_id}"
        self.stats = PublisherStats()
        self._status_topic = status_topic(gateway_id)
        self._topics: dict[str, str] = {}
        self._protocol: Protocol = "3.1.1" if mqtt.protocol == "3.1.1" else "5"
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._acked: list[int] = []  # rows PUBACKed, deleted at the drain loop's next turn
        self._connected_once = False
        self._lost_at: float | None = None  # monotonic time the broker was lost
        self._failures = 0  # consecutive failed connections: the backoff exponent
        self._connected_at = 0.0  # monotonic time of the current connection
        self._refusing = False  # the broker refused a message and none was accepted since

    @property
    def broker(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # --- public API ---------------------------------------------------------------

    def notify(self) -> None:
        """New readings were committed: wake the drain loop (call on the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        """Connect, drain the queue, reconnect with backoff; until closed or cancelled."""
        if self._running:
            raise RuntimeError("Publisher.run() is already running")
        self._running = True
        self._stopped.clear()
        try:
            while not self._stopping.is_set():
                client = self._make_client()
                try:
                    async with client:
                        await self._serve(client)
                except MqttConnectError as exc:
                    if self._falls_back(exc):
                        continue
                    self._connect_failed(exc)
                except _Refused as exc:
                    self._refused(exc)
                except (aiomqtt.MqttError, _Lost) as exc:
                    if self.stats.connected:
                        self._connection_lost(exc)
                    else:
                        self._connect_failed(exc)
                else:
                    return  # _serve returns only when stopping
                finally:
                    self._session_ended()
                await self._backoff()
        finally:
            self._running = False
            self._stopped.set()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop: let outstanding PUBACKs arrive, publish retained ``offline``, disconnect.

        Readings not acknowledged by then stay queued for the next start.
        """
        self._stopping.set()
        self._wake.set()
        if self._running:
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout_s)
            except TimeoutError:
                log.warning("publisher did not stop within %.0f s", timeout_s)

    # --- connection ----------------------------------------------------------------

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        return encode_status(
            GatewayStatus(
                schema_version=1,
                gateway_id=self.gateway_id,
                state=state,
                ts_ms=int(time.time() * 1000),
                agent_version=self.agent_version,
                queue_depth=self.queue.depth(),
                oldest_queued_ts_ms=self.queue.oldest_ts_ms(),
            )
        )

    def _make_client(self) -> _CheckingClient:
        """A fresh client per connection: its will carries the connect time."""
        s = self.settings
        options: dict[str, Any] = {}
        if self._protocol == "5":
            options["protocol"] = aiomqtt.ProtocolVersion.V5
            # No broker-side session: the on-disk queue is the session. Unacked
            # messages are re-sent from it, not from the broker's or paho's memory.
            options["clean_start"] = True
        else:
            options["protocol"] = aiomqtt.ProtocolVersion.V311  # clean session by default
        if s.use_tls:
            options.update(_tls_options(s.tls or TlsSettings()))
        client = _CheckingClient(
            s.host,
            s.port,
            identifier=self.client_id,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            will=aiomqtt.Will(
                self._status_topic, self._status("offline"), qos=STATUS_QOS, retain=True
            ),
            keepalive=s.keepalive_s,
            # paho sends at most this many QoS 1 messages before their PUBACKs and
            # queues the rest in memory (the status message may be one of them).
            max_inflight_messages=s.max_inflight,
            timeout=10.0,  # CONNACK wait
            logger=_LIBRARY_LOG,
            **options,
        )
        # aiomqtt warns above this many concurrent calls; max_inflight of them is normal here.
        client.pending_calls_threshold = s.max_inflight + 2
        return client

    def _falls_back(self, exc: MqttConnectError) -> bool:
        """protocol "auto": after a broker refused MQTT v5, use 3.1.1 from now on."""
        rc = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        if (
            self.settings.protocol == "auto"
            and self._protocol == "5"
            and rc in _UNSUPPORTED_PROTOCOL
        ):
            log.warning("MQTT broker %s refused MQTT v5; using MQTT 3.1.1 from now on", self.broker)
            self._protocol = "3.1.1"
            return True
        return False

    async def _serve(self, client: _CheckingClient) -> None:
        """Drain while connected. Returns when stopping; raises when the connection ends."""
        self._connected(client)
        try:
            async with asyncio.TaskGroup() as group:
                watchers = [
                    group.create_task(_watch_disconnect(client)),
                    group.create_task(_watch_refusals(client)),
                    group.create_task(self._heartbeat(client)),
                ]
                # No timeout: the disconnect watcher ends this wait if the connection dies.
                await self._publish_status(client, "online", float("inf"))
                await self._drain(client, group)
                for watcher in watchers:
                    watcher.cancel()
        except BaseExceptionGroup as group_error:
            # Unwrap: one cause is enough to decide what happens next.
            lost, other = group_error.split((aiomqtt.MqttError, _Lost))
            if other is not None:
                await self._say_offline(client)
                raise other.exceptions[0] from group_error
            assert lost is not None
            cause = lost.exceptions[0]
            if isinstance(cause, PublishRefused):
                self.stats.refused_messages += 1
                await self._say_offline(client)
                raise _Refused(str(cause)) from cause
            reason = f"{cause}: {cause.__cause__}" if cause.__cause__ else str(cause)
            raise _Lost(reason) from cause
        except BaseException:  # cancelled: say offline before the graceful DISCONNECT
            await self._say_offline(client)
            raise
        await self._say_offline(client)

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        """Refresh the retained online status (with the backlog) every status interval."""
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            await self._publish_status(client, "online", self.settings.status_interval_s)

    async def _publish_status(
        self, client: aiomqtt.Client, state: Literal["online", "offline"], timeout_s: float
    ) -> None:
        payload = self._status(state)
        await client.publish(
            self._status_topic, payload, qos=STATUS_QOS, retain=True, timeout=timeout_s
        )

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Best effort: a graceful DISCONNECT discards the will, so publish it ourselves."""
        with contextlib.suppress(aiomqtt.MqttError):
            await self._publish_status(client, "offline", _STATUS_TIMEOUT_S)

    def _connected(self, client: _CheckingClient) -> None:
        self.queue.rewind()  # whatever was handed out before is re-sent, oldest first
        self.stats.connected = True
        self.stats.protocol = self._protocol
        self._connected_at = time.monotonic()
        depth = self.queue.depth()
        if self._lost_at is not None and self._connected_once:
            log.warning(
                "MQTT broker %s is back after %.1f s (MQTT %s); %d readings queued",
                self.broker,
                time.monotonic() - self._lost_at,
                self._protocol,
                depth,
            )
        elif self._connected_once:  # after a refusal: already logged
            log.debug("reconnected to MQTT broker %s", self.broker)
        else:
            retried = (
                f", after {time.monotonic() - self._lost_at:.1f} s of retries"
                if self._lost_at is not None
                else ""
            )
            log.info(
                "connected to MQTT broker %s as %s (MQTT %s%s); %d readings queued",
                self.broker,
                self.client_id,
                self._protocol,
                retried,
                depth,
            )
        if self._connected_once:
            self.stats.reconnects += 1
        self._connected_once = True
        self._lost_at = None

    def _session_ended(self) -> None:
        self._flush_acks()  # rows PUBACKed before the end are not re-sent
        self.queue.rewind()
        if self.stats.connected and time.monotonic() - self._connected_at >= _STABLE_CONNECTION_S:
            self._failures = 0
        self.stats.connected = False
        self.stats.in_flight = 0

    def _connection_lost(self, exc: BaseException) -> None:
        self._lost_at = time.monotonic()
        self._failures += 1
        log.warning(
            "lost MQTT broker %s: %s; %d readings stay queued and are sent after reconnecting",
            self.broker,
            exc,
            self.queue.depth(),
        )

    def _refused(self, exc: BaseException) -> None:
        self._failures += 1
        if not self._refusing:
            self._refusing = True
            log.error(
                "MQTT broker %s: %s; the readings stay queued and are retried with backoff "
                "(check the broker's ACL: %s publishes to %s and %s)",
                self.broker,
                exc,
                self.settings.username or "anonymous",
                readings_topic(self.gateway_id, "METER_ID"),
                self._status_topic,
            )

    def _connect_failed(self, exc: BaseException) -> None:
        self.stats.connect_failures += 1
        self._failures += 1
        if self._lost_at is None:  # first failure of this outage: say it once
            self._lost_at = time.monotonic()
            log.warning(
                "cannot connect to MQTT broker %s: %s; readings are queued, retrying with backoff",
                self.broker,
                exc,
            )
        else:
            log.debug("MQTT broker %s still unreachable: %s", self.broker, exc)

    async def _backoff(self) -> None:
        """Exponential backoff with jitter, interrupted by close()."""
        s = self.settings
        delay = min(s.reconnect_max_s, s.reconnect_min_s * 2 ** max(0, self._failures - 1))
        delay = min(s.reconnect_max_s, delay * random.uniform(1.0, 1.25))  # jitter
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # --- draining -------------------------------------------------------------------

    async def _drain(self, client: _CheckingClient, group: asyncio.TaskGroup) -> None:
        """Keep up to max_inflight batches awaiting PUBACK; return once stopping."""
        s = self.settings
        max_inflight = min(s.max_inflight, client.receive_maximum or s.max_inflight)
        publishing: set[asyncio.Task[None]] = set()
        while True:
            self._wake.clear()  # before looking at the queue: a notify() after this wakes us
            self._flush_acks()
            if self._stopping.is_set():
                break
            # A finished task wakes us before its done-callbacks would run: prune here.
            publishing = {task for task in publishing if not task.done()}
            free = max_inflight - len(publishing)
            if free > 0:
                batches = self.queue.next_batches(
                    max_readings=s.max_batch_readings,
                    max_messages=free,
                    max_bytes=MAX_PAYLOAD_BYTES - _ENVELOPE_BYTES,
                )
                for batch in batches:
                    publishing.add(group.create_task(self._publish(client, batch)))
                self.stats.in_flight = len(publishing)
            await self._wake.wait()
        # Stopping: give outstanding messages a moment to be acknowledged; the rest
        # stays queued for the next start.
        publishing = {task for task in publishing if not task.done()}
        if publishing:
            await asyncio.wait(publishing, timeout=self.shutdown_grace_s)
        for task in publishing:
            task.cancel()
        self._flush_acks()

    async def _publish(self, client: aiomqtt.Client, batch: QueuedBatch) -> None:
        topic = self._topics.get(batch.meter_id)
        if topic is None:
            topic = self._topics[batch.meter_id] = readings_topic(self.gateway_id, batch.meter_id)
        payload = encode_batch(
            ReadingBatch(
                schema_version=1,
                gateway_id=self.gateway_id,
                meter_id=batch.meter_id,
                readings=batch.readings,
            )
        )
        # For QoS 1, aiomqtt's publish() returns only once paho's on_publish callback
        # fired, which paho calls on receiving the PUBACK (_handle_pubackcomp), not when
        # the bytes were written. No timeout: a dead connection is detected by the
        # keepalive and the disconnect watcher, which cancels this task.
        await client.publish(topic, payload, qos=READINGS_QOS, timeout=float("inf"))
        self._acked.extend(batch.row_ids)
        self.stats.in_flight = max(0, self.stats.in_flight - 1)
        self.stats.published_messages += 1
        self.stats.published_readings += len(batch.readings)
        self.stats.last_publish_ms = int(time.time() * 1000)
        if self._refusing:
            self._refusing = False
            log.warning("MQTT broker %s accepts the readings again", self.broker)
        self._wake.set()

    def _flush_acks(self) -> None:
        """Delete acknowledged rows: all PUBACKs since the last turn in one transaction."""
        if self._acked:
            acked, self._acked = self._acked, []
            self.queue.ack(acked)


async def _watch_disconnect(client: aiomqtt.Client) -> None:
    """Raise MqttError when the connection drops (aiomqtt's documented signal for it).

    Needed because aiomqtt does not wake pending publishes on a disconnect.
    Nothing is subscribed, so no message ever arrives.
    """
    async for _ in client.messages:
        pass


async def _watch_refusals(client: _CheckingClient) -> None:
    await client.refused.wait()
    raise PublishRefused(f"broker refused a message: {client.refusal}")


def _tls_options(tls: TlsSettings) -> dict[str, Any]:
    return {
        "tls_params": aiomqtt.TLSParameters(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,  # None: the system CAs
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        ),
        "tls_insecure": tls.insecure,
    }
