"""Real Modbus TCP servers for the edge read-path tests.

:class:`RegisterServer` is a pymodbus 3.16 server (``pymodbus.simulator`` data
model) with separate input and holding tables, counting every request it
serves; :class:`BlackHoleServer` accepts TCP connections and never answers.
:func:`encode` builds register words with :mod:`struct`, independently of
``edge.decode``, so the tests check the decoder against a separate encoder.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from services import free_port

_STRUCT = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


def encode(value: float, register_type: str, order: str) -> list[int]:
    """Register words holding ``value`` as the device would send them.

    Bytes ``A B C D ..`` are the big-endian value; ``CDAB``/``DCBA`` send the
    words lowest first, ``BADC``/``DCBA`` swap the two bytes of every word.
    """
    raw = struct.pack(">" + _STRUCT[register_type], value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def float32_words(values: Mapping[int, float], *, size: int = 0x4C) -> dict[int, int]:
    """``{address: word}`` for addresses ``0..size-1``: each value as ABCD float32, zeros around."""
    words = dict.fromkeys(range(size), 0)
    for address, value in values.items():
        high, low = encode(value, "float32", "ABCD")
        words[address], words[address + 1] = high, low
    return words


@dataclass(frozen=True)
class Request:
    function_code: int
    address: int
    count: int


def _blocks(words: Mapping[int, int]) -> list[SimData]:
    """One SimData per run of consecutive addresses; addresses between runs stay invalid."""
    blocks: list[SimData] = []
    run: list[int] = []
    start = previous = -2
    for address in sorted(words):
        if address != previous + 1 and run:
            blocks.append(SimData(start, values=run, datatype=DataType.REGISTERS))
            run = []
        if not run:
            start = address
        run.append(words[address])
        previous = address
    if run:
        blocks.append(SimData(start, values=run, datatype=DataType.REGISTERS))
    return blocks


class RegisterServer:
    """A pymodbus TCP server on 127.0.0.1 answering every unit id from two register tables.

    ``input`` and ``holding`` map addresses to 16-bit words; unmapped addresses
    answer with exception 2 (illegal address). ``set_words`` changes what is served;
    ``fail_with`` makes every request answer with that exception code;
    ``delay_next_s`` delays the next answer once (a slow meter).
    """

    def __init__(
        self,
        input: Mapping[int, int],
        holding: Mapping[int, int] | None = None,
        *,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.input = dict(input)
        self.holding = dict(holding or {0xFFF0: 0})  # pymodbus needs a non-empty table
        self.requests: list[Request] = []
        self.fail_with: ExcCodes | None = None
        self.delay_next_s = 0.0
        self.request_times: list[float] = []  # loop time each request arrived
        self._server: ModbusTcpServer | None = None

    def set_words(self, table: str, address: int, words: list[int]) -> None:
        target = self.input if table == "input" else self.holding
        for i, word in enumerate(words):
            if address + i not in target:
                raise KeyError(f"{table} address {address + i} is not served")
            target[address + i] = word

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests.append(Request(function_code, address, count))
        self.request_times.append(asyncio.get_running_loop().time())
        if self.delay_next_s:
            delay, self.delay_next_s = self.delay_next_s, 0.0
            await asyncio.sleep(delay)
        if self.fail_with is not None:
            return self.fail_with
        table = self.input if function_code == 4 else self.holding
        for i in range(count):  # serve the current words (set_words may have changed them)
            registers[address - start_address + i] = table[address + i]
        return None

    async def start(self) -> RegisterServer:
        bits = [SimData(0, values=0, datatype=DataType.BITS)]
        device = SimDevice(
            id=0,  # every unit id
            simdata=(bits, list(bits), _blocks(self.holding), _blocks(self.input)),
            action=self._action,
        )
        self._server = ModbusTcpServer(context=device, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> RegisterServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class BlackHoleServer:
    """Accepts TCP connections, reads whatever arrives and never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(1024):
            pass

    async def __aenter__(self) -> BlackHoleServer:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class ShortAnswerServer:
    """Answers every Modbus TCP read with one register, whatever count was asked for."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readexactly(12)  # MBAP header (7) + read PDU (5)
                tid, unit, function_code = request[0:2], request[6], request[7]
                pdu = bytes([function_code, 2]) + (0x1234).to_bytes(2, "big")
                writer.write(
                    tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def __aenter__(self) -> ShortAnswerServer:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
