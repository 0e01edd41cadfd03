"""End to end: simulator (real Modbus TCP) -> edge agent -> real Mosquitto -> subscriber."""

from __future__ import annotations

import signal
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_support import ReadingRecorder, start_cli, stop_process, wait_until
from services import MosquittoBroker

from simulator.clock import SimClock
from simulator.fleet import build_fleet
from simulator.model import SimulatedMeter
from simulator.server import MeterServer

START_MS = 1_760_000_400_000  # 2025-10-09T09:00Z: daylight, so PV meters export
SPEED = 120.0  # two simulated minutes per real second


def f32(value: float) -> float:
    """What a float32 register holds for ``value``: the exact value the edge must publish."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


@pytest.fixture
def fleet() -> list[SimulatedMeter]:
    return build_fleet(meters=5, seed=7, start_ms=START_MS)


@pytest.fixture
def meter_server(fleet: list[SimulatedMeter]) -> Iterator[MeterServer]:
    server = MeterServer(fleet, SimClock(START_MS, speed=SPEED))
    with server.serve_in_thread():
        yield server


def edge_config(
    tmp_path: Path, broker: MosquittoBroker, fleet: list[SimulatedMeter], modbus_port: int
) -> Path:
    config = {
        "gateway_id": "gw-e2e",
        "mqtt": {"url": broker.url, "max_batch_readings": 20},
        "queue": {"path": str(tmp_path / "queue.sqlite"), "commit_interval_s": 0.2},
        "connections": [{"name": "sim", "host": "127.0.0.1", "port": modbus_port}],
        "meters": [
            {
                "meter_id": meter.meter_id,
                "connection": "sim",
                "unit_id": meter.unit_id,
                "profile": f"simulated-{meter.model}",
                "poll_interval_s": 0.25,
                "time_source": "device",
            }
            for meter in fleet
        ],
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def committed_counts(queue_path: Path) -> tuple[dict[str, int], int]:
    """(next seq per meter, rows still waiting) from the edge's queue file."""
    if not queue_path.exists():
        return {}, 0
    # Read-only: never create the file or its tables before the agent does.
    with sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True) as conn:
        try:
            next_seq = dict(conn.execute("SELECT meter_id, next_seq FROM meter_seq").fetchall())
            waiting = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:  # the agent is still creating its schema
            return {}, 0
    return next_seq, waiting


def missing_seqs(received: dict[str, list], next_seq: dict[str, int]) -> dict[str, list[int]]:
    seen = {meter: {r.seq for r in readings} for meter, readings in received.items()}
    return {
        meter: sorted(set(range(count)) - seen.get(meter, set()))
        for meter, count in next_seq.items()
        if set(range(count)) - seen.get(meter, set())
    }


def assert_complete(received: dict[str, list], next_seq: dict[str, int]) -> None:
    """Every committed seq arrived; a repeated seq is an exact redelivery."""
    assert set(received) == set(next_seq)
    for meter_id, readings in received.items():
        by_seq: dict[int, object] = {}
        for reading in readings:
            assert by_seq.setdefault(reading.seq, reading) == reading, (meter_id, reading.seq)
        assert sorted(by_seq) == list(range(next_seq[meter_id])), meter_id


def test_every_reading_arrives_equal_to_ground_truth(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    fleet: list[SimulatedMeter],
    meter_server: MeterServer,
) -> None:
    config = edge_config(tmp_path, mosquitto, fleet, meter_server.port)
    with ReadingRecorder(mosquitto.port) as recorder:
        edge = start_cli(["edge", "--config", str(config)], tmp_path / "edge.log")
        try:
            wait_until(lambda: recorder.count() >= 5 * 12, 60, "readings from every meter")
        finally:
            assert stop_process(edge) == 0, (tmp_path / "edge.log").read_text()
        next_seq, waiting = committed_counts(tmp_path / "queue.sqlite")
        assert waiting == 0  # a clean stop drains what the broker acknowledged
        wait_until(lambda: recorder.count() >= sum(next_seq.values()), 10, "last messages")
        received = recorder.by_meter()

    assert recorder.gateways == {"gw-e2e"}
    assert_complete(received, next_seq)
    meters = {meter.meter_id: meter for meter in fleet}
    phases_seen = set()
    for meter_id, readings in received.items():
        meter = meters[meter_id]
        assert [r.seq for r in readings] == sorted(r.seq for r in readings)
        for reading in readings:
            truth = meter.state_at(reading.ts_ms)  # ts_ms is the simulator's snapshot time
            assert reading.import_kwh == f32(truth.import_kwh)
            assert reading.export_kwh == f32(truth.export_kwh)
            assert reading.power_w == f32(truth.power_w)
            assert reading.frequency_hz == f32(truth.frequency_hz)
            assert reading.voltage_v is not None and reading.current_a is not None
            voltages = [reading.voltage_v.l1, reading.voltage_v.l2, reading.voltage_v.l3]
            present = [v for v in voltages if v is not None]
            assert present == [f32(v) for v in truth.voltage_v]
            phases_seen.add(len(present))
            assert reading.flags == ()
    assert phases_seen == {1, 3} or phases_seen == {3}  # SDM120 omit l2/l3 entirely


def test_broker_outage_and_kill_minus_9_lose_nothing(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    fleet: list[SimulatedMeter],
    meter_server: MeterServer,
) -> None:
    config = edge_config(tmp_path, mosquitto, fleet, meter_server.port)
    queue_path = tmp_path / "queue.sqlite"
    with ReadingRecorder(mosquitto.port) as recorder:
        edge = start_cli(["edge", "--config", str(config)], tmp_path / "edge.log")
        try:
            wait_until(lambda: recorder.count() >= 10, 60, "first readings")
            # Broker down for many poll intervals (0.25 s) while the agent keeps polling.
            mosquitto.stop()
            outage_start = committed_counts(queue_path)[0]
            wait_until(
                lambda: (
                    sum(committed_counts(queue_path)[0].values())
                    >= sum(outage_start.values()) + 5 * 12
                ),
                60,
                "readings committed during the outage",
            )
            assert committed_counts(queue_path)[1] > 0  # they wait on disk
            mosquitto.start()
            wait_until(lambda: committed_counts(queue_path)[1] < 20, 60, "backlog drained")
            # Now kill -9 mid-stream and start again on the same queue file.
            edge.send_signal(signal.SIGKILL)
            edge.wait()
            edge = start_cli(["edge", "--config", str(config)], tmp_path / "edge2.log")
            before = sum(committed_counts(queue_path)[0].values())
            wait_until(
                lambda: sum(committed_counts(queue_path)[0].values()) >= before + 5 * 8,
                60,
                "readings taken after the restart",
            )
        finally:
            assert stop_process(edge) == 0, (tmp_path / "edge2.log").read_text()
        next_seq, waiting = committed_counts(queue_path)
        assert waiting == 0
        try:
            wait_until(lambda: not missing_seqs(recorder.by_meter(), next_seq), 15, "last ones")
        except AssertionError:
            missing = missing_seqs(recorder.by_meter(), next_seq)
            raise AssertionError(f"missing: {missing}") from None
        received = recorder.by_meter()

    assert_complete(received, next_seq)
    assert min(next_seq.values()) > 20  # the run did span the outage and the restart


def test_bad_config_fails_at_start_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(
        "gateway_id: gw-1\n"
        "connections:\n"
        "  - name: sim\n"
        "    host: 127.0.0.1\n"
        "meters:\n"
        "  - meter_id: m1\n"
        "    connection: sim\n"
        "    unit_id: 300\n"
        "    profile: sdm630\n"
    )
    process = start_cli(["edge", "--config", str(config)], tmp_path / "out.log")
    assert process.wait(30) == 2
    output = (tmp_path / "out.log").read_text()
    assert f"{config}:8: meters[0].unit_id: Input should be less than or equal to 247" in output


def test_bad_profile_fails_at_start_naming_file_line_and_field(tmp_path: Path) -> None:
    profile = tmp_path / "my-meter.yaml"
    profile.write_text(
        "name: my-meter\n"
        "max_registers_per_request: 40\n"
        "max_gap_registers: 4\n"
        "registers:\n"
        "  - field: import_kwh\n"
        "    address: 0x10\n"
        "    table: input\n"
        "    type: float32\n"
        "    order: ABCD\n"
        "  - field: export_kwh\n"
        "    address: 0x11\n"
        "    table: input\n"
        "    type: float32\n"
        "    order: ABCD\n"
    )
    config = tmp_path / "edge.yaml"
    config.write_text(
        "gateway_id: gw-1\n"
        "connections: [{name: sim, host: 127.0.0.1}]\n"
        f"meters: [{{meter_id: m1, connection: sim, unit_id: 1, profile: {profile}}}]\n"
    )
    process = start_cli(["edge", "--config", str(config)], tmp_path / "out.log")
    assert process.wait(30) == 2
    output = (tmp_path / "out.log").read_text()
    assert str(profile) in output and "overlap" in output, output


def test_check_prints_the_read_plan_of_the_example_config(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "edge.example.yaml"
    process = start_cli(["edge", "--config", str(example), "--check"], tmp_path / "out.log")
    assert process.wait(30) == 0
    output = (tmp_path / "out.log").read_text()
    assert "profile sdm630: 11 registers in 1 requests" in output
    assert "input 0x0000+76 (function 4): voltage_v.l1," in output
    assert "config OK: 3 meters, gateway gw-01" in output
