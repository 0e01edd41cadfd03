"""Simulated meters over real Modbus TCP: register values, latching, errors, ground truth."""

from __future__ import annotations

import asyncio
import csv
import struct
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.pdu import ModbusPDU

from simulator.clock import SimClock
from simulator.fleet import build_fleet
from simulator.groundtruth import HEADER
from simulator.model import MeterModel, MeterState, SimulatedMeter
from simulator.registers import (
    CLOCK_MS,
    CURRENT_A,
    EXPORT_KWH,
    FREQUENCY_HZ,
    IMPORT_KWH,
    MAIN_COUNT,
    POWER_FACTOR,
    POWER_W,
    TOTAL_KWH,
    TOTAL_POWER_FACTOR,
    TOTAL_POWER_W,
    VOLTAGE_V,
    decode_clock_ms,
    decode_float,
)
from simulator.server import MeterServer

START = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
SPEED = 86_400.0  # one simulated day per real second: every read sees a new instant
LONG_WINDOW_S = 60.0  # latch window no test run can outlast: makes latching deterministic


def f32(value: float) -> float:
    """``value`` as the float32 a Modbus register pair carries."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def fleet() -> list[SimulatedMeter]:
    # Seed 0, 25 meters: both models present (checked in the tests that need them).
    return build_fleet(meters=25, seed=0, start_ms=START)


def read_truth(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def first_of(meters: list[SimulatedMeter], model: MeterModel) -> SimulatedMeter:
    return next(m for m in meters if m.model is model)


async def read(client: AsyncModbusTcpClient, unit: int, address: int, count: int) -> list[int]:
    response = await client.read_input_registers(address, count=count, device_id=unit)
    assert not response.isError(), f"unit {unit} 0x{address:X}+{count}: {response}"
    return list(response.registers)


def run_with_client(
    server: MeterServer, scenario: Callable[[AsyncModbusTcpClient], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with server:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
            assert await client.connect()
            try:
                await scenario(client)
            finally:
                client.close()

    asyncio.run(main())


def expected_floats(state: MeterState, model: MeterModel) -> dict[int, float]:
    values = {
        TOTAL_POWER_W: state.power_w,
        TOTAL_POWER_FACTOR: state.power_factor,
        FREQUENCY_HZ: state.frequency_hz,
        IMPORT_KWH: state.import_kwh,
        EXPORT_KWH: state.export_kwh,
    }
    for phase in range(model.phases):
        values[VOLTAGE_V[phase]] = state.voltage_v[phase]
        values[CURRENT_A[phase]] = state.current_a[phase]
        values[POWER_W[phase]] = state.phase_power_w[phase]
        values[POWER_FACTOR[phase]] = state.phase_power_factor[phase]
    return values


@pytest.mark.parametrize("model", list(MeterModel))
def test_served_registers_decode_to_the_model_state(model: MeterModel) -> None:
    meters = fleet()
    meter = first_of(meters, model)
    clock = SimClock(START, SPEED)
    server = MeterServer(meters, clock, latch_window_s=LONG_WINDOW_S)
    # SDM120: the L2/L3 addresses are invalid, so read around them.
    ranges = (
        [(0x00, MAIN_COUNT)]
        if model is MeterModel.SDM630
        else [(0x00, 2), (0x06, 2), (0x0C, 2), (0x12, 0x0E), (0x24, MAIN_COUNT - 0x24)]
    )
    served: dict[int, int] = {}

    async def scenario(client: AsyncModbusTcpClient) -> None:
        ts_ms = decode_clock_ms(await read(client, meter.unit_id, CLOCK_MS, 4))
        served[CLOCK_MS] = ts_ms
        for address, count in [*ranges, (TOTAL_KWH, 2)]:
            for i, register in enumerate(await read(client, meter.unit_id, address, count)):
                served[address + i] = register

    run_with_client(server, scenario)
    ts_ms = served.pop(CLOCK_MS)
    assert START <= ts_ms <= clock.now_ms()
    state = meter.state_at(ts_ms)
    floats = expected_floats(state, model)
    floats[TOTAL_KWH] = state.import_kwh + state.export_kwh
    for address, value in floats.items():
        decoded = decode_float([served[address], served[address + 1]])
        assert decoded == f32(value), f"register 0x{address:X}"
    float_words = {a + w for a in floats for w in (0, 1)}
    assert all(served[a] == 0 for a in served if a not in float_words)  # gaps read as 0
    assert state.import_kwh > 0 and 207 < state.voltage_v[0] < 253  # a real, live meter


def test_a_read_right_after_the_clock_read_comes_from_the_same_snapshot(tmp_path: Path) -> None:
    meters = fleet()
    meter = meters[0]
    truth = tmp_path / "truth.csv"
    server = MeterServer(meters, SimClock(START, SPEED), ground_truth=truth, latch_window_s=60)
    seen: list[tuple[int, float, float]] = []

    async def scenario(client: AsyncModbusTcpClient) -> None:
        for _ in range(3):
            ts_ms = decode_clock_ms(await read(client, meter.unit_id, CLOCK_MS, 4))
            await asyncio.sleep(0.01)  # simulated time moves on ~15 minutes meanwhile
            main = await read(client, meter.unit_id, 0x00, MAIN_COUNT)
            seen.append((ts_ms, decode_float(main, IMPORT_KWH), decode_float(main, TOTAL_POWER_W)))

    run_with_client(server, scenario)
    for ts_ms, import_kwh, power_w in seen:
        state = meter.state_at(ts_ms)
        assert (import_kwh, power_w) == (f32(state.import_kwh), f32(state.power_w))
    assert len({ts for ts, _, _ in seen}) == 3  # each clock read latched a new snapshot
    rows = read_truth(truth)
    assert [int(r["ts_ms"]) for r in rows] == [ts for ts, _, _ in seen]  # one latch per pair


def test_without_a_latch_window_every_request_latches(tmp_path: Path) -> None:
    meters = fleet()
    truth = tmp_path / "truth.csv"
    server = MeterServer(meters, SimClock(START, SPEED), ground_truth=truth, latch_window_s=0)

    async def scenario(client: AsyncModbusTcpClient) -> None:
        for _ in range(4):
            await read(client, 5, 0x00, MAIN_COUNT)

    run_with_client(server, scenario)
    rows = read_truth(truth)
    assert len(rows) == 4
    assert {r["meter_id"] for r in rows} == {meters[4].meter_id}


def test_ground_truth_holds_the_exact_values_behind_every_served_snapshot(
    tmp_path: Path,
) -> None:
    meters = fleet()
    truth = tmp_path / "truth.csv"
    server = MeterServer(meters, SimClock(START, SPEED), ground_truth=truth, latch_window_s=60)
    served: list[tuple[int, int, float]] = []  # unit, ts, import as served

    async def scenario(client: AsyncModbusTcpClient) -> None:
        for unit in (1, 2, 3, 1):
            ts_ms = decode_clock_ms(await read(client, unit, CLOCK_MS, 4))
            import_kwh = decode_float(await read(client, unit, IMPORT_KWH, 2))
            served.append((unit, ts_ms, import_kwh))
        # Flushed while running (at least every second), not only on close.
        deadline = time.monotonic() + 10
        while len(truth.read_text().splitlines()) < 1 + len(served):
            assert time.monotonic() < deadline, "ground truth not flushed while running"
            await asyncio.sleep(0.05)

    run_with_client(server, scenario)
    with truth.open(newline="") as handle:
        reader = csv.reader(handle)
        assert tuple(next(reader)) == HEADER
        rows = list(reader)
    assert len(rows) == len(served)
    for row, (unit, ts_ms, import_kwh) in zip(rows, served, strict=True):
        meter = meters[unit - 1]
        state = meter.state_at(ts_ms)
        assert row == [
            meter.meter_id,
            str(unit),
            str(ts_ms),
            repr(state.import_kwh),
            repr(state.export_kwh),
            repr(state.power_w),
        ]
        assert f32(float(row[3])) == import_kwh


def assert_exception(response: ModbusPDU, code: int) -> None:
    assert response.isError()
    assert response.exception_code == code


def test_invalid_requests_get_modbus_exceptions() -> None:
    meters = fleet()
    single = first_of(meters, MeterModel.SDM120)
    three = first_of(meters, MeterModel.SDM630)
    server = MeterServer(meters, SimClock(START, SPEED))

    async def scenario(client: AsyncModbusTcpClient) -> None:
        for address in (VOLTAGE_V[1], CURRENT_A[2], POWER_W[1], POWER_FACTOR[2]):
            response = await client.read_input_registers(address, count=2, device_id=single.unit_id)
            assert_exception(response, 2)  # ILLEGAL_ADDRESS: an SDM120 has no L2/L3
        assert_exception(
            await client.read_input_registers(0x00, count=MAIN_COUNT, device_id=single.unit_id), 2
        )
        assert await read(client, three.unit_id, VOLTAGE_V[1], 2)  # the SDM630 has them
        beyond = await client.read_input_registers(0x4C, count=2, device_id=three.unit_id)
        assert_exception(beyond, 2)
        holding = await client.read_holding_registers(0x00, count=2, device_id=three.unit_id)
        assert_exception(holding, 2)
        write = await client.write_coil(0, True, device_id=three.unit_id)
        assert_exception(write, 1)  # ILLEGAL_FUNCTION: measurements are read-only
        absent = await client.read_input_registers(0x00, count=2, device_id=200)
        assert_exception(absent, 0x0B)  # gateway: target device failed to respond

    run_with_client(server, scenario)


def test_request_log_counts_every_request() -> None:
    meters = fleet()
    server = MeterServer(meters, SimClock(START, SPEED))

    async def scenario(client: AsyncModbusTcpClient) -> None:
        await read(client, 1, CLOCK_MS, 4)
        await read(client, 1, 0x00, MAIN_COUNT)
        await read(client, 7, IMPORT_KWH, 4)
        await client.read_input_registers(VOLTAGE_V[1], count=2, device_id=200)

    run_with_client(server, scenario)
    assert server.request_log == [
        (1, 4, CLOCK_MS, 4),
        (1, 4, 0x00, MAIN_COUNT),
        (7, 4, IMPORT_KWH, 4),
        (200, 4, VOLTAGE_V[1], 2),
    ]


def test_serve_in_thread_serves_synchronous_clients_and_stops(tmp_path: Path) -> None:
    meters = fleet()
    truth = tmp_path / "truth.csv"
    server = MeterServer(meters, SimClock(START, SPEED), ground_truth=truth, latch_window_s=60)
    with server.serve_in_thread() as running:
        client = ModbusTcpClient("127.0.0.1", port=running.port)
        assert client.connect()
        clock_regs = client.read_input_registers(CLOCK_MS, count=4, device_id=3).registers
        kwh_regs = client.read_input_registers(IMPORT_KWH, count=2, device_id=3).registers
        client.close()
        snapshot = running.latest_snapshot(3)
        port = running.port
    ts_ms = decode_clock_ms(clock_regs)
    assert snapshot is not None and snapshot.state.ts_ms == ts_ms
    assert decode_float(kwh_regs) == f32(meters[2].state_at(ts_ms).import_kwh)
    assert len(truth.read_text().splitlines()) == 2  # header + the one snapshot, closed
    after = ModbusTcpClient("127.0.0.1", port=port, retries=0, timeout=1)
    assert not after.connect()  # stopped: nothing listens any more
