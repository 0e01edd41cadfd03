"""Helpers for the backend tests: contract payloads, a QoS 1 publisher, backend processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families
from services import free_port

from electrocloud.contract import (
    Reading,
    ReadingBatch,
    encode_batch,
    readings_topic,
)
from electrocloud.storage import StoredReading

REPO = Path(__file__).resolve().parent.parent


def wait_until(
    condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def make_readings(meter_index: int, start_seq: int, count: int, base_ms: int) -> list[Reading]:
    """Distinct, plausible readings: one a minute, values derived from meter and seq."""
    return [
        Reading(
            ts_ms=base_ms + seq * 60_000,
            seq=seq,
            import_kwh=1000.0 * meter_index + seq * 0.25,
            export_kwh=seq * 0.01,
            power_w=1500.0 + meter_index - seq % 7,
            frequency_hz=50.0,
        )
        for seq in range(start_seq, start_seq + count)
    ]


def batch_payload(gateway_id: str, meter_id: str, readings: list[Reading]) -> bytes:
    return encode_batch(
        ReadingBatch(
            schema_version=1, gateway_id=gateway_id, meter_id=meter_id, readings=tuple(readings)
        )
    )


def stored(gateway_id: str, meter_id: str, readings: Iterable[Reading]) -> list[StoredReading]:
    return [StoredReading.from_contract(gateway_id, meter_id, r) for r in readings]


def base_ms() -> int:
    """A day ago: well inside the accepted time window."""
    return (int(time.time()) - 86400) * 1000


class Publisher:
    """A paho QoS 1 publisher; ``publish`` returns once the broker acknowledged."""

    def __init__(self, port: int, client_id: str = "") -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.pending: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, *, wait: bool = True) -> None:
        info = self.client.publish(topic, payload, qos=1)
        self.pending.append(info)
        if wait:
            self.flush()

    def publish_batch(self, gateway_id: str, meter_id: str, readings: list[Reading]) -> None:
        self.publish(
            readings_topic(gateway_id, meter_id),
            batch_payload(gateway_id, meter_id, readings),
            wait=False,
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        for info in self.pending:
            info.wait_for_publish(timeout_s)
            assert info.is_published(), "broker did not acknowledge a publish"
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


def backend_config(
    workdir: Path,
    broker_port: int,
    *,
    name: str,
    http_port: int | None = None,
    registry: Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A backend config for tests: short delays, files under ``workdir``."""
    config: dict[str, Any] = {
        "mqtt": {
            "url": f"mqtt://127.0.0.1:{broker_port}",
            "client_id": f"test-backend-{name}",
            "session_expiry_s": 3600,
            "receive_maximum": 50,
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
        },
        "store": {
            "sqlite": {"path": str(workdir / "readings.sqlite"), "busy_timeout_ms": 200},
            "retry_min_s": 0.05,
            "retry_max_s": 0.2,
        },
        "batch": {"max_readings": 500, "max_delay_ms": 50},
        "dead_letter": {"path": str(workdir / "dead-letters.sqlite")},
        "http": {"port": http_port if http_port is not None else free_port()},
        "shutdown_timeout_s": 2,
    }
    if registry is not None:
        config["registry"] = str(registry)
    for section, values in overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


class BackendProcess:
    """``python -m electrocloud.cli backend`` as a real subprocess."""

    def __init__(self, workdir: Path, config: dict[str, Any], name: str) -> None:
        self.workdir = workdir
        self.name = name
        self.config = config
        self.config_path = workdir / f"backend-{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"backend-{name}.log"
        self.http_port = int(config["http"]["port"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BackendProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "electrocloud.cli",
                "backend",
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
        log.close()
        wait_until(self._alive, 30, f"backend {self.name} serving /healthz")
        return self

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"backend {self.name} exited:\n{self.log()}")
        try:
            return self._get("/healthz")[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"backend {self.name} exited:\n{self.log()}")
        try:
            return self._get("/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 30.0) -> BackendProcess:
        wait_until(self.ready, timeout_s, f"backend {self.name} ready")
        return self

    def metrics(self) -> dict[str, float]:
        """Samples by name (labels appended as name{k=v}); counters with their _total."""
        status, text = self._get("/metrics")
        assert status == 200
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"backend {self.name} ignored SIGTERM:\n{self.log()}") from None

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class InProcessBackend:
    """A BackendService in this process (real broker, files and HTTP), for introspection."""

    def __init__(self, workdir: Path, config: dict[str, Any], name: str = "inproc") -> None:
        from backend.config import BackendSettings
        from backend.service import BackendService
        from electrocloud.config import load_settings

        path = workdir / f"backend-{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.service = BackendService(load_settings(BackendSettings, path))
        self._stop = threading.Event()

    def __enter__(self) -> InProcessBackend:
        assert self.service.start(self._stop)
        wait_until(lambda: self.service.ready()[0], 30, "in-process backend ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.service.stop()
