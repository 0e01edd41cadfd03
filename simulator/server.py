"""Serve simulated meters over real Modbus TCP (pymodbus simulator API), one unit id per meter.

Snapshot latching keeps one meter read consistent when it is spread over
several requests: a request covering the clock register ``0x0F00`` latches a
new snapshot ``state_at(clock.now_ms())`` for that unit; any other request is
served from the unit's latest snapshot if it was latched less than
``latch_window_s`` real seconds ago, else it latches a new one. All registers
of one response come from one snapshot.

Requests to a unit id without a meter get exception 0x0B (gateway target
device failed to respond), as from a TCP gateway in front of an RS-485 bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulator.clock import SimClock
from simulator.errors import SimulatorError
from simulator.groundtruth import GroundTruthWriter
from simulator.model import MAX_UNIT_ID, MeterModel, MeterState, SimulatedMeter
from simulator.registers import CLOCK_MS, RegisterMap

log = logging.getLogger(__name__)

#: (unit_id, function_code, address, count) of one request.
RequestRecord = tuple[int, int, int, int]
READ_INPUT_REGISTERS = 4
GROUND_TRUTH_FLUSH_S = 0.5


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One latched state of one unit and its encoded registers."""

    unit_id: int
    state: MeterState
    latched_at: float  # time.monotonic() when latched
    segments: tuple[tuple[int, list[int]], ...]  # (first address, registers)


def _device_blocks(model: MeterModel) -> tuple[list[SimData], ...]:
    """(coils, discrete inputs, holding, input registers): only input registers are real.

    SimDevice rejects empty lists: one dummy coil/discrete bit (reads as off) and
    one invalid holding register fill the unused tables.
    """
    return (
        [SimData(0, values=False, datatype=DataType.BITS)],
        [SimData(0, values=False, datatype=DataType.BITS)],
        [SimData(0, datatype=DataType.INVALID)],
        RegisterMap(model).input_registers(),
    )


class _ServedMeter:
    """One unit on the server: its meter, its register map and its latest snapshot."""

    def __init__(self, meter: SimulatedMeter, server: MeterServer) -> None:
        self.meter = meter
        self.register_map = RegisterMap(meter.model)
        self.server = server
        self.snapshot: Snapshot | None = None

    def device(self) -> SimDevice:
        simdata = cast(
            tuple[list[SimData], list[SimData], list[SimData], list[SimData]],
            _device_blocks(self.meter.model),
        )
        return SimDevice(id=self.meter.unit_id, simdata=simdata, action=self.action)

    def latch(self) -> Snapshot:
        state = self.meter.state_at(self.server.clock.now_ms())
        snapshot = Snapshot(
            unit_id=self.meter.unit_id,
            state=state,
            latched_at=time.monotonic(),
            segments=self.register_map.encode(state),
        )
        self.snapshot = snapshot
        self.server.record_snapshot(self.meter, state)
        return snapshot

    def snapshot_for(self, address: int, count: int) -> Snapshot:
        latest = self.snapshot
        if (
            latest is None
            or address <= CLOCK_MS < address + count
            or time.monotonic() - latest.latched_at >= self.server.latch_window_s
        ):
            return self.latch()
        return latest

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request that passed the address checks."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter's measurements are read-only
        if function_code != READ_INPUT_REGISTERS:
            return None  # the dummy coil / discrete input: served as stored (off)
        snapshot = self.snapshot_for(address, count)
        for first, registers in snapshot.segments:
            if first <= address and address + count <= first + len(registers):
                offset = address - start_address
                current_registers[offset : offset + count] = registers[
                    address - first : address - first + count
                ]
                return None
        return ExcCodes.ILLEGAL_ADDRESS  # spans segments: the layout already refuses this


async def _absent_unit(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    current_registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


class MeterServer:
    """A Modbus TCP server for up to 247 simulated meters (one unit id each).

    Use ``async with MeterServer(...) as server`` inside a running event loop, or
    ``with MeterServer(...).serve_in_thread() as server`` from synchronous code.
    ``port=0`` picks a free port; ``.port`` holds the real one once started.

    ``request_log`` records ``(unit_id, function_code, address, count)`` of every
    request received (each gets an answer: data or a Modbus exception).
    ``ground_truth``: a CSV path (owned: opened on start, closed on stop) or a
    shared :class:`GroundTruthWriter` (flushed, not closed).
    """

    def __init__(
        self,
        meters: Sequence[SimulatedMeter],
        clock: SimClock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ground_truth: Path | GroundTruthWriter | None = None,
        latch_window_s: float = 0.25,
    ) -> None:
        if not meters:
            raise SimulatorError("a MeterServer needs at least one meter")
        if len(meters) > MAX_UNIT_ID:
            raise SimulatorError(
                f"{len(meters)} meters on one server; Modbus allows {MAX_UNIT_ID} unit ids: "
                "split the fleet over several servers (ports)"
            )
        unit_ids = [meter.unit_id for meter in meters]
        if len(set(unit_ids)) != len(unit_ids):
            duplicates = sorted({u for u in unit_ids if unit_ids.count(u) > 1})
            raise SimulatorError(f"unit ids must be unique per server; repeated: {duplicates}")
        late = [m.meter_id for m in meters if m.start_ms > clock.start_ms]
        if late:
            raise SimulatorError(f"meters {late} start after the clock's start {clock.start_ms}")
        if not latch_window_s >= 0:
            raise SimulatorError(f"latch_window_s must be >= 0, got {latch_window_s}")
        if not 0 <= port <= 65535:
            raise SimulatorError(f"port must be 0..65535 (0 = any free port), got {port}")
        self.meters = list(meters)
        self.clock = clock
        self.host = host
        self.port = port
        self.latch_window_s = latch_window_s
        self.request_log: list[RequestRecord] = []
        self._ground_truth = ground_truth
        self._writer: GroundTruthWriter | None = None
        self._served = {meter.unit_id: _ServedMeter(meter, self) for meter in meters}
        self._server: ModbusTcpServer | None = None
        self._flush_task: asyncio.Task[None] | None = None

    def latest_snapshot(self, unit_id: int) -> Snapshot | None:
        """The snapshot the unit's last read was served from, if any."""
        return self._served[unit_id].snapshot

    def record_snapshot(self, meter: SimulatedMeter, state: MeterState) -> None:
        if self._writer is not None:
            self._writer.write(meter.meter_id, meter.unit_id, state)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.request_log.append((pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        return pdu

    async def start(self) -> None:
        """Listen and serve (returns once listening)."""
        if self._server is not None:
            raise SimulatorError("server already started")
        if isinstance(self._ground_truth, Path):
            self._writer = GroundTruthWriter(self._ground_truth)
        elif self._ground_truth is not None:
            self._writer = self._ground_truth
        # Build today's data (and the year's load profiles) before the first request
        # arrives, so early polls are answered within a client's timeout.
        await asyncio.to_thread(self._warm_up)
        devices = [served.device() for served in self._served.values()]
        absent_blocks = cast(
            tuple[list[SimData], list[SimData], list[SimData], list[SimData]],
            _device_blocks(MeterModel.SDM630),
        )
        devices.append(SimDevice(id=0, simdata=absent_blocks, action=_absent_unit))
        server = ModbusTcpServer(devices, address=(self.host, self.port), trace_pdu=self._trace_pdu)
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            self._close_writer()
            raise SimulatorError(
                f"cannot listen on {self.host}:{self.port} (address in use or not available)"
            ) from None
        self._server = server
        listener = cast(asyncio.Server, server.transport)
        self.port = int(listener.sockets[0].getsockname()[1])
        self._flush_task = asyncio.create_task(self._flush_periodically())
        log.debug("serving %d meters on %s:%d", len(self.meters), self.host, self.port)

    def _warm_up(self) -> None:
        now_ms = self.clock.now_ms()
        for meter in self.meters:
            meter.state_at(max(now_ms, meter.start_ms))

    async def stop(self) -> None:
        """Stop listening, drop connections, flush (and close an owned) ground truth file."""
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        self._close_writer()

    def _close_writer(self) -> None:
        if self._writer is None:
            return
        if self._writer is self._ground_truth:
            self._writer.flush()  # shared: its owner closes it
        else:
            self._writer.close()
        self._writer = None

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(GROUND_TRUTH_FLUSH_S)
            if self._writer is not None:
                self._writer.flush()

    async def __aenter__(self) -> MeterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def serve_in_thread(self, *, timeout_s: float = 30.0) -> Iterator[MeterServer]:
        """Run the server on its own event loop in a background thread while the block runs."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"meter-server-{id(self):x}", daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout_s)
            try:
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self._stop_and_drain(), loop).result(timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            loop.close()

    async def _stop_and_drain(self) -> None:
        """Stop, then end whatever connection tasks are still pending on this (own) loop."""
        await self.stop()
        current = asyncio.current_task()
        pending: list[asyncio.Task[Any]] = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()
