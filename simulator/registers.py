"""Eastron SDM630 / SDM120 input register map, and the simulator's clock extension.

Input registers (function code 4), 0-based addresses, IEEE-754 float32 with the
high word first (ABCD). Undefined addresses inside ``0x00..0x4B`` read as 0 so
one coalesced read of the whole range works; on an SDM120 the L2/L3 addresses
of the served quantities are invalid (Modbus exception 2) like on the real meter.

Simulator extension (not part of the Eastron map): ``0x0F00..0x0F03`` hold the
simulated UTC time of the served snapshot, ms since the epoch, uint64, high
word first ("device clock").
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from pymodbus.simulator import DataType, SimData

from simulator.model import MeterModel, MeterState

VOLTAGE_V = (0x00, 0x02, 0x04)  # L1..L3
CURRENT_A = (0x06, 0x08, 0x0A)
POWER_W = (0x0C, 0x0E, 0x10)  # per phase, signed
POWER_FACTOR = (0x1E, 0x20, 0x22)
TOTAL_POWER_W = 0x34  # signed, negative = export
TOTAL_POWER_FACTOR = 0x3E
FREQUENCY_HZ = 0x46
IMPORT_KWH = 0x48
EXPORT_KWH = 0x4A
TOTAL_KWH = 0x156  # import + export
CLOCK_MS = 0x0F00  # simulator extension: uint64 ms since epoch, 4 registers

#: The measurement block 0x00..0x4B, readable in one request.
MAIN_START = 0x00
MAIN_COUNT = 0x4C
CLOCK_COUNT = 4

Getter = Callable[[MeterState], float]


def _phase(field: str, phase: int) -> Getter:
    return lambda state: getattr(state, field)[phase]


def _float_map(model: MeterModel) -> dict[int, Getter]:
    """Address -> value of every float32 the meter serves."""
    values: dict[int, Getter] = {}
    for phase in range(model.phases):
        values[VOLTAGE_V[phase]] = _phase("voltage_v", phase)
        values[CURRENT_A[phase]] = _phase("current_a", phase)
        values[POWER_W[phase]] = _phase("phase_power_w", phase)
        values[POWER_FACTOR[phase]] = _phase("phase_power_factor", phase)
    # An SDM120 serves totals too: equal to its one phase.
    values[TOTAL_POWER_W] = lambda state: state.power_w
    values[TOTAL_POWER_FACTOR] = lambda state: state.power_factor
    values[FREQUENCY_HZ] = lambda state: state.frequency_hz
    values[IMPORT_KWH] = lambda state: state.import_kwh
    values[EXPORT_KWH] = lambda state: state.export_kwh
    values[TOTAL_KWH] = lambda state: state.total_kwh
    return values


def invalid_addresses(model: MeterModel) -> frozenset[int]:
    """Registers that answer with ILLEGAL_ADDRESS inside the measurement block."""
    if model is MeterModel.SDM630:
        return frozenset()
    missing = [*VOLTAGE_V[1:], *CURRENT_A[1:], *POWER_W[1:], *POWER_FACTOR[1:]]
    return frozenset(a + word for a in missing for word in (0, 1))


class RegisterMap:
    """The input registers of one meter model: SimData layout and snapshot encoding."""

    def __init__(self, model: MeterModel) -> None:
        self.model = model
        floats = _float_map(model)
        main = sorted(a for a in floats if a < MAIN_COUNT)
        self._main_values = [(a // 2, floats[a]) for a in main]  # (float slot, getter)
        self._total_kwh = floats[TOTAL_KWH]

    def input_registers(self) -> list[SimData]:
        """SimData entries for the input register block (function code 4)."""
        floats = set(_float_map(self.model))
        invalid = invalid_addresses(self.model)
        entries: list[SimData] = []
        gap_start: int | None = None
        address = MAIN_START
        while address < MAIN_START + MAIN_COUNT:
            is_gap = address not in floats and address not in invalid
            if is_gap and gap_start is None:
                gap_start = address
            if not is_gap and gap_start is not None:
                entries.append(_zeros(gap_start, address - gap_start))
                gap_start = None
            if address in floats:
                entries.append(SimData(address, values=0.0, datatype=DataType.FLOAT32))
                address += 2
            else:
                address += 1
        if gap_start is not None:
            entries.append(_zeros(gap_start, MAIN_START + MAIN_COUNT - gap_start))
        entries.append(SimData(TOTAL_KWH, values=0.0, datatype=DataType.FLOAT32))
        entries.append(SimData(CLOCK_MS, values=0, datatype=DataType.UINT64))
        return entries

    def encode(self, state: MeterState) -> tuple[tuple[int, list[int]], ...]:
        """``((first_address, registers), ...)`` for every served segment of ``state``."""
        floats = [0.0] * (MAIN_COUNT // 2)
        for slot, getter in self._main_values:
            floats[slot] = getter(state)
        main = list(struct.unpack(f">{MAIN_COUNT}H", struct.pack(f">{MAIN_COUNT // 2}f", *floats)))
        total = list(struct.unpack(">2H", struct.pack(">f", self._total_kwh(state))))
        clock = list(struct.unpack(">4H", struct.pack(">Q", state.ts_ms)))
        return ((MAIN_START, main), (TOTAL_KWH, total), (CLOCK_MS, clock))


def _zeros(address: int, count: int) -> SimData:
    return SimData(address, count=count, values=0, datatype=DataType.REGISTERS)


def decode_float(registers: Sequence[int], offset: int = 0) -> float:
    """The float32 at ``registers[offset:offset + 2]``, high word first."""
    return float(struct.unpack(">f", struct.pack(">2H", *registers[offset : offset + 2]))[0])


def decode_clock_ms(registers: Sequence[int], offset: int = 0) -> int:
    """The uint64 at ``registers[offset:offset + 4]``, high word first."""
    return int(struct.unpack(">Q", struct.pack(">4H", *registers[offset : offset + 4]))[0])
