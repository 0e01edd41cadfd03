"""deploy/systemd/electrocloud-edge.service: verified by systemd itself, and the commands
it runs behave as the unit expects (``--check`` passes a good config, exit status 2 for
a bad one, which the unit does not restart)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from production_support import REPO
from services import require_binary

UNIT = REPO / "deploy" / "systemd" / "electrocloud-edge.service"
INSTALLED = "/opt/electrocloud/bin/electrocloud"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def electrocloud_command() -> str:
    found = shutil.which("electrocloud") or str(Path(sys.executable).parent / "electrocloud")
    assert os.access(found, os.X_OK), "the electrocloud command is not installed"
    return found


def test_unit_runs_the_agent_as_its_own_user_with_a_state_directory() -> None:
    service = unit()["Service"]
    assert service["User"] == "electrocloud" and service["Group"] == "electrocloud"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["StateDirectory"] == "electrocloud"
    assert service["ExecStart"] == f"{INSTALLED} edge --config /etc/electrocloud/edge.yaml"
    assert service["EnvironmentFile"] == "/etc/electrocloud/edge.env"
    assert service["ProtectSystem"] == "strict"  # only the state directory is writable
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
    # The example config keeps the queue inside the state directory.
    example = yaml.safe_load((REPO / "edge.example.yaml").read_text())
    assert example["queue"]["path"].startswith("/var/lib/electrocloud/")


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, electrocloud_command()))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # Control: systemd does report a mistake in such a unit.
    broken = tmp_path / "broken.service"
    broken.write_text(copy.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "restart specifier" in result.stderr


def test_exec_start_pre_check_passes_a_good_config_and_stops_a_bad_one() -> None:
    command = [electrocloud_command(), "edge", "--config", str(REPO / "edge.example.yaml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELECTROCLOUD_")}
    good = subprocess.run(
        [*command, "--check"],
        capture_output=True,
        text=True,
        env={**env, "ELECTROCLOUD_EDGE_MQTT__PASSWORD": "pw-from-add-gateway"},
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "config OK" in good.stdout
    bad = subprocess.run(
        [*command, "--check"],
        capture_output=True,
        text=True,
        env={**env, "ELECTROCLOUD_EDGE_MQTT__PASSWORD": "CHANGE_ME"},
        timeout=60,
    )
    assert bad.returncode == 2, "the unit's RestartPreventExitStatus=2 relies on this"
    assert "ELECTROCLOUD_EDGE_MQTT__PASSWORD" in bad.stderr and "placeholder" in bad.stderr
