"""Backend configuration, meter registry and store factory."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import BackendSettings
from backend.registry import MeterRegistry
from backend.store_factory import open_store
from electrocloud.config import load_settings
from electrocloud.contract import Reason
from electrocloud.errors import ConfigError, ContractError
from electrocloud.stores.influx import InfluxStore
from electrocloud.stores.sqlite import SqliteStore

REPO = Path(__file__).resolve().parent.parent


def test_example_config_loads_with_documented_defaults() -> None:
    settings = load_settings(BackendSettings, REPO / "backend.example.yaml")
    assert settings.mqtt.share_group == "electrocloud-backend"
    assert settings.store.type == "sqlite"
    assert settings.http.port == 9180
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
    assert settings.mqtt.effective_client_id() == f"electrocloud-backend-{host}-0"


def test_environment_overrides_the_file_and_secrets_stay_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "backend.yaml"
    path.write_text("mqtt:\n  url: mqtt://broker:1883\n  username: ingest\n")
    monkeypatch.setenv("ELECTROCLOUD_BACKEND_MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("ELECTROCLOUD_BACKEND_MQTT__INSTANCE", "b")
    settings = load_settings(BackendSettings, path)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.mqtt.effective_client_id().endswith("-b")


def test_influxdb_store_without_its_section_is_a_config_error_with_a_line(tmp_path: Path) -> None:
    path = tmp_path / "backend.yaml"
    path.write_text("http:\n  port: 0\nstore:\n  type: influxdb\n")
    with pytest.raises(ConfigError) as info:
        load_settings(BackendSettings, path)
    assert f"{path}:3" in str(info.value)
    assert "influxdb section" in str(info.value)


def test_cli_reports_a_bad_config_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "backend.yaml"
    path.write_text("mqtt:\n  url: http://broker\nbatch:\n  max_readings: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "electrocloud.cli", "backend", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{path}:2: mqtt.url" in result.stderr
    assert f"{path}:4: batch.max_readings" in result.stderr


def test_registry_pins_meters_to_gateways(tmp_path: Path) -> None:
    path = tmp_path / "meters.yaml"
    path.write_text("meters:\n  m-1: {gateway_id: gw-1, site: Hall}\n")
    registry = MeterRegistry.load(path)
    registry.check("gw-1", "m-1")
    registry.check("gw-7", "m-unlisted")  # not strict: unknown meters pass
    with pytest.raises(ContractError) as info:
        registry.check("gw-2", "m-1")
    assert info.value.reason == Reason.WRONG_GATEWAY
    assert registry.sites() == {"m-1": "Hall"}


def test_strict_registry_rejects_unknown_meters(tmp_path: Path) -> None:
    path = tmp_path / "meters.yaml"
    path.write_text("strict: true\nmeters:\n  m-1: {gateway_id: gw-1}\n")
    with pytest.raises(ContractError) as info:
        MeterRegistry.load(path).check("gw-1", "m-2")
    assert info.value.reason == Reason.UNKNOWN_METER


def test_bad_registry_file_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "meters.yaml"
    path.write_text("meters:\n  m-1: {gateway_id: gw-1}\n  m-2: {gateway: gw-1}\n")
    with pytest.raises(ConfigError) as info:
        MeterRegistry.load(path)
    message = str(info.value)
    assert f"{path}:3" in message
    assert "meters.m-2" in message
    path.write_text("meters:\n  bad id: {gateway_id: gw-1}\n")
    with pytest.raises(ConfigError, match="must match"):
        MeterRegistry.load(path)


def test_store_factory_builds_the_configured_adapter(tmp_path: Path) -> None:
    path = tmp_path / "backend.yaml"
    path.write_text(f"store:\n  sqlite:\n    path: {tmp_path / 'x.sqlite'}\n")
    store = open_store(load_settings(BackendSettings, path).store)
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "x.sqlite"
    store.close()

    path = tmp_path / "backend.yaml"
    path.write_text(
        "store:\n  type: influxdb\n  influxdb:\n    url: http://127.0.0.1:1\n"
        "    org: o\n    bucket: readings\n    token: t\n"
    )
    influx = open_store(load_settings(BackendSettings, path).store, site_by_meter={"m-1": "Hall"})
    assert isinstance(influx, InfluxStore)
    assert (influx.url, influx.bucket) == ("http://127.0.0.1:1", "readings")
    influx.close()


def test_cli_reports_a_taken_http_port_and_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "backend.yaml"
        path.write_text(f"http:\n  port: {port}\n")
        result = subprocess.run(
            [sys.executable, "-m", "electrocloud.cli", "backend", "--config", str(path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot serve health and metrics on 127.0.0.1:{port}" in result.stderr
