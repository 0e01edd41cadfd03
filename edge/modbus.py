"""One Modbus connection (a TCP socket or an RS-485 serial port) shared by its meters.

A :class:`ModbusLink` runs one transaction at a time (Modbus has no pipelining
on a serial line, and many TCP gateways serialise anyway), waits ``pause_s``
between transactions, and turns every failure into a typed
:class:`~edge.errors.MeterReadError`. pymodbus retries and reconnects are off:
backoff is the poller's job, and the link reconnects on the next request after
a connection is lost. Different links are independent and run in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge.config import RtuConnection, TcpConnection
from edge.errors import (
    BadResponseError,
    EdgeError,
    MeterConnectError,
    MeterReadError,
    MeterTimeoutError,
    ModbusExceptionResponse,
)
from edge.plan import ReadRequest
from edge.profile import Table

log = logging.getLogger(__name__)


def _quiet_pymodbus() -> None:
    # pymodbus logs every failed connect and every timeout; the link raises a typed error
    # instead and the poller logs a failing meter once. An explicitly set level is kept.
    pymodbus_log = logging.getLogger("pymodbus")
    if pymodbus_log.level == logging.NOTSET:
        pymodbus_log.setLevel(logging.CRITICAL)


def _exception_name(code: int) -> str:
    try:
        return ExcCodes(code).name.lower()
    except ValueError:
        return "unknown"


def _reraise_swallowed_cancel() -> None:
    # pymodbus awaits each response with asyncio.wait_for, which on Python 3.11 returns
    # the result and drops a cancellation that arrives as the response does. The task
    # then polls on forever and the agent's shutdown waits for it; re-raise it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ModbusLink:
    """A Modbus TCP or RTU connection from the edge settings' ``connections`` list.

    Use as ``async with ModbusLink(settings) as link:``; the connection opens on
    the first request (so a meter that is down at start-up does not stop the agent).
    """

    def __init__(self, settings: TcpConnection | RtuConnection) -> None:
        self.settings = settings
        if isinstance(settings, RtuConnection):
            try:
                import serial  # noqa: F401 - pymodbus needs pyserial for serial ports
            except ImportError:
                raise EdgeError(
                    f"connection {settings.name!r} is RTU, which needs pyserial: "
                    "pip install 'pymodbus[serial]'"
                ) from None
        _quiet_pymodbus()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None  # task inside held(), if any
        self._last_done = float("-inf")  # loop time the previous transaction ended
        self.requests = 0  # transactions attempted
        self.failures = 0  # ... of which failed

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def endpoint(self) -> str:
        if isinstance(self.settings, TcpConnection):
            return f"{self.settings.host}:{self.settings.port}"
        return self.settings.port

    def __repr__(self) -> str:
        return f"ModbusLink({self.name!r}, {self.endpoint})"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def __aenter__(self) -> ModbusLink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the next request opens it again."""
        if self._client is not None:
            self._client.close()

    async def execute(self, unit_id: int, request: ReadRequest) -> list[int]:
        """Run one planned read against ``unit_id``; returns exactly ``request.count`` words."""
        return await self.read_registers(unit_id, request.table, request.address, request.count)

    async def read_registers(
        self, unit_id: int, table: Table, address: int, count: int
    ) -> list[int]:
        """Read ``count`` registers from ``table`` at ``address`` (0-based) of device ``unit_id``.

        Raises a :class:`MeterReadError` subclass saying what went wrong.
        """
        if self._holder is not None and self._holder is asyncio.current_task():
            return await self._read(unit_id, table, address, count)
        async with self._lock:
            return await self._read(unit_id, table, address, count)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the link for the current task across several requests (one meter's read).

        The requests of one read then go out back to back: one hand-over between
        pollers per read instead of one per request, and the read spans as little
        time as the link allows. ``pause_s`` still applies between the requests.
        """
        async with self._lock:
            self._holder = asyncio.current_task()
            try:
                yield
            finally:
                self._holder = None

    async def _read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        # Formatted only for an error message: this runs for every request.
        def where() -> str:
            return f"{self.name} ({self.endpoint}) unit {unit_id} {table} {address:#06x}+{count}"

        await self._pause()
        self.requests += 1
        try:
            registers = await self._transaction(unit_id, table, address, count, where)
        except MeterReadError:
            self.failures += 1
            raise
        finally:
            self._last_done = asyncio.get_running_loop().time()
        _reraise_swallowed_cancel()
        return registers

    async def _pause(self) -> None:
        if self.settings.pause_s <= 0:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_done + self.settings.pause_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _transaction(
        self, unit_id: int, table: Table, address: int, count: int, where: Callable[[], str]
    ) -> list[int]:
        client = await self._connected_client(where)
        read = client.read_input_registers if table == "input" else client.read_holding_registers
        try:
            response: Any = await read(address, count=count, device_id=unit_id)
        except ModbusIOException as exc:
            # A late answer would be taken for the next request's: start afresh (TCP).
            self._drop_stale_connection()
            if "No response" in str(exc):
                raise MeterTimeoutError(
                    f"{where()}: no answer within {self.settings.timeout_s} s"
                ) from None
            raise BadResponseError(f"{where()}: {exc}") from None
        except ConnectionException as exc:
            self.close()
            raise MeterConnectError(f"{where()}: connection lost ({exc})") from None
        except ModbusException as exc:
            self._drop_stale_connection()
            raise MeterReadError(f"{where()}: {exc}") from None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusExceptionResponse(
                f"{where()}: Modbus exception {code} ({_exception_name(code)})", code
            )
        registers = list(getattr(response, "registers", None) or [])
        if len(registers) != count:
            self._drop_stale_connection()
            raise BadResponseError(f"{where()}: asked for {count} registers, got {len(registers)}")
        return registers

    async def _connected_client(
        self, where: Callable[[], str]
    ) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is None:
            self._client = self._new_client()
        if not self._client.connected:
            try:
                ok = await self._client.connect()
            except OSError as exc:  # e.g. a serial port that does not exist
                raise MeterConnectError(f"{where()}: cannot connect: {exc}") from None
            if not ok:
                raise MeterConnectError(f"{where()}: cannot connect to {self.endpoint}")
            log.debug("connected %r", self)
        return self._client

    def _drop_stale_connection(self) -> None:
        # Serial has no connection to reset, and closing the port would cost every meter on it.
        if isinstance(self.settings, TcpConnection):
            self.close()

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # retries=0 and reconnect_delay=0: retry and reconnect policy belongs to the poller.
        settings = self.settings
        if isinstance(settings, TcpConnection):
            return AsyncModbusTcpClient(
                settings.host,
                port=settings.port,
                name=settings.name,
                timeout=settings.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusSerialClient(
            settings.port,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            name=settings.name,
            timeout=settings.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
