"""Helpers for the production-stack tests: the shipped broker config on a real
mosquitto, MQTT probe clients, and the offline checkers under tools/flux-check/."""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from services import IN_CI, MosquittoBroker, free_port, require_binary

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO_DIR = REPO / "mosquitto"
TOOLS_DIR = REPO / "tools" / "flux-check"
BACKEND_USER = "electrocloud-backend"


# --- the shipped broker configuration ---------------------------------------------


def run_script(script: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run one of the shipped shell scripts; stdout, or AssertionError with stderr."""
    result = subprocess.run(
        ["sh", str(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, f"{script.name} {args} failed: {result.stderr}"
    return result.stdout


class ShippedConfigBroker(MosquittoBroker):
    """mosquitto running ``mosquitto/mosquitto.conf`` and ``mosquitto/acl`` as shipped.

    Only what cannot work outside the container changes: the two listeners move to
    free loopback ports, the container paths to ``workdir``, stdout logging to a file.
    Every rewrite must match exactly once, so a reshaped config fails loudly here.
    """

    def __init__(self, workdir: Path, *, password_file: Path, cert_dir: Path) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        self.password_file = password_file
        self.cert_dir = cert_dir

    def _write_config(self) -> Path:
        text = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
        rewrites = [
            ("listener 1883 0.0.0.0", f"listener {self.port} 127.0.0.1"),
            ("listener 8883 0.0.0.0", f"listener {self.tls_port} 127.0.0.1"),
            ("password_file /mosquitto/auth/passwd", f"password_file {self.password_file}"),
            ("acl_file /mosquitto/config/acl", f"acl_file {MOSQUITTO_DIR / 'acl'}"),
            ("persistence_location /mosquitto/data/", f"persistence_location {self.workdir}/"),
            ("log_dest stdout", f"log_dest file {self.log_path}"),
        ]
        for old, new in rewrites:
            assert text.count(old) == 1, f"mosquitto.conf: expected {old!r} exactly once"
            text = text.replace(old, new)
        assert text.count("/mosquitto/certs/") == 3, "cafile, certfile and keyfile"
        text = text.replace("/mosquitto/certs/", f"{self.cert_dir}/")
        settings = [line for line in text.splitlines() if not line.startswith("#")]
        left = [line for line in settings if re.search(r"(^|\s)/mosquitto/", line)]
        assert not left, f"container paths left unrewritten: {left}"
        if os.geteuid() == 0:
            # As root mosquitto drops to user 'mosquitto', which cannot read tmp files.
            text += "\nuser root\n"
        config = self.workdir / "mosquitto.conf"
        config.write_text(text)
        return config


# --- MQTT probe clients -------------------------------------------------------------


@dataclass
class Probe:
    """A paho client that records what happens to it."""

    client: mqtt.Client
    connack: queue.Queue[ReasonCode] = field(default_factory=queue.Queue)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[ReasonCode]] = field(default_factory=queue.Queue)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def wait_connack(self, timeout_s: float = 10.0) -> ReasonCode:
        return self.connack.get(timeout=timeout_s)

    def subscribe(self, topic: str, timeout_s: float = 10.0) -> list[ReasonCode]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=timeout_s)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1; the reason code of the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def next_message(self, timeout_s: float = 10.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def probe(
    port: int,
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    cert: tuple[Path, Path] | None = None,
    tls: bool = False,
) -> Probe:
    """Connect an MQTT v5 client in the background; its CONNACK arrives in ``connack``."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    result = Probe(client)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(
            ca_certs=str(ca_file) if ca_file else None,
            certfile=str(cert[0]) if cert else None,
            keyfile=str(cert[1]) if cert else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )

    def on_connect(c: Any, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        result.connack.put(reason)

    def on_subscribe(c: Any, u: Any, mid: int, reasons: list[ReasonCode], p: Any) -> None:
        result.subacks.put(reasons)

    def on_message(c: Any, u: Any, message: mqtt.MQTTMessage) -> None:
        result.messages.put(message)

    def on_publish(c: Any, u: Any, mid: int, reason: ReasonCode, p: Any) -> None:
        result.pubacks[mid] = reason  # set before paho marks the message published

    def on_disconnect(c: Any, u: Any, f: Any, reason: ReasonCode, p: Properties | None) -> None:
        result.disconnected.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect("127.0.0.1", port)  # raises for a TLS handshake the client refuses
    client.loop_start()
    return result


# --- node tools (tools/flux-check) -------------------------------------------------


def require_node_tools() -> Path:
    """tools/flux-check with its node_modules (``npm ci`` from the lock file if missing)."""
    node = require_binary("node", "nodejs")
    npm = require_binary("npm", "npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"v(\d+)\.(\d+)", version)
    # module.register (the hooks that load libflux) came with 20.6 and 18.19.
    found = (int(match[1]), int(match[2])) if match else (0, 0)
    if found < (18, 19) or (found[0] == 19) or (found[0] == 20 and found[1] < 6):
        message = f"node >= 20.6 (or 18.19) needed, found {version.strip()!r}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    _npm_ci(npm)
    return TOOLS_DIR


@functools.cache
def _npm_ci(npm: str) -> None:
    marker = TOOLS_DIR / "node_modules" / ".package-lock.json"
    if (
        marker.exists()
        and marker.stat().st_mtime >= (TOOLS_DIR / "package-lock.json").stat().st_mtime
    ):
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=TOOLS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"npm ci in {TOOLS_DIR} failed:\n{result.stderr}"


@dataclass(frozen=True)
class FluxVerdict:
    valid: bool
    diagnostics: tuple[str, ...]


def flux_check(queries: dict[str, str]) -> tuple[str, dict[str, FluxVerdict]]:
    """Run libflux's semantic check on every query: ``(libflux version, verdicts)``."""
    tools = require_node_tools()
    node = shutil.which("node") or "node"
    result = subprocess.run(
        [node, str(tools / "flux-check.mjs")],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"flux-check.mjs failed:\n{result.stderr}"
    answer = json.loads(result.stdout)
    verdicts = {
        name: FluxVerdict(bool(v["valid"]), tuple(v["diagnostics"]))
        for name, v in answer["results"].items()
    }
    return str(answer["libflux"]), verdicts


def grafana_schemas() -> dict[str, Any]:
    """JSON Schemas generated from Grafana's published dashboard and panel types."""
    tools = require_node_tools()
    node = shutil.which("node") or "node"
    result = subprocess.run(
        [node, str(tools / "grafana-schema.mjs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"grafana-schema.mjs failed:\n{result.stderr}"
    schemas: dict[str, Any] = json.loads(result.stdout)
    return schemas
