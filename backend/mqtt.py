"""MQTT side of the backend: a persistent v5 session on a shared subscription, manual acks.

paho runs the network loop in its own thread and calls ``on_delivery`` there for
every message; nothing is acknowledged until the pipeline calls :meth:`ack`
(from its writer thread) after the message is durably handled.

Why acks carry a connection generation: packet ids are per connection, and on
reconnect the broker resends every unacknowledged message of the session itself.
An ack for a message from an earlier connection is therefore dropped instead of
sent (it could acknowledge a different message that reuses the id); the resent
copy is written again (idempotently) and acknowledged on the new connection.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from backend.config import MqttSettings
from backend.metrics import BackendMetrics
from electrocloud.contract import READINGS_QOS, readings_subscription
from electrocloud.mqtt_settings import BrokerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received MQTT message and what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int  # backend clock, UTC ms
    generation: int  # connection it arrived on (see module docstring)


def apply_credentials(client: mqtt.Client, settings: BrokerSettings) -> None:
    """Username/password and TLS of ``settings`` on a paho client (before connecting)."""
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.use_tls:
        tls = settings.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
            certfile=str(tls.cert_file) if tls and tls.cert_file else None,
            keyfile=str(tls.key_file) if tls and tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if tls is not None and tls.insecure:
            client.tls_insecure_set(True)  # no hostname check: test setups only


class MqttConsumer:
    def __init__(
        self,
        settings: MqttSettings,
        on_delivery: Callable[[Delivery], object],
        metrics: BackendMetrics,
    ) -> None:
        self.settings = settings
        self.client_id = settings.effective_client_id()
        self.v5 = settings.protocol == "5"
        # Shared subscriptions are an MQTT v5 feature: under 3.1.1 one process takes all.
        self.subscription = readings_subscription(settings.share_group if self.v5 else None)
        self._on_delivery = on_delivery
        self._metrics = metrics
        self._lock = threading.Lock()  # guards generation/connected against acks
        self._generation = 0
        self._connected = False
        self._subscribed = False
        self._stopped = False
        self._resyncing = False  # an intended disconnect: not worth a warning
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            # 3.1.1 spells the persistent session clean_session=False; v5 uses clean_start.
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        s = self.settings
        apply_credentials(client, s)
        client.reconnect_delay_set(
            min_delay=max(1, round(s.reconnect_min_s)), max_delay=max(1, round(s.reconnect_max_s))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call,unused-ignore]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        # Flow control: the broker sends at most this many unacknowledged messages.
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    # --- lifecycle (any thread) ----------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        log.info(
            "connecting to %s as %r, subscription %s",
            self.settings.url,
            self.client_id,
            self.subscription,
        )
        if self.v5:
            self._client.connect_async(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=False,  # resume the persistent session
                properties=self._connect_properties(),
            )
        else:
            self._client.connect_async(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
            )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly; acks queued before this call are sent before DISCONNECT."""
        with self._lock:
            self._stopped = True
        self._client.disconnect()
        self._client.loop_stop()

    def resync(self) -> None:
        """Reconnect so the broker resends messages this process left unacknowledged."""
        with self._lock:
            if self._stopped:
                return
            self._resyncing = True
        log.info("reconnecting to have deferred messages redelivered")
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            if self._stopped:
                return
        self.start()

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._connected and self._subscribed

    # --- acknowledgement (writer thread) -------------------------------------

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge ``delivery`` if it came on the current connection."""
        with self._lock:
            if not self._connected or delivery.generation != self._generation:
                return False
            # ack() only queues the PUBACK for paho's network thread (a deque append
            # plus a wake-up byte), so it is safe to call here.
            self._client.ack(delivery.mid, delivery.qos)
            return True

    # --- paho callbacks (paho's network thread) -------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
            self._subscribed = False
            self._resyncing = False
        self._metrics.mqtt_connected.set(1)
        log.info("connected (session present: %s)", flags.session_present)
        if self.v5:
            client.subscribe(self.subscription, options=SubscribeOptions(qos=READINGS_QOS))
        else:
            client.subscribe(self.subscription, qos=READINGS_QOS)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[Any],
        properties: Properties | None,
    ) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            log.error("subscription to %s refused: %s", self.subscription, failed)
            return
        with self._lock:
            self._subscribed = True
        log.info("subscribed to %s", self.subscription)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: Any,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._generation += 1
            self._connected = False
            self._subscribed = False
            intended = self._stopped or self._resyncing
        self._metrics.mqtt_connected.set(0)
        if not intended:
            log.warning("disconnected from broker: %s; reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers reject these; dead-letter it if one comes
            topic = "<topic not valid UTF-8>"
        delivery = Delivery(
            topic=topic,
            payload=bytes(message.payload),
            mid=message.mid,
            qos=message.qos,
            received_ms=int(time.time() * 1000),
            generation=generation,
        )
        try:
            self._on_delivery(delivery)
        except Exception:
            # An exception here would end paho's network thread; the message stays
            # unacknowledged and comes back on the next connection instead.
            log.exception("failed to take message on %s", topic)
