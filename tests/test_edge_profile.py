"""Device profiles: shipped maps, inheritance, and load-time errors naming file:line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.profile import DEVICE_TIME_FIELD, load_profile, shipped_profiles
from electrocloud.errors import ConfigError

SDM630_MAP = {
    "voltage_v.l1": 0x00,
    "voltage_v.l2": 0x02,
    "voltage_v.l3": 0x04,
    "current_a.l1": 0x06,
    "current_a.l2": 0x08,
    "current_a.l3": 0x0A,
    "power_w": 0x34,
    "power_factor": 0x3E,
    "frequency_hz": 0x46,
    "import_kwh": 0x48,
    "export_kwh": 0x4A,
}
SDM120_MAP = {
    "voltage_v.l1": 0x00,
    "current_a.l1": 0x06,
    "power_w": 0x0C,
    "power_factor": 0x1E,
    "frequency_hz": 0x46,
    "import_kwh": 0x48,
    "export_kwh": 0x4A,
}


@pytest.mark.parametrize(("name", "expected"), [("sdm630", SDM630_MAP), ("sdm120", SDM120_MAP)])
def test_shipped_eastron_profiles(name: str, expected: dict[str, int]) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert {r.field: r.address for r in profile.registers} == expected
    assert {(r.table, r.type, r.order, r.scale) for r in profile.registers} == {
        ("input", "float32", "ABCD", 1.0)
    }
    assert profile.max_registers_per_request == 80  # Eastron: 40 parameters per request
    assert not profile.has_device_clock
    by_field = {r.field: r for r in profile.registers}
    assert by_field["voltage_v.l1"].plausible == (0, 400)
    assert by_field["frequency_hz"].plausible == (45, 65)
    assert by_field["power_factor"].plausible == (-1, 1)
    assert by_field["power_w"].plausible[0] < 0  # type: ignore[index]  # export is negative


@pytest.mark.parametrize(
    ("name", "base"), [("simulated-sdm630", SDM630_MAP), ("simulated-sdm120", SDM120_MAP)]
)
def test_simulated_profiles_extend_with_device_clock(name: str, base: dict[str, int]) -> None:
    profile = load_profile(name)
    assert profile.extends == name.removeprefix("simulated-")
    assert {r.field: r.address for r in profile.registers} == {**base, DEVICE_TIME_FIELD: 0x0F00}
    clock = profile.register(DEVICE_TIME_FIELD)
    assert clock is not None
    assert (clock.table, clock.type, clock.order, clock.width) == ("input", "uint64", "ABCD", 4)
    assert profile.has_device_clock
    assert profile.manufacturer == "Eastron"  # inherited


def test_every_shipped_profile_loads_and_is_named_after_its_file() -> None:
    names = shipped_profiles()
    assert {"sdm630", "sdm120", "simulated-sdm630", "simulated-sdm120"} <= set(names)
    for name in names:
        assert load_profile(name).name == name


def test_profiles_are_cached() -> None:
    assert load_profile("sdm630") is load_profile("sdm630")


def test_new_model_is_only_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(
        """\
name: acme-em1
max_registers_per_request: 20
defaults: {table: holding, type: int32}
registers:
  - {field: import_kwh, address: 0x10, scale: 0.01, unit: kWh}
"""
    )
    profile = load_profile(str(path))
    (register,) = profile.registers
    assert (register.field, register.address, register.table, register.type, register.order) == (
        "import_kwh",
        16,
        "holding",
        "int32",
        "ABCD",
    )
    assert register.scaled(12345) == pytest.approx(123.45)


def test_child_replaces_parent_register_and_uses_relative_extends(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        """\
name: base
max_registers_per_request: 10
max_gap_registers: 2
defaults: {type: uint16}
registers:
  - {field: power_w, address: 0}
  - {field: import_kwh, address: 1, type: uint32}
"""
    )
    (tmp_path / "child.yaml").write_text(
        """\
name: child
extends: base.yaml
registers:
  - {field: power_w, address: 5, type: int16, scale: 10}
"""
    )
    child = load_profile(str(tmp_path / "child.yaml"))
    assert child.max_registers_per_request == 10 and child.max_gap_registers == 2
    power = child.register("power_w")
    assert power is not None
    assert (power.address, power.type, power.scale) == (5, "int16", 10.0)
    assert [r.field for r in child.registers] == ["power_w", "import_kwh"]


# --- errors: each names the file, the line and the field ------------------------


def _error(tmp_path: Path, text: str, name: str = "bad.yaml") -> ConfigError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_profile(str(path))
    return caught.value


def _only_problem(error: ConfigError) -> tuple[str, str, str]:
    assert len(error.problems) == 1, error
    problem = error.problems[0]
    return problem.where, problem.field, problem.message


HEADER = "name: bad\nmax_registers_per_request: 40\nregisters:\n"


def test_overlapping_registers(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        HEADER
        + "  - {field: voltage_v.l1, address: 0x00, type: float32}\n"  # line 4: 0x00..0x01
        + "  - field: voltage_v.l2\n"  # line 5
        + "    address: 0x01\n"  # line 6: overlaps 0x01
        + "    type: float32\n",
    )
    where, field, message = _only_problem(error)
    assert where == f"{tmp_path / 'bad.yaml'}:6"
    assert field == "registers[1].address"
    assert "voltage_v.l2" in message and "overlap" in message and "'voltage_v.l1'" in message
    assert "bad.yaml:6: registers[1].address:" in str(error)


def test_overlap_accounts_for_register_width(tmp_path: Path) -> None:
    # A float64 at 0 covers 0..3: a uint16 at 3 overlaps, one at 4 does not.
    ok = (
        HEADER
        + "  - {field: import_kwh, address: 0, type: float64}\n"
        + "  - {field: power_w, address: 4, type: uint16}\n"
    )
    (tmp_path / "ok.yaml").write_text(ok)
    assert len(load_profile(str(tmp_path / "ok.yaml")).registers) == 2
    error = _error(
        tmp_path,
        HEADER
        + "  - {field: import_kwh, address: 0, type: float64}\n"
        + "  - {field: export_kwh, address: 1, type: uint16, table: holding}\n"  # other table: fine
        + "  - {field: power_w, address: 3, type: uint16}\n",  # line 6
    )
    where, field, _ = _only_problem(error)
    assert (where.rsplit(":", 1)[1], field) == ("6", "registers[2].address")


def test_unknown_key(tmp_path: Path) -> None:
    error = _error(
        tmp_path, HEADER + "  - field: power_w\n    address: 0\n    type: int16\n    sacle: 10\n"
    )
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:7")
    assert field == "registers[0].sacle"
    assert "unknown field" in message and "'scale'" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    error = _error(tmp_path, "name: bad\nmax_registers_per_request: 4\nmax_gap: 3\nregisters: []\n")
    where, field, _ = _only_problem(error)
    assert where.endswith("bad.yaml:3") and field == "max_gap"


def test_bad_type(tmp_path: Path) -> None:
    error = _error(tmp_path, HEADER + "  - field: power_w\n    address: 0\n    type: float16\n")
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:6")
    assert field == "registers[0].type"
    assert "float16" in message and "float32" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("order", "ABDC", "ABCD"), ("table", "coil", "holding")],
)
def test_bad_order_and_table(tmp_path: Path, key: str, value: str, expected: str) -> None:
    error = _error(
        tmp_path,
        HEADER + f"  - field: power_w\n    address: 0\n    type: int16\n    {key}: {value}\n",
    )
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:7") and field == f"registers[0].{key}"
    assert value in message and expected in message


def test_unknown_field(tmp_path: Path) -> None:
    error = _error(tmp_path, HEADER + "  - field: power_kw\n    address: 0\n    type: int16\n")
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:4")
    assert field == "registers[0].field"
    assert "not a contract field" in message and "'power_w'" in message


def test_field_mapped_twice(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        HEADER
        + "  - {field: power_w, address: 0, type: int16}\n"
        + "  - {field: power_w, address: 8, type: int16}\n",
    )
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:5") and field == "registers[1].field"
    assert "mapped twice" in message and "bad.yaml:4" in message


def test_register_wider_than_a_request(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        "name: bad\nmax_registers_per_request: 2\nregisters:\n"
        "  - field: import_kwh\n    address: 0\n    type: float64\n",
    )
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:6") and field == "registers[0].type"
    assert "4 registers" in message and "max_registers_per_request 2" in message


def test_max_registers_per_request_above_modbus_limit(tmp_path: Path) -> None:
    error = _error(tmp_path, "name: bad\nmax_registers_per_request: 126\nregisters: []\n")
    where, field, _ = _only_problem(error)
    assert where.endswith("bad.yaml:2") and field == "max_registers_per_request"


def test_missing_max_registers_per_request(tmp_path: Path) -> None:
    error = _error(
        tmp_path, "name: bad\nregisters:\n  - {field: power_w, address: 0, type: int16}\n"
    )
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:1") and field == "max_registers_per_request"
    assert "missing" in message


def test_missing_type_without_default(tmp_path: Path) -> None:
    error = _error(tmp_path, HEADER + "  - {field: power_w, address: 0}\n")
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:4") and field == "registers[0].type"
    assert "defaults.type" in message


def test_extends_unknown_profile(tmp_path: Path) -> None:
    error = _error(tmp_path, "name: bad\nextends: sdm999\nregisters: []\n")
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:2") and field == "extends"
    assert "sdm999" in message and "sdm630" in message  # lists the shipped profiles


def test_extends_missing_file(tmp_path: Path) -> None:
    error = _error(tmp_path, "name: bad\n\nextends: ./nowhere.yaml\n")
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:3") and field == "extends" and "nowhere.yaml" in message


def test_extends_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\nregisters: []\n")
    (tmp_path / "b.yaml").write_text("name: b\nmax_registers_per_request: 4\n\nextends: a.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_profile(str(tmp_path / "a.yaml"))
    where, field, message = _only_problem(caught.value)
    assert where == f"{tmp_path / 'b.yaml'}:4" and field == "extends"
    assert "a.yaml -> b.yaml -> a.yaml" in message


def test_extends_self(tmp_path: Path) -> None:
    error = _error(tmp_path, "name: self\nextends: bad.yaml\n")
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:2") and field == "extends" and "cycle" in message


def test_child_register_overlapping_inherited_one_is_reported_in_child(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        "name: sim\nextends: sdm630\nregisters:\n"
        "  - {field: device_time_ms, address: 0x4B, type: uint64}\n",
    )
    where, field, message = _only_problem(error)
    assert where.endswith("bad.yaml:4") and field == "registers[0].address"
    assert "'export_kwh'" in message and "sdm630.yaml:" in message


def test_unknown_shipped_name_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'sdm9000'.*sdm120"):
        load_profile("sdm9000")
    with pytest.raises(ConfigError, match="not found"):
        load_profile("/nonexistent/meter.yaml")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    error = _error(tmp_path, "name: bad\nregisters:\n  - {field: power_w, address: [\n")
    assert error.problems[0].where.startswith(str(tmp_path / "bad.yaml") + ":")


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        HEADER
        + "  - {field: power_w, address: 0, type: int16, colour: red}\n"
        + "  - {field: nope, address: 1, type: int16}\n",
    )
    assert {p.field for p in error.problems} == {"registers[0].colour", "registers[1].field"}
