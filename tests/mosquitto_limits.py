"""Measures the Mosquitto limits the backend depends on, against a real broker.

Run as a script to print the figures quoted in docs/backend.md::

    python tests/mosquitto_limits.py

The test module ``test_backend_mosquitto_limits.py`` runs the same measurements
and asserts on them.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).parent))

from services import MosquittoBroker

#: Mosquitto's built-in defaults, spelled out (tests/services.py sets both to 0).
DEFAULT_LIMITS = "max_inflight_messages 20\nmax_queued_messages 1000"


class Subscriber:
    """A v5 persistent-session subscriber with manual acks that records what arrives."""

    def __init__(self, port: int, client_id: str, *, receive_maximum: int | None = None) -> None:
        self.port = port
        self.messages: list[mqtt.MQTTMessage] = []
        self._suback = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda *args: self._suback.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not connected.wait(10):
            raise TimeoutError("subscriber did not connect")

    def subscribe(self, topic: str) -> None:
        """Subscribe and wait for SUBACK."""
        self._suback.clear()
        self.client.subscribe(topic, qos=1)
        if not self._suback.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def sync(self) -> int:
        """Round trip to the broker; every PUBLISH it sent before has then arrived.

        The broker writes packets to a client in order, so the SUBACK of a fresh
        subscription comes after every message it had already sent us.
        """
        self.subscribe("sync/never-published")
        return len(self.messages)

    def ack(self, message: mqtt.MQTTMessage) -> None:
        self.client.ack(message.mid, message.qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(port: int, topic: str, count: int) -> None:
    """Publish ``count`` QoS 1 messages and wait until the broker acknowledged all."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, str(i).encode(), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def offline_survivors(port: int, published: int) -> int:
    """Messages an offline persistent session receives out of ``published`` sent meanwhile."""
    sub = Subscriber(port, "offline-sub")
    sub.subscribe("limits/offline")
    sub.close()
    publish(port, "limits/offline", published)
    sub = Subscriber(port, "offline-sub")
    received = drain(sub)
    sub.close()
    return len({m.payload for m in sub.messages[:received]})


def drain(sub: Subscriber, acked: int = 0) -> int:
    """Acknowledge everything as it arrives until the broker has nothing more to send.

    ``acked``: how many of the first messages were acknowledged already.
    """
    while True:
        while acked < len(sub.messages):
            sub.ack(sub.messages[acked])
            acked += 1
        # PUBACKs go out before the SUBSCRIBE, so whatever they released comes before SUBACK.
        if sub.sync() == acked:
            return acked


def stalled_survivors(port: int, receive_maximum: int, published: int) -> int:
    """Messages a connected subscriber that acknowledges nothing (store down) ends up with."""
    sub = Subscriber(port, "stalled-sub", receive_maximum=receive_maximum)
    sub.subscribe("limits/stalled")
    publish(port, "limits/stalled", published)
    received = drain(sub)
    sub.close()
    return len({m.payload for m in sub.messages[:received]})


def receive_maximum_window(port: int, receive_maximum: int, published: int) -> tuple[int, int, int]:
    """(arrived with no ack, arrived after acking one, arrived after acking all as they come)."""
    sub = Subscriber(port, "window-sub", receive_maximum=receive_maximum)
    sub.subscribe("limits/window")
    publish(port, "limits/window", published)
    unacked = sub.sync()
    sub.ack(sub.messages[0])
    after_one = sub.sync()
    total = drain(sub, acked=1)
    sub.close()
    return unacked, after_one, total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (
            ("defaults (max_queued_messages 1000)", DEFAULT_LIMITS),
            ("max_queued_messages 0 (no limit)", "max_queued_messages 0"),
        ):
            with MosquittoBroker(Path(tmp) / label.split()[0], extra_config=extra) as broker:
                got = offline_survivors(broker.port, 1500)
                print(f"{label}: offline persistent session received {got} of 1500")
                got = stalled_survivors(broker.port, 100, 1500)
                print(f"{label}: connected, not acknowledging, receive maximum 100: {got} of 1500")
        with MosquittoBroker(Path(tmp) / "window", extra_config=DEFAULT_LIMITS) as broker:
            unacked, after_one, total = receive_maximum_window(broker.port, 10, 100)
            print(
                f"receive maximum 10, max_inflight_messages 20: {unacked} arrive unacknowledged; "
                f"after one PUBACK {after_one} have arrived; all acked: {total} of 100"
            )


if __name__ == "__main__":
    main()
