"""Turn Modbus register words into numbers, for every register type and byte/word order.

Orders name the four bytes of a 32-bit value ``A B C D`` (``A`` most significant)
in the order they arrive on the wire, two bytes per register:

- ``ABCD``: high word first, big-endian bytes (the Modbus convention; Eastron);
- ``CDAB``: low word first ("word swap"), big-endian bytes in each word;
- ``BADC``: high word first, the two bytes of each word swapped;
- ``DCBA``: low word first and bytes swapped, i.e. fully little-endian.

The same two properties apply to 64-bit types (word order over four registers,
byte order within each register). A 16-bit type has one word: ``ABCD``/``CDAB``
mean big-endian bytes, ``BADC``/``DCBA`` mean swapped bytes.

A :class:`Codec` is compiled once per (type, order) and decodes straight from the
response buffer with :meth:`struct.Struct.unpack_from`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal, get_args

RegisterType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

REGISTER_TYPES: tuple[RegisterType, ...] = get_args(RegisterType)
WORD_ORDERS: tuple[WordOrder, ...] = get_args(WordOrder)

# struct format character and width in 16-bit registers
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}

# Why two buffers are enough: reading the wire words big-endian and unpacking with
# "<" reverses every byte, i.e. swaps words *and* bytes (DCBA); unpacking the
# byte-swapped words with ">" swaps only the bytes (BADC), with "<" only the words (CDAB).
_LAYOUT: dict[str, tuple[bool, str]] = {  # order -> (use byte-swapped buffer, struct endianness)
    "ABCD": (False, ">"),
    "DCBA": (False, "<"),
    "BADC": (True, ">"),
    "CDAB": (True, "<"),
}


def register_width(register_type: RegisterType) -> int:
    """How many 16-bit registers a value of ``register_type`` occupies."""
    return _FORMATS[register_type][1]


@dataclass(frozen=True, slots=True)
class WordBuffers:
    """The words of one response as bytes: as on the wire, and with each word's bytes swapped."""

    wire: bytes
    swapped: bytes

    @classmethod
    def of(cls, words: Sequence[int]) -> WordBuffers:
        count = len(words)
        try:
            return cls(struct.pack(f">{count}H", *words), struct.pack(f"<{count}H", *words))
        except struct.error:
            raise ValueError("register words must be integers in 0..65535") from None


@dataclass(frozen=True, slots=True)
class Codec:
    """Decoder of one register type in one byte/word order."""

    type: RegisterType
    order: WordOrder
    width: int  # registers
    swapped: bool
    unpacker: struct.Struct

    def decode_from(self, buffers: WordBuffers, offset: int) -> int | float:
        """The value whose first register is word ``offset`` of ``buffers``."""
        buffer = buffers.swapped if self.swapped else buffers.wire
        value: int | float = self.unpacker.unpack_from(buffer, offset * 2)[0]
        return value

    def decode(self, words: Sequence[int], offset: int = 0) -> int | float:
        """Convenience for one-off decoding; readers reuse one :class:`WordBuffers`."""
        if offset < 0 or offset + self.width > len(words):
            raise ValueError(
                f"{self.type} at word {offset} needs {self.width} words, got {len(words)}"
            )
        return self.decode_from(WordBuffers.of(words), offset)


@cache
def codec(register_type: RegisterType, order: WordOrder) -> Codec:
    """The (shared, precompiled) codec for ``register_type`` in ``order``."""
    if register_type not in _FORMATS:
        raise ValueError(f"unknown register type {register_type!r}; known: {REGISTER_TYPES}")
    if order not in _LAYOUT:
        raise ValueError(f"unknown order {order!r}; known: {WORD_ORDERS}")
    char, width = _FORMATS[register_type]
    swapped, endian = _LAYOUT[order]
    return Codec(register_type, order, width, swapped, struct.Struct(endian + char))
