"""Helpers for end-to-end tests: a recording MQTT subscriber and process control."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from electrocloud.contract import Reading, decode_batch, parse_readings_topic


class ReadingRecorder:
    """Subscribes to every readings topic with a persistent MQTT v5 session and records.

    The session (fixed client id, no clean start, long expiry) survives broker
    restarts when the broker persists, so nothing published meanwhile is missed.
    """

    def __init__(self, port: int, *, client_id: str = "test-recorder") -> None:
        self.received: dict[str, list[Reading]] = defaultdict(list)
        self.gateways: set[str] = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(0.2, 1)
        self.port = port
        self._connected = threading.Event()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe("electrocloud/v1/+/+/readings", qos=1)
        self._connected.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        gateway, meter = parse_readings_topic(msg.topic)
        batch = decode_batch(msg.payload, now_ms=-1)
        assert (batch.gateway_id, batch.meter_id) == (gateway, meter)
        with self.lock:
            self.gateways.add(gateway)
            self.received[meter].extend(batch.readings)

    def __enter__(self) -> ReadingRecorder:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("recorder could not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def count(self) -> int:
        with self.lock:
            return sum(len(r) for r in self.received.values())

    def by_meter(self) -> dict[str, list[Reading]]:
        with self.lock:
            return {meter: list(readings) for meter, readings in self.received.items()}


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def start_cli(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Run ``electrocloud ARGS`` as a child process, logging to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "electrocloud.cli", *args], stdout=log, stderr=log, env=env
    )
    log.close()
    return process


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("process did not stop on SIGTERM") from None
    return process.returncode
