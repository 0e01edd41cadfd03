"""Config loading: errors name file, line, field and fix; environment wins over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import EdgeSettings
from electrocloud.config import load_settings
from electrocloud.errors import ConfigError

GOOD = """\
gateway_id: gw-1
mqtt:
  url: mqtt://127.0.0.1:1883
connections:
  - name: sim
    host: 127.0.0.1
    port: 5020
  - name: bus
    type: rtu
    port: /dev/ttyUSB0
meters:
  - meter_id: m1
    connection: sim
    unit_id: 1
    profile: sdm630
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(EdgeSettings, write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(EdgeSettings, write(tmp_path, GOOD))
    assert settings.connections[0].type == "tcp"
    assert settings.connections[1].type == "rtu"
    assert settings.meters[0].poll_interval_s == 10.0
    assert settings.mqtt.port == 1883


def test_bad_value_names_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("    unit_id: 1", "    unit_id: 1\n    poll_interval_s: -5")
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'edge.yaml'}:15: meters[0].poll_interval_s:")
    assert "greater than 0" in found[0]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  url: mqtt://127.0.0.1:1883", "  url: mqtt://127.0.0.1:1883\n  pasword: x"
    )
    (found,) = problems(tmp_path, text)
    assert ":4: mqtt.pasword: unknown field" in found
    assert "did you mean 'password'" in found


def test_missing_field(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, GOOD.replace("gateway_id: gw-1\n", ""))
    assert "gateway_id: required field is missing" in found


def test_dangling_connection_reference(tmp_path: Path) -> None:
    (found,) = problems(
        tmp_path, GOOD.replace("    connection: sim\n", "    connection: nowhere\n")
    )
    assert "meter 'm1' uses connection 'nowhere'; defined connections: sim, bus" in found


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, GOOD + "  - [unclosed\n")
    assert "not valid YAML" in found
    assert f"{tmp_path / 'edge.yaml'}:" in found


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELECTROCLOUD_EDGE_MQTT__URL", "mqtts://broker.example:8883")
    monkeypatch.setenv("ELECTROCLOUD_EDGE_GATEWAY_ID", "gw-env")
    settings = load_settings(EdgeSettings, write(tmp_path, GOOD))
    assert settings.gateway_id == "gw-env"
    assert settings.mqtt.port == 8883 and settings.mqtt.use_tls


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ELECTROCLOUD_EDGE_MQTT__URL", "http://nope")
    (found,) = problems(tmp_path, GOOD)
    assert found.startswith("environment variable ELECTROCLOUD_EDGE_MQTT__URL: mqtt.url:")


def test_two_meters_on_one_unit_are_refused(tmp_path: Path) -> None:
    text = GOOD + "  - meter_id: m2\n    connection: sim\n    unit_id: 1\n    profile: sdm630\n"
    (found,) = problems(tmp_path, text)
    assert "two meters share connection 'sim' unit_id 1" in found
