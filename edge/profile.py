"""Device profiles: which Modbus registers of a meter model hold which contract values.

A profile is a YAML file (format: ``docs/device-profiles.md``). Shipped profiles
live in ``edge/profiles/`` and are named by file stem (``sdm630``); any other
profile is given by path. A profile may ``extends`` another one and add or
replace registers. Everything is checked at load time; a bad profile raises
:class:`~electrocloud.errors.ConfigError` naming file, line and field.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from edge.decode import Codec, RegisterType, WordOrder, codec
from edge.sample import CONTRACT_FIELDS
from electrocloud.config import read_config_text, read_yaml_with_lines, validation_problems
from electrocloud.errors import ConfigError, ConfigProblem

Table = Literal["input", "holding"]
TABLES: tuple[Table, ...] = ("input", "holding")

#: Modbus function code that reads each table.
FUNCTION_CODES: Mapping[str, int] = MappingProxyType({"input": 4, "holding": 3})

#: Not a contract value: the meter's own clock (UTC ms), used with ``time_source: device``.
DEVICE_TIME_FIELD = "device_time_ms"
PROFILE_FIELDS: tuple[str, ...] = (*CONTRACT_FIELDS, DEVICE_TIME_FIELD)

#: Largest register count of one read (function codes 3 and 4) the Modbus spec allows.
MODBUS_MAX_READ_REGISTERS = 125

PROFILES_DIR = Path(__file__).parent / "profiles"

Address = Annotated[StrictInt, Field(ge=0, le=65535)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterEntry(_Entry):
    """One ``registers:`` item as written in the file (defaults not applied yet)."""

    field: StrictStr
    address: Address
    table: Table | None = None
    type: RegisterType | None = None
    order: WordOrder | None = None
    scale: FiniteFloat = 1.0
    offset: FiniteFloat = 0.0
    unit: StrictStr | None = None
    plausible: tuple[FiniteFloat, FiniteFloat] | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in PROFILE_FIELDS:
            close = difflib.get_close_matches(value, PROFILE_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(PROFILE_FIELDS)}"
            raise ValueError(f"not a contract field ({hint})")
        return value

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale 0 would turn every value into the offset")
        return value

    @field_validator("plausible")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError("plausible must be [min, max] with min <= max")
        return value


class DefaultsEntry(_Entry):
    table: Table | None = None
    type: RegisterType | None = None
    order: WordOrder | None = None


class ProfileFile(_Entry):
    """A profile file as written (``extends`` not resolved yet)."""

    name: Annotated[StrictStr, Field(min_length=1)]
    description: StrictStr = ""
    manufacturer: StrictStr | None = None
    model: StrictStr | None = None
    extends: StrictStr | None = None
    max_registers_per_request: (
        Annotated[StrictInt, Field(ge=1, le=MODBUS_MAX_READ_REGISTERS)] | None
    ) = None
    max_gap_registers: Annotated[StrictInt, Field(ge=0, le=MODBUS_MAX_READ_REGISTERS)] | None = None
    defaults: DefaultsEntry = DefaultsEntry()
    registers: list[RegisterEntry] = []


@dataclass(frozen=True, slots=True)
class RegisterDefaults:
    table: Table = "input"
    type: RegisterType | None = None
    order: WordOrder = "ABCD"


@dataclass(frozen=True, slots=True)
class Register:
    """A resolved register: where a value lives and how to turn it into one."""

    field: str
    address: int
    table: Table
    type: RegisterType
    order: WordOrder
    scale: float
    offset: float
    unit: str | None
    plausible: tuple[float, float] | None
    codec: Codec = dataclasses.field(repr=False)
    #: ``registers[i]`` in the file that defined it, ``file:line`` of the entry and
    #: of each of its keys: for error messages.
    path: str = dataclasses.field(default="", compare=False)
    where: str = dataclasses.field(default="", compare=False)
    key_where: Mapping[str, str] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def width(self) -> int:
        return self.codec.width

    @property
    def end(self) -> int:
        """First address after this register."""
        return self.address + self.codec.width

    def scaled(self, raw: int | float) -> int | float:
        """``raw * scale + offset``; an unscaled integer stays an exact integer."""
        if self.scale == 1 and self.offset == 0:
            return raw
        return raw * self.scale + self.offset

    def where_of(self, key: str) -> str:
        return self.key_where.get(key, self.where)


@dataclass(frozen=True)
class DeviceProfile:
    """A meter model's register map, fully resolved (``extends`` and defaults applied)."""

    name: str
    source: str  # the YAML file it was loaded from
    description: str
    manufacturer: str | None
    model: str | None
    max_registers_per_request: int
    max_gap_registers: int
    defaults: RegisterDefaults
    registers: tuple[Register, ...]
    extends: str | None = None

    def register(self, field_name: str) -> Register | None:
        return next((r for r in self.registers if r.field == field_name), None)

    @property
    def has_device_clock(self) -> bool:
        return self.register(DEVICE_TIME_FIELD) is not None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(r.field for r in self.registers)


_cache: dict[Path, DeviceProfile] = {}


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``edge/profiles/``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def clear_profile_cache() -> None:
    """Forget loaded profiles (a changed file is otherwise not re-read)."""
    _cache.clear()


def load_profile(name_or_path: str) -> DeviceProfile:
    """Load a shipped profile by name (``"sdm630"``) or any profile by path to its YAML file.

    Results are cached by file. Raises :class:`ConfigError` naming file, line and field.
    """
    path = _locate(name_or_path, base=None)
    if path is None:
        raise ConfigError(
            name_or_path,
            [ConfigProblem(name_or_path, "profile", _unknown_profile_message(name_or_path))],
        )
    return _load(path, stack=())


def _looks_like_path(reference: str) -> bool:
    return reference.endswith((".yaml", ".yml")) or "/" in reference or "\\" in reference


def _locate(reference: str, base: Path | None) -> Path | None:
    """A profile reference -> existing file, or None. Paths are relative to ``base`` (or cwd)."""
    if _looks_like_path(reference):
        path = Path(reference).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
    else:
        path = PROFILES_DIR / f"{reference}.yaml"
    return path if path.is_file() else None


def _unknown_profile_message(reference: str) -> str:
    if _looks_like_path(reference):
        return f"profile file {reference!r} not found"
    return (
        f"unknown profile {reference!r}; shipped profiles: {', '.join(shipped_profiles())}"
        " (or give a path to a .yaml file)"
    )


def _load(path: Path, stack: tuple[Path, ...]) -> DeviceProfile:
    key = path.resolve()
    cached = _cache.get(key)
    if cached is not None:
        return cached
    source = str(path)
    text = read_config_text(path)
    data, lines = read_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigProblem(f"{source}:1", "(top level)", "a profile must be a mapping")]
        )
    try:
        spec = ProfileFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            source, validation_problems(exc, ProfileFile, source=source, lines=lines)
        ) from None

    def where(*loc: str | int) -> str:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                return f"{source}:{lines[loc[:cut]]}"
        return source

    parent: DeviceProfile | None = None
    if spec.extends is not None:
        parent_path = _locate(spec.extends, base=path.parent)
        if parent_path is None:
            message = _unknown_profile_message(spec.extends)
            raise ConfigError(source, [ConfigProblem(where("extends"), "extends", message)])
        chain = (*stack, key)
        if parent_path.resolve() in chain:
            cycle = " -> ".join(p.name for p in (*chain, parent_path.resolve()))
            raise ConfigError(
                source, [ConfigProblem(where("extends"), "extends", f"extends cycle: {cycle}")]
            )
        parent = _load(parent_path, chain)

    profile = _resolve(spec, parent, source, where)
    _cache[key] = profile
    return profile


def _resolve(
    spec: ProfileFile,
    parent: DeviceProfile | None,
    source: str,
    where: Callable[..., str],
) -> DeviceProfile:
    problems: list[ConfigProblem] = []
    inherited = parent.defaults if parent else RegisterDefaults()
    defaults = RegisterDefaults(
        table=spec.defaults.table or inherited.table,
        type=spec.defaults.type or inherited.type,
        order=spec.defaults.order or inherited.order,
    )
    max_request = spec.max_registers_per_request or (
        parent.max_registers_per_request if parent else None
    )
    if max_request is None:
        problems.append(
            ConfigProblem(
                where(),
                "max_registers_per_request",
                "required field is missing; add it (the meter manual says how many "
                "registers one request may read)",
            )
        )
        max_request = MODBUS_MAX_READ_REGISTERS  # keep checking the rest
    max_gap = spec.max_gap_registers
    if max_gap is None:
        max_gap = parent.max_gap_registers if parent else 0

    # A child's register for a field replaces the parent's; order: parent's first.
    by_field: dict[str, Register] = {r.field: r for r in (parent.registers if parent else ())}
    own_lines: dict[str, str] = {}
    for index, entry in enumerate(spec.registers):
        loc = ("registers", index)
        label = f"registers[{index}]"
        if entry.field in own_lines:
            problems.append(
                ConfigProblem(
                    where(*loc, "field"),
                    f"{label}.field",
                    f"{entry.field!r} is mapped twice (also at {own_lines[entry.field]})",
                )
            )
            continue
        own_lines[entry.field] = where(*loc, "field")
        register_type = entry.type or defaults.type
        if register_type is None:
            problems.append(
                ConfigProblem(where(*loc), f"{label}.type", "no type and no defaults.type; add one")
            )
            continue
        order = entry.order or defaults.order
        key_where = {
            key: where(*loc, key)
            for key in ("field", "address", "table", "type", "order", "plausible")
        }
        by_field[entry.field] = Register(
            field=entry.field,
            address=entry.address,
            table=entry.table or defaults.table,
            type=register_type,
            order=order,
            scale=entry.scale,
            offset=entry.offset,
            unit=entry.unit,
            plausible=entry.plausible,
            codec=codec(register_type, order),
            path=label,
            where=where(*loc),
            key_where=MappingProxyType(key_where),
        )
        # Register widths are checked here so the message can name this file's entry.
        if by_field[entry.field].width > max_request:
            problems.append(
                ConfigProblem(
                    key_where["type"],
                    f"{label}.type",
                    f"{register_type} is {by_field[entry.field].width} registers, more than "
                    f"max_registers_per_request {max_request}",
                )
            )

    registers = tuple(by_field.values())
    problems.extend(_register_problems(registers, max_request, own=set(own_lines)))
    if parent is None and not spec.registers:
        problems.append(
            ConfigProblem(where(), "registers", "a profile needs at least one register")
        )
    if problems:
        raise ConfigError(source, problems)
    return DeviceProfile(
        name=spec.name,
        source=source,
        description=spec.description,
        manufacturer=spec.manufacturer
        if spec.manufacturer is not None
        else _inherit(parent, "manufacturer"),
        model=spec.model if spec.model is not None else _inherit(parent, "model"),
        max_registers_per_request=max_request,
        max_gap_registers=max_gap,
        defaults=defaults,
        registers=registers,
        extends=spec.extends,
    )


def _inherit(parent: DeviceProfile | None, attribute: str) -> str | None:
    value = getattr(parent, attribute, None) if parent else None
    return value if isinstance(value, str) else None


def _register_problems(
    registers: tuple[Register, ...], max_request: int, own: set[str]
) -> list[ConfigProblem]:
    """Overlaps within a table and registers that run past the address space."""
    problems: list[ConfigProblem] = []
    for register in registers:
        if register.end > 65536:
            problems.append(
                ConfigProblem(
                    register.where_of("address"),
                    f"{register.path}.address",
                    f"{register.type} at {register.address:#06x} runs past register 0xFFFF",
                )
            )
        if register.width > max_request and register.field not in own:
            problems.append(
                ConfigProblem(
                    register.where_of("type"),
                    f"{register.path}.type",
                    f"inherited {register.type} is {register.width} registers, more than "
                    f"max_registers_per_request {max_request}",
                )
            )
    for table in TABLES:
        in_table = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        widest: Register | None = None  # the register reaching furthest so far
        for current in in_table:
            if widest is not None and current.address < widest.end:
                problems.append(_overlap_problem(table, current, widest, own))
            if widest is None or current.end > widest.end:
                widest = current
    return problems


def _overlap_problem(table: str, first: Register, second: Register, own: set[str]) -> ConfigProblem:
    # Report it at an entry of the file being loaded (the other one may be inherited).
    reported, other = (
        (second, first) if second.field in own and first.field not in own else (first, second)
    )
    return ConfigProblem(
        reported.where_of("address"),
        f"{reported.path}.address",
        f"{reported.field}: {table} registers {reported.address:#06x}..{reported.end - 1:#06x} "
        f"({reported.type}) overlap {other.field!r} at {other.address:#06x}..{other.end - 1:#06x} "
        f"({other.where_of('address')})",
    )
