"""ModbusLink against real servers: typed errors, reconnects, one transaction at a time."""

from __future__ import annotations

import asyncio

import pytest
from edge_modbus_server import BlackHoleServer, RegisterServer, ShortAnswerServer
from pymodbus.constants import ExcCodes
from services import free_port

from edge.config import TcpConnection
from edge.errors import (
    BadResponseError,
    EdgeError,
    MeterConnectError,
    MeterReadError,
    MeterTimeoutError,
    ModbusExceptionResponse,
)
from edge.modbus import ModbusLink
from electrocloud.errors import ElectroCloudError

WORDS = {address: 1000 + address for address in range(10)}


def _tcp(port: int, **kwargs: float) -> TcpConnection:
    return TcpConnection(name="bus", host="127.0.0.1", port=port, **kwargs)  # type: ignore[arg-type]


def test_errors_share_one_root() -> None:
    for error in (MeterConnectError, MeterTimeoutError, ModbusExceptionResponse, BadResponseError):
        assert issubclass(error, MeterReadError)
    assert issubclass(MeterReadError, EdgeError) and issubclass(EdgeError, ElectroCloudError)


def test_reads_the_asked_registers_with_the_unit_id() -> None:
    async def scenario() -> None:
        async with RegisterServer(WORDS) as server, ModbusLink(_tcp(server.port)) as link:
            assert await link.read_registers(17, "input", 2, 3) == [1002, 1003, 1004]
            assert link.connected and (link.requests, link.failures) == (1, 0)

    asyncio.run(scenario())


def test_connection_refused() -> None:
    async def scenario() -> None:
        async with ModbusLink(_tcp(free_port())) as link:
            with pytest.raises(MeterConnectError, match="cannot connect"):
                await link.read_registers(1, "input", 0, 2)
            assert link.failures == 1

    asyncio.run(scenario())


def test_no_answer_is_a_timeout_and_the_next_request_reconnects() -> None:
    async def scenario() -> None:
        async with BlackHoleServer() as hole, ModbusLink(_tcp(hole.port, timeout_s=0.2)) as link:
            for _ in range(2):
                with pytest.raises(MeterTimeoutError, match=r"no answer within 0\.2 s"):
                    await link.read_registers(1, "input", 0, 2)
            # A fresh connection per attempt: a late answer cannot be taken for the next one's.
            assert hole.connections == 2

    asyncio.run(scenario())


def test_modbus_exception_response() -> None:
    async def scenario() -> None:
        async with RegisterServer(WORDS) as server, ModbusLink(_tcp(server.port)) as link:
            with pytest.raises(ModbusExceptionResponse, match="illegal_address") as caught:
                await link.read_registers(1, "input", 8, 5)  # 10..12 are not served
            assert caught.value.code == ExcCodes.ILLEGAL_ADDRESS
            server.fail_with = ExcCodes.DEVICE_BUSY
            with pytest.raises(ModbusExceptionResponse) as caught:
                await link.read_registers(1, "input", 0, 1)
            assert caught.value.code == ExcCodes.DEVICE_BUSY
            server.fail_with = None
            assert await link.read_registers(1, "input", 0, 1) == [1000]  # still usable

    asyncio.run(scenario())


def test_wrong_register_count() -> None:
    async def scenario() -> None:
        async with ShortAnswerServer() as server, ModbusLink(_tcp(server.port)) as link:
            with pytest.raises(BadResponseError, match="asked for 4 registers, got 1"):
                await link.read_registers(1, "holding", 0, 4)

    asyncio.run(scenario())


def test_reconnects_after_the_server_restarts() -> None:
    async def scenario() -> None:
        port = free_port()
        async with ModbusLink(_tcp(port, timeout_s=0.3)) as link:
            async with RegisterServer(WORDS, port=port):
                assert await link.read_registers(1, "input", 0, 1) == [1000]
            with pytest.raises(MeterReadError):  # server gone
                await link.read_registers(1, "input", 0, 1)
            async with RegisterServer({0: 7}, port=port):
                assert await link.read_registers(1, "input", 0, 1) == [7]

    asyncio.run(scenario())


def test_one_transaction_at_a_time_with_pause_between() -> None:
    async def scenario() -> None:
        async with (
            RegisterServer(WORDS) as server,
            ModbusLink(_tcp(server.port, pause_s=0.1)) as link,
        ):
            results = await asyncio.gather(
                *(link.read_registers(u, "input", u, 1) for u in range(4))
            )
            assert results == [[1000], [1001], [1002], [1003]]
            gaps = [
                b - a for a, b in zip(server.request_times, server.request_times[1:], strict=False)
            ]
            # A lower bound only (asyncio.sleep never returns early): the pause is honoured.
            assert len(gaps) == 3 and min(gaps) >= 0.09

    asyncio.run(scenario())
