"""The whole ingestion path with real parts: simulator (Modbus TCP) -> edge agent ->
Mosquitto -> two backend processes on one shared subscription -> one SQLite store."""

from __future__ import annotations

from pathlib import Path

from backend_support import BackendProcess, backend_config
from e2e_support import start_cli, stop_process, wait_until
from services import MosquittoBroker
from test_e2e_edge import committed_counts, edge_config, f32, fleet, meter_server

from electrocloud.stores.sqlite import SqliteStore
from simulator.model import SimulatedMeter
from simulator.server import MeterServer

WRITTEN = "electrocloud_backend_readings_written_total"
__all__ = ["fleet", "meter_server"]  # fixtures shared with test_e2e_edge


def run_pipeline(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    fleet: list[SimulatedMeter],
    meter_server: MeterServer,
    backends: list[BackendProcess],
) -> tuple[list[float], dict[str, int]]:
    """Run the edge against both backends; (readings written per backend, edge's next seqs)."""
    for backend in backends:
        backend.start().wait_ready()
    config = edge_config(tmp_path, mosquitto, fleet, meter_server.port)
    # One reading per message: many messages, so the broker's round robin reaches both.
    text = config.read_text().replace("max_batch_readings: 20", "max_batch_readings: 1")
    config.write_text(text)
    queue_path = tmp_path / "queue.sqlite"
    edge = start_cli(["edge", "--config", str(config)], tmp_path / "edge.log")
    try:
        wait_until(
            lambda: sum(committed_counts(queue_path)[0].values()) >= 5 * 16, 60, "edge readings"
        )
    finally:
        assert stop_process(edge) == 0, (tmp_path / "edge.log").read_text()
    next_seq, waiting = committed_counts(queue_path)
    assert waiting == 0
    total = sum(next_seq.values())
    wait_until(
        lambda: sum(b.metric(WRITTEN) for b in backends) >= total, 30, "backends to write all"
    )
    return [b.metric(WRITTEN) for b in backends], next_seq


def test_two_backends_store_every_reading_once_equal_to_ground_truth(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    fleet: list[SimulatedMeter],
    meter_server: MeterServer,
) -> None:
    backends = [
        BackendProcess(tmp_path, backend_config(tmp_path, mosquitto.port, name=name), name)
        for name in ("a", "b")
    ]
    try:
        written, next_seq = run_pipeline(tmp_path, mosquitto, fleet, meter_server, backends)
        for backend in backends:
            assert backend.terminate() == 0, backend.log()
    finally:
        for backend in backends:
            backend.stop_quietly()  # never leave a process behind, even on failure

    assert all(count > 0 for count in written), written  # both backends took part
    store = SqliteStore(tmp_path / "readings.sqlite")
    try:
        rows = store.readings(None, 0, 2**62)
    finally:
        store.close()
    assert (
        len(rows) == sum(next_seq.values()) == sum(written)
    )  # every reading once: no loss, no duplicate
    meters = {meter.meter_id: meter for meter in fleet}
    by_meter: dict[str, list[int]] = {}
    for row in rows:
        assert row.gateway_id == "gw-e2e"
        by_meter.setdefault(row.meter_id, []).append(row.seq)
        truth = meters[row.meter_id].state_at(row.ts_ms)
        assert row.import_kwh == f32(truth.import_kwh)
        assert row.export_kwh == f32(truth.export_kwh)
        assert row.power_w == f32(truth.power_w)
        assert row.voltage_l1_v == f32(truth.voltage_v[0])
    assert {m: sorted(s) for m, s in by_meter.items()} == {
        m: list(range(n)) for m, n in next_seq.items()
    }
