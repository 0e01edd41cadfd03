"""``electrocloud simulate`` as a real subprocess: serves Modbus, writes configs, stops cleanly."""

from __future__ import annotations

import csv
import signal
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pymodbus.client import ModbusTcpClient
from services import free_port, wait_for_port

from edge.config import EdgeSettings, TcpConnection
from electrocloud.config import load_settings
from simulator.fleet import build_fleet
from simulator.registers import CLOCK_MS, IMPORT_KWH, decode_clock_ms, decode_float

START_ISO = "2025-06-01T00:00:00Z"
START_MS = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)


def f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def simulate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "electrocloud.cli", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_simulate_serves_the_fleet_writes_configs_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    edge_yaml = tmp_path / "edge.yaml"
    truth = tmp_path / "truth.csv"
    process = simulate(
        "--meters", "4", "--seed", "5", "--speed", "3600", "--start", START_ISO,
        "--port", str(port), "--edge-config", str(edge_yaml), "--ground-truth", str(truth),
        "--mqtt-url", "mqtt://127.0.0.1:1888", "--poll-interval", "0.5", "--duration", "120",
    )  # fmt: skip
    try:
        wait_for_port(port, timeout_s=60)
        client = ModbusTcpClient("127.0.0.1", port=port)
        assert client.connect()
        ts_ms = decode_clock_ms(
            client.read_input_registers(CLOCK_MS, count=4, device_id=2).registers
        )
        import_regs = client.read_input_registers(IMPORT_KWH, count=2, device_id=2).registers
        client.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr

    expected = build_fleet(meters=4, seed=5, start_ms=START_MS)
    assert ts_ms >= START_MS
    assert decode_float(import_regs) == f32(expected[1].state_at(ts_ms).import_kwh)
    assert "simulating 4 meters:" in stderr and f"127.0.0.1:{port}" in stderr
    assert "speed 3600x" in stderr and "start 2025-06-01T00:00:00Z" in stderr

    settings = load_settings(EdgeSettings, edge_yaml)
    assert settings.gateway_id == "gw-sim"
    assert settings.mqtt.url == "mqtt://127.0.0.1:1888"
    (connection,) = settings.connections
    assert isinstance(connection, TcpConnection)
    assert (connection.name, connection.host, connection.port) == ("sim", "127.0.0.1", port)
    assert [(m.meter_id, m.unit_id, m.profile) for m in settings.meters] == [
        (m.meter_id, m.unit_id, f"simulated-{m.model.value}") for m in expected
    ]
    assert all(m.time_source == "device" and m.poll_interval_s == 0.5 for m in settings.meters)

    with truth.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["meter_id"], int(r["ts_ms"])) for r in rows] == [("m-0002", ts_ms)]
    assert float(rows[0]["import_kwh"]) == expected[1].state_at(ts_ms).import_kwh


def test_simulate_stops_after_duration_and_rejects_bad_options(tmp_path: Path) -> None:
    edge_yaml = tmp_path / "edge.yaml"
    process = simulate(
        "--meters", "2", "--port", "0", "--duration", "0.5", "--edge-config", str(edge_yaml)
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    settings = load_settings(EdgeSettings, edge_yaml)
    (connection,) = settings.connections
    assert isinstance(connection, TcpConnection)
    assert connection.port > 0  # the port the OS picked, not 0
    assert "stopping at simulated" in stderr

    bad = simulate("--meters", "2", "--start", "yesterday")
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 2
    assert "--start" in stderr and "not an ISO 8601 time" in stderr
