"""Decoding every register type in every byte/word order, from a real Modbus server."""

from __future__ import annotations

import asyncio
import math
import struct
from pathlib import Path

import pytest
from edge_modbus_server import RegisterServer, encode
from hypothesis import given
from hypothesis import strategies as st

from edge.config import MeterSettings, TcpConnection
from edge.decode import REGISTER_TYPES, WORD_ORDERS, RegisterType, WordOrder, codec, register_width
from edge.modbus import ModbusLink
from edge.poller import MeterPoller
from edge.profile import Table, load_profile

INPUT_VALUES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3456789012,
    "int64": -1234567890123456789,
    "uint64": 12345678901234567890,
    "float32": -1234.5,
    "float64": 12345.678901234567,
}
# Different content in the holding table: a decoder reading the wrong table fails.
HOLDING_VALUES = {
    "int16": 23456,
    "uint16": 65535,
    "int32": 2000000001,
    "uint32": 17,
    "int64": 987654321987654321,
    "uint64": 2**63 + 12345,
    "float32": 0.15625,
    "float64": -6.02214076e23,
}

TABLES: tuple[tuple[Table, dict[str, float]], ...] = (
    ("input", INPUT_VALUES),
    ("holding", HOLDING_VALUES),
)


def _layout(
    values: dict[str, float],
) -> tuple[dict[int, int], dict[tuple[RegisterType, WordOrder], int]]:
    """Every (type, order) one after another from address 10: words and addresses."""
    words: dict[int, int] = {}
    addresses: dict[tuple[RegisterType, WordOrder], int] = {}
    address = 10
    for order in WORD_ORDERS:
        for register_type in REGISTER_TYPES:
            encoded = encode(values[register_type], register_type, order)
            addresses[(register_type, order)] = address
            for word in encoded:
                words[address] = word
                address += 1
    return words, addresses


def test_every_type_and_order_from_both_tables() -> None:
    input_words, input_at = _layout(INPUT_VALUES)
    holding_words, holding_at = _layout(HOLDING_VALUES)
    assert input_at == holding_at  # same addresses, different content

    async def scenario() -> None:
        async with (
            RegisterServer(input_words, holding_words) as server,
            ModbusLink(TcpConnection(name="t", host="127.0.0.1", port=server.port)) as link,
        ):
            for (register_type, order), address in input_at.items():
                width = register_width(register_type)
                decoder = codec(register_type, order)
                for table, expected in TABLES:
                    words = await link.read_registers(7, table, address, width)
                    assert decoder.decode(words) == expected[register_type], (
                        table,
                        register_type,
                        order,
                    )
            # One read of the whole table, each value decoded at its offset.
            first = min(input_at.values())
            count = max(input_words) + 1 - first
            words = await link.read_registers(7, "input", first, count)
            for (register_type, order), address in input_at.items():
                value = codec(register_type, order).decode(words, address - first)
                assert value == INPUT_VALUES[register_type]
            assert {r.function_code for r in server.requests} == {3, 4}

    asyncio.run(scenario())


def test_sixteen_bit_orders_are_byte_orders() -> None:
    # 0x1234 sent big-endian is one word 0x1234; byte-swapped it is 0x3412.
    assert codec("uint16", "ABCD").decode([0x1234]) == 0x1234
    assert codec("uint16", "CDAB").decode([0x1234]) == 0x1234
    assert codec("uint16", "BADC").decode([0x3412]) == 0x1234
    assert codec("uint16", "DCBA").decode([0x3412]) == 0x1234
    assert codec("int32", "CDAB").decode([0x5678, 0x1234]) == 0x12345678
    assert codec("int32", "BADC").decode([0x3412, 0x7856]) == 0x12345678
    assert codec("int32", "DCBA").decode([0x7856, 0x3412]) == 0x12345678


_VALUE_STRATEGIES = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
}


@given(
    data=st.data(),
    register_type=st.sampled_from(REGISTER_TYPES),
    order=st.sampled_from(WORD_ORDERS),
)
def test_decode_matches_struct_encoding(
    data: st.DataObject, register_type: str, order: str
) -> None:
    value = data.draw(_VALUE_STRATEGIES[register_type])
    padding = data.draw(st.lists(st.integers(0, 0xFFFF), max_size=3))
    words = padding + encode(value, register_type, order) + padding
    assert codec(register_type, order).decode(words, len(padding)) == value


def test_nan_float_decodes_as_nan() -> None:
    words = [int.from_bytes(struct.pack(">f", math.nan)[i : i + 2], "big") for i in (0, 2)]
    assert math.isnan(codec("float32", "ABCD").decode(words))


def test_decode_rejects_short_input() -> None:
    with pytest.raises(ValueError, match="needs 4 words"):
        codec("float64", "ABCD").decode([1, 2, 3])


def test_profile_scale_offset_and_tables_end_to_end(tmp_path: Path) -> None:
    profile_file = tmp_path / "custom.yaml"
    profile_file.write_text(
        """\
name: custom-meter
max_registers_per_request: 10
max_gap_registers: 0
defaults: {table: holding, type: int32, order: CDAB}
registers:
  - {field: import_kwh, address: 100, scale: 0.01}
  - {field: export_kwh, address: 102, type: uint32, order: DCBA, scale: 0.1}
  - {field: power_w, address: 104, type: int16, order: BADC, scale: 10}
  - {field: power_factor, address: 5, table: input, type: int16, scale: 0.001}
  - {field: frequency_hz, address: 6, table: input, type: uint16, scale: 0.1, offset: 40}
"""
    )
    profile = load_profile(str(profile_file))
    holding = {
        **dict(zip(range(100, 102), encode(1234567, "int32", "CDAB"), strict=True)),
        **dict(zip(range(102, 104), encode(98765, "uint32", "DCBA"), strict=True)),
        104: encode(-432, "int16", "BADC")[0],
    }
    input_words = {5: encode(-950, "int16", "ABCD")[0], 6: encode(101, "uint16", "ABCD")[0]}

    async def scenario() -> dict[str, float]:
        async with (
            RegisterServer(input_words, holding) as server,
            ModbusLink(TcpConnection(name="t", host="127.0.0.1", port=server.port)) as link,
        ):
            meter = MeterSettings(
                meter_id="m", connection="t", unit_id=3, profile=str(profile_file)
            )
            poller = MeterPoller(meter, profile, link, lambda s: None, backoff_max_s=1)
            sample = await poller.poll_once()
            # Holding 100..104 are consecutive: one request; input 5..6: another.
            assert sorted((r.function_code, r.address, r.count) for r in server.requests) == [
                (3, 100, 5),
                (4, 5, 2),
            ]
            return sample.values

    values = asyncio.run(scenario())
    assert values == pytest.approx(
        {
            "import_kwh": 12345.67,
            "export_kwh": 9876.5,
            "power_w": -4320.0,
            "power_factor": -0.95,
            "frequency_hz": 50.1,
        }
    )
