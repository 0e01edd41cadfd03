"""Request coalescing, checked by counting requests at a real Modbus server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from edge_modbus_server import RegisterServer, encode, float32_words

from edge.config import MeterSettings, TcpConnection
from edge.modbus import ModbusLink
from edge.plan import plan_reads
from edge.poller import MeterPoller
from edge.profile import load_profile
from edge.sample import MeterSample

SDM630_VALUES = {
    0x00: 230.5,
    0x02: 231.25,
    0x04: 229.75,
    0x06: 5.5,
    0x08: 6.25,
    0x0A: 0.5,
    0x34: -2500.0,  # exporting
    0x3E: 0.875,
    0x46: 50.0,
    0x48: 12345.5,
    0x4A: 678.25,
}
SDM630_EXPECTED = {
    "voltage_v.l1": 230.5,
    "voltage_v.l2": 231.25,
    "voltage_v.l3": 229.75,
    "current_a.l1": 5.5,
    "current_a.l2": 6.25,
    "current_a.l3": 0.5,
    "power_w": -2500.0,
    "power_factor": 0.875,
    "frequency_hz": 50.0,
    "import_kwh": 12345.5,
    "export_kwh": 678.25,
}
DEVICE_TIME_MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


async def _poll(
    profile_name: str, input_words: dict[int, int], time_source: str = "gateway"
) -> tuple[MeterSample, list[tuple[int, int, int]]]:
    async with RegisterServer(input_words) as server:
        settings = TcpConnection(name="bus", host="127.0.0.1", port=server.port)
        async with ModbusLink(settings) as link:
            meter = MeterSettings(
                meter_id="m1",
                connection="bus",
                unit_id=1,
                profile=profile_name,
                time_source=time_source,
            )
            poller = MeterPoller(
                meter, load_profile(profile_name), link, lambda s: None, backoff_max_s=1
            )
            sample = await poller.poll_once()
        return sample, [(r.function_code, r.address, r.count) for r in server.requests]


def test_full_sdm630_read_takes_at_most_three_requests() -> None:
    sample, requests = asyncio.run(_poll("sdm630", float32_words(SDM630_VALUES)))
    assert 1 <= len(requests) <= 3
    assert requests == [(4, 0x00, 0x4C)]  # one request covering 0x00..0x4B
    assert sample.values == SDM630_EXPECTED
    assert sample.flags == [] and sample.dropped == []


def test_simulated_sdm630_read_with_device_clock_takes_at_most_three_requests() -> None:
    words = float32_words(SDM630_VALUES)
    words.update(zip(range(0x0F00, 0x0F04), encode(DEVICE_TIME_MS, "uint64", "ABCD"), strict=True))
    sample, requests = asyncio.run(_poll("simulated-sdm630", words, time_source="device"))
    assert len(requests) <= 3
    assert requests[0] == (4, 0x0F00, 4)  # the clock first: it latches the snapshot
    assert sample.ts_ms == DEVICE_TIME_MS
    assert sample.values == SDM630_EXPECTED  # the clock is not a contract value


def test_sdm120_read_avoids_the_missing_phases() -> None:
    values = {0x00: 229.5, 0x06: 3.25, 0x0C: 745.5, 0x1E: -0.5, 0x46: 49.875, 0x48: 42.5, 0x4A: 0.0}
    words = float32_words(values)
    # A single-phase meter answers exception 2 for its L2/L3 addresses.
    for address in (*range(0x02, 0x06), *range(0x08, 0x0C), *range(0x0E, 0x12), *range(0x20, 0x24)):
        del words[address]
    sample, requests = asyncio.run(_poll("sdm120", words))
    assert requests == [(4, 0x00, 2), (4, 0x06, 2), (4, 0x0C, 2), (4, 0x1E, 2), (4, 0x46, 6)]
    assert sample.values == {
        "voltage_v.l1": 229.5,
        "current_a.l1": 3.25,
        "power_w": 745.5,
        "power_factor": -0.5,
        "frequency_hz": 49.875,
        "import_kwh": 42.5,
        "export_kwh": 0.0,
    }


def _profile(tmp_path: Path, max_request: int, max_gap: int, registers: str) -> Path:
    path = tmp_path / f"p{max_request}-{max_gap}.yaml"
    path.write_text(
        f"name: t\nmax_registers_per_request: {max_request}\nmax_gap_registers: {max_gap}\n"
        f"defaults: {{type: uint16}}\nregisters:\n{registers}"
    )
    return path


INPUT_REGISTERS = """\
  - {field: voltage_v.l1, address: 0}
  - {field: voltage_v.l2, address: 1}
  - {field: voltage_v.l3, address: 5}
  - {field: import_kwh, address: 6, type: uint32}
  - {field: power_w, address: 20}
"""
REGISTERS = (
    INPUT_REGISTERS
    + """\
  - {field: power_factor, address: 3, table: holding}
  - {field: frequency_hz, address: 4, table: holding}
"""
)


@pytest.mark.parametrize(
    ("max_request", "max_gap", "expected"),
    [
        # gap 3 (2..4) read through; 8..19 is a hole of 12
        (125, 3, [("input", 0, 8), ("input", 20, 1), ("holding", 3, 2)]),
        (125, 12, [("input", 0, 21), ("holding", 3, 2)]),
        (125, 0, [("input", 0, 2), ("input", 5, 3), ("input", 20, 1), ("holding", 3, 2)]),
        # the uint32 at 6..7 does not fit a 7-register request starting at 0
        (7, 12, [("input", 0, 6), ("input", 6, 2), ("input", 20, 1), ("holding", 3, 2)]),
        (
            2,
            0,
            [
                ("input", 0, 2),
                ("input", 5, 1),
                ("input", 6, 2),
                ("input", 20, 1),
                ("holding", 3, 2),
            ],
        ),
    ],
)
def test_coalescing_limits(
    tmp_path: Path, max_request: int, max_gap: int, expected: list[tuple[str, int, int]]
) -> None:
    profile = load_profile(str(_profile(tmp_path, max_request, max_gap, REGISTERS)))
    requests = plan_reads(profile)
    assert [(r.table, r.address, r.count) for r in requests] == expected
    for request in requests:
        assert request.count <= max_request
        for planned in request.registers:
            assert planned.offset == planned.register.address - request.address
            assert planned.offset + planned.register.width <= request.count
    fields = [f for r in requests for f in r.fields]
    assert sorted(fields) == sorted(profile.fields)  # each register read exactly once


def test_device_clock_request_goes_first(tmp_path: Path) -> None:
    path = _profile(
        tmp_path,
        10,
        0,
        "  - {field: power_w, address: 0, table: input}\n"
        "  - {field: device_time_ms, address: 50, table: holding, type: uint64}\n",
    )
    requests = plan_reads(load_profile(str(path)))
    assert [(r.table, r.address, r.has_device_clock) for r in requests] == [
        ("holding", 50, True),
        ("input", 0, False),
    ]


def test_plan_decodes_every_register_of_its_request(tmp_path: Path) -> None:
    (request,) = plan_reads(load_profile(str(_profile(tmp_path, 125, 12, INPUT_REGISTERS))))
    words = list(range(100, 121))
    words[6:8] = encode(70000, "uint32", "ABCD")
    assert request.decode(words) == {
        "voltage_v.l1": 100,
        "voltage_v.l2": 101,
        "voltage_v.l3": 105,
        "import_kwh": 70000,
        "power_w": 120,
    }
    with pytest.raises(ValueError, match="expected 21 registers, got 20"):
        request.decode(words[:-1])
