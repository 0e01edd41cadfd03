"""docker-compose.yml, Dockerfile, .env.example and the compose helper scripts, checked
offline (there is no Docker engine here): structure, pins, healthchecks, variables,
mounts, and the refusal of placeholder secrets by every service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from production_support import REPO

from backend.config import BackendSettings
from electrocloud.config import load_settings
from electrocloud.errors import ConfigError
from electrocloud.secrets import is_placeholder, refuse_placeholder

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_DIR = REPO / "deploy" / "compose"
ENV_EXAMPLE = REPO / ".env.example"
SECRETS = {
    "MQTT_BACKEND_PASSWORD",
    "INFLUXDB_ADMIN_PASSWORD",
    "INFLUXDB_OPERATOR_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
}
LONG_RUNNING = {"mosquitto", "influxdb", "grafana", "backend-1", "backend-2", "billing"}
DEMO = {"simulator", "edge"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return config


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (and $$ for a literal $)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name, "")
        if op == ":-" and not current:
            return arg
        if op == ":?" and not current:
            raise KeyError(f"{name}: {arg}")
        return current

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value).replace("$$", "$")


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == LONG_RUNNING | DEMO | {"influxdb-tokens"}
    images = {name: service["image"] for name, service in services.items()}
    assert re.fullmatch(r"influxdb:2\.7\.\d+", images["influxdb"]), "InfluxDB 2.7 (has Flux)"
    assert images["influxdb-tokens"] == images["influxdb"]
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", images["mosquitto"])
    assert re.fullmatch(r"grafana/grafana:1[12]\.\d+\.\d+", images["grafana"])
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} not pinned"
    # Grafana schema used by the dashboard tests is the same version as the image.
    assert images["grafana"].endswith(":12.2.1")
    ours = {name for name, s in services.items() if "build" in s}
    assert ours == {"backend-1", "backend-2", "billing", "simulator", "edge"}
    assert {images[name] for name in ours} == {"electrocloud:0.1.0"}
    assert {name for name, s in services.items() if s.get("profiles")} == DEMO


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully"
                if services[dependency].get("restart") == "no"
                else "service_healthy"
            )
            assert condition == {"condition": expected}, (name, dependency, condition)
    assert services["influxdb-tokens"]["restart"] == "no"  # the one one-shot job
    for name in ("backend-1", "backend-2", "billing", "grafana"):
        assert "influxdb-tokens" in services[name]["depends_on"], name
    for name in ("backend-1", "backend-2"):
        assert set(services[name]["depends_on"]) == {"mosquitto", "influxdb", "influxdb-tokens"}


def test_two_backends_share_one_subscription_with_stable_client_ids(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    ids = [
        services[n]["environment"]["ELECTROCLOUD_BACKEND_MQTT__CLIENT_ID"]
        for n in ("backend-1", "backend-2")
    ]
    assert len(set(ids)) == 2
    letters = [
        services[n]["environment"]["ELECTROCLOUD_BACKEND_DEAD_LETTER__PATH"]
        for n in ("backend-1", "backend-2")
    ]
    assert len(set(letters)) == 2
    config = yaml.safe_load((COMPOSE_DIR / "backend.yaml").read_text())
    assert config["mqtt"]["share_group"] == "electrocloud-backend"
    assert config["mqtt"]["username"] == "electrocloud-backend"
    assert "password" not in config["mqtt"] and "token" not in config["store"]["influxdb"]


def test_every_variable_is_in_env_example_and_secrets_are_placeholders() -> None:
    text = COMPOSE.read_text()
    referenced = set(re.findall(r"\$\{(\w+)", text))
    # Provisioning files read by Grafana from its environment.
    for path in (REPO / "grafana" / "provisioning").rglob("*.yaml"):
        referenced |= set(re.findall(r"\$\{(\w+)", path.read_text()))
    example = env_example()
    assert referenced - set(example) == set(), "add these to .env.example"
    assert set(example) - referenced == set(), ".env.example lists unused variables"
    for name in SECRETS:
        assert example[name] == "CHANGE_ME", name
        assert is_placeholder(example[name])
    # Every ${SECRET} is required (":?"), so compose refuses to start without .env.
    for name in SECRETS:
        assert re.search(rf"\$\{{{name}:\?", text), name
    grafana_env = yaml.safe_load(text)["services"]["grafana"]["environment"]
    assert {"INFLUXDB_ORG", "INFLUXDB_BUCKET"} <= set(grafana_env)


def test_every_mounted_path_exists_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source, target, *mode = mount.split(":")
            assert target.startswith("/"), (name, mount)
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
                assert mode == ["ro"], f"{name}: bind mount {source} should be read-only"
            else:
                used.add(source)
    assert used == declared


def test_only_the_intended_ports_are_published(compose: dict[str, Any]) -> None:
    ports = {name: s.get("ports", []) for name, s in compose["services"].items()}
    assert ports["mosquitto"] == ["${MQTT_TLS_PORT:-8883}:8883"]  # 1883: compose network only
    assert ports["influxdb"] == ["127.0.0.1:${INFLUXDB_PORT:-8086}:8086"]
    assert ports["grafana"] == ["${GRAFANA_PORT:-3000}:3000"]
    assert all(not p for n, p in ports.items() if n not in ("mosquitto", "influxdb", "grafana"))


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1]), "pinned Python 3.11"
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^USER electrocloud$", text, re.M)
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            assert (REPO / source).exists(), f"COPY {source}: missing"
            assert f"!{source}" in ignored or f"!{source}/" in ignored, f"{source} is dockerignored"


def test_compose_backend_config_loads_and_refuses_placeholders(
    monkeypatch: pytest.MonkeyPatch, compose: dict[str, Any]
) -> None:
    """deploy/compose/backend.yaml with the environment compose gives backend-1."""
    example = env_example()

    def load(env: dict[str, str]) -> BackendSettings:
        service_env = compose["services"]["backend-1"]["environment"]
        for name, value in service_env.items():
            monkeypatch.setenv(name, interpolate(str(value), env))
        monkeypatch.setenv("ELECTROCLOUD_BACKEND_STORE__INFLUXDB__TOKEN", "generated-token-1")
        return load_settings(BackendSettings, COMPOSE_DIR / "backend.yaml")

    with pytest.raises(ConfigError) as refused:
        load(example)
    assert "ELECTROCLOUD_BACKEND_MQTT__PASSWORD" in str(refused.value)
    assert "placeholder" in str(refused.value)

    settings = load({**example, "MQTT_BACKEND_PASSWORD": "s3cret-Backend-pw"})
    assert settings.mqtt.effective_client_id() == "electrocloud-backend-1"
    assert settings.store.type == "influxdb" and settings.store.influxdb is not None
    assert settings.store.influxdb.bucket == example["INFLUXDB_BUCKET"]
    assert settings.store.influxdb.org == example["INFLUXDB_ORG"]

    monkeypatch.setenv("ELECTROCLOUD_BACKEND_STORE__INFLUXDB__TOKEN", "<token>")
    with pytest.raises(ConfigError, match="ELECTROCLOUD_BACKEND_STORE__INFLUXDB__TOKEN"):
        load_settings(BackendSettings, COMPOSE_DIR / "backend.yaml")


@pytest.mark.parametrize(
    "value", ["CHANGE_ME", "changeme", "change-me", "<password>", "placeholder", "${TOKEN}", ""]
)
def test_refuse_placeholder_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="MQTT_PASSWORD") as refused:
        refuse_placeholder("MQTT_PASSWORD", value)
    assert "placeholder" in str(refused.value)


def test_refuse_placeholder_accepts_real_secrets() -> None:
    for value in ("xK9-p2!qv", "mychangeme1", "example.org-pass", None):
        refuse_placeholder("MQTT_PASSWORD", value)


def run_sh(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=30,
    )


def test_refuse_placeholders_script_guards_third_party_services() -> None:
    script = COMPOSE_DIR / "refuse-placeholders.sh"
    for value in ("CHANGE_ME", "", "<admin-password>", "changeme"):
        result = run_sh(
            script,
            "GF_SECURITY_ADMIN_PASSWORD",
            "--",
            "echo",
            "started",
            env={"GF_SECURITY_ADMIN_PASSWORD": value},
        )
        assert result.returncode == 78 and "GF_SECURITY_ADMIN_PASSWORD" in result.stderr
        assert "started" not in result.stdout
    result = run_sh(script, "A", "B", "--", "echo", "started", env={"A": "x7-real", "B": "y8-real"})
    assert result.returncode == 0 and result.stdout == "started\n"


def test_with_secret_exports_the_token_file(tmp_path: Path) -> None:
    script = COMPOSE_DIR / "with-secret.sh"
    token = tmp_path / "backend.token"
    missing = run_sh(script, "TOKEN_VAR", str(token), "env", env={})
    assert missing.returncode == 78 and "influxdb-tokens" in missing.stderr
    token.write_text("tok-123==")
    result = run_sh(script, "TOKEN_VAR", str(token), "env", env={})
    assert result.returncode == 0 and "TOKEN_VAR=tok-123==" in result.stdout.splitlines()


def test_shell_scripts_parse() -> None:
    scripts = [*COMPOSE_DIR.glob("*.sh"), *(REPO / "mosquitto").glob("*.sh")]
    assert len(scripts) >= 7
    for script in scripts:
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_demo_simulator_writes_an_edge_config_the_demo_edge_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compose: dict[str, Any]
) -> None:
    """The demo's simulator command (as compose runs it, host and paths moved here)
    writes an edge config that the edge service's environment completes."""
    from edge.config import EdgeSettings

    env = {**env_example(), "MQTT_DEMO_GATEWAY_PASSWORD": "demo-pw-42"}
    services = compose["services"]
    command = [interpolate(arg, env) for arg in services["simulator"]["command"]]
    edge_config = tmp_path / "edge.yaml"
    moved = {
        "--host=simulator": "--host=127.0.0.1",
        "--port=5020": "--port=0",
        "--edge-config=/var/lib/electrocloud/edge.yaml": f"--edge-config={edge_config}",
    }
    assert set(moved) <= set(command)
    args = [moved.get(arg, arg) for arg in command]
    result = subprocess.run(
        [sys.executable, "-m", "electrocloud.cli", *args, "--duration=0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name, value in services["edge"]["environment"].items():
        monkeypatch.setenv(name, interpolate(str(value), env))
    settings = load_settings(EdgeSettings, edge_config)
    assert settings.gateway_id == env["MQTT_DEMO_GATEWAY"] == settings.mqtt.username
    assert settings.mqtt.url == "mqtt://mosquitto:1883"
    assert len(settings.meters) == int(env["DEMO_METERS"])
    assert settings.queue.path.parent == edge_config.parent  # in the demo-data volume
    assert settings.health.metrics_port == 9101
    assert services["edge"]["command"] == ["edge", "--config", "/var/lib/electrocloud/edge.yaml"]

    # Without a demo password the edge refuses to start.
    monkeypatch.setenv("ELECTROCLOUD_EDGE_MQTT__PASSWORD", "")
    with pytest.raises(ConfigError, match="ELECTROCLOUD_EDGE_MQTT__PASSWORD"):
        load_settings(EdgeSettings, edge_config)
