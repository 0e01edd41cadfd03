"""Modbus RTU: two meters on one serial line, through a socat pseudo-terminal pair.

pymodbus's serial server listens on one end of the pty pair, the edge link
opens the other, so real RTU frames (with CRC) cross a real serial device.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_modbus_server import float32_words
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice
from services import require_binary

from edge.config import MeterSettings, RtuConnection
from edge.errors import MeterTimeoutError
from edge.modbus import ModbusLink
from edge.poller import MeterPoller
from edge.profile import load_profile

pytest.importorskip("serial", reason="RTU needs pyserial: pip install 'pymodbus[serial]'")

BAUD = 38400


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(server_end, client_end)``: two linked pseudo-terminals made by socat."""
    socat = require_binary("socat", "socat")
    server_end, client_end = tmp_path / "server", tmp_path / "client"
    process = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={server_end}", f"pty,raw,echo=0,link={client_end}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (server_end.exists() and client_end.exists()):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.02)
        yield str(server_end), str(client_end)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _too_slow(*args: object) -> None:
    await asyncio.sleep(0.6)  # longer than the link's 0.3 s timeout


def _device(unit_id: int, voltage: float, *, slow: bool = False) -> SimDevice:
    words = float32_words({0x00: voltage, 0x46: 50.0, 0x48: 10.0 * unit_id})
    bits = [SimData(0, values=0, datatype=DataType.BITS)]
    holding = [SimData(0, values=0, datatype=DataType.REGISTERS)]
    registers = [SimData(0, values=[words[a] for a in sorted(words)], datatype=DataType.REGISTERS)]
    return SimDevice(
        id=unit_id,
        simdata=(bits, list(bits), holding, registers),
        action=_too_slow if slow else None,
    )


def test_two_meters_on_one_rtu_line(pty_pair: tuple[str, str]) -> None:
    server_end, client_end = pty_pair

    async def scenario() -> None:
        server = ModbusSerialServer(
            [_device(1, 231.5), _device(2, 228.0), _device(9, 0.0, slow=True)],
            port=server_end,
            baudrate=BAUD,
        )
        await server.serve_forever(background=True)
        try:
            connection = RtuConnection(
                name="rs485", type="rtu", port=client_end, baudrate=BAUD, timeout_s=0.3
            )
            async with ModbusLink(connection) as link:
                profile = load_profile("sdm120")
                samples = []
                for unit_id in (1, 2):
                    meter = MeterSettings(
                        meter_id=f"m{unit_id}",
                        connection="rs485",
                        unit_id=unit_id,
                        profile="sdm120",
                    )
                    poller = MeterPoller(meter, profile, link, print, backoff_max_s=1)
                    samples.append(await poller.poll_once())
                assert [s.values["voltage_v.l1"] for s in samples] == [231.5, 228.0]
                assert [s.values["import_kwh"] for s in samples] == [10.0, 20.0]
                with pytest.raises(MeterTimeoutError):
                    await link.read_registers(9, "input", 0, 2)  # unit 9 answers too late
                await asyncio.sleep(0.5)  # its late answer arrives and is ignored
                # The serial port stays open and usable for the meters that answer.
                assert link.connected
                assert await link.read_registers(2, "input", 0x48, 2) == [16800, 0]  # 20.0
        finally:
            await server.shutdown()

    asyncio.run(scenario())
