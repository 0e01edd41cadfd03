"""``electrocloud demo`` end to end: real processes, real Mosquitto, zero loss, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from services import require_binary


def demo(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "electrocloud.cli", "demo", "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_demo_two_days_five_meters_loses_nothing(tmp_path: Path) -> None:
    require_binary("mosquitto", "mosquitto")
    out = tmp_path / "demo"
    process = demo(out, "--days", "2", "--meters", "5")
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["readings_lost"] == 0
    assert summary["messages_rejected"] == 0
    assert summary["readings_stored"] == summary["readings_committed"]
    meters = summary["meters_detail"]
    assert len(meters) == 5
    for meter in meters:
        # Two days plus 26 h of time-zone margin at one read per 15 simulated minutes: 296.
        assert 285 <= meter["stored"] <= 300, meter
        assert meter["lost"] == 0
        # Stored registers are float32; the simulator's truth is exact float64.
        assert meter["true_import_kwh"] is not None
        assert abs(meter["import_error_kwh"]) <= 0.05 + 1e-5 * meter["true_import_kwh"], meter
    assert "0 readings lost" in output
    # The demo ends by billing the two simulated days for every customer.
    invoices = summary["invoices"]
    assert sorted(i["meter_id"] for i in invoices) == sorted(m["meter_id"] for m in meters)
    for invoice in invoices:
        record = json.loads(Path(invoice["file"]).read_text())
        assert record["period_end"] > record["period_start"]
        assert Decimal(record["total"]) > 0
        assert Decimal(record["energy"]["import_kwh"]) > 0
        for suffix in (".html", ".pdf"):
            assert Path(invoice["file"]).with_suffix(suffix).exists()
    assert "Invoices for" in output
    assert (out / "readings.sqlite").exists()
    assert {p.name for p in (out / "logs").iterdir()} >= {
        "mosquitto.log",
        "simulator.log",
        "edge.log",
        "backend.log",
    }
    assert processes_mentioning(str(out)) == []


def test_demo_on_the_embedded_amqtt_broker_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    process = demo(out, "--days", "1", "--meters", "3", "--broker", "amqtt")
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    assert "embedded amqtt broker" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["readings_lost"] == 0
    assert summary["readings_stored"] == summary["readings_committed"] >= 3 * 190
    assert (out / "logs" / "amqtt.log").exists()
    assert processes_mentioning(str(out)) == []


def test_ctrl_c_stops_everything_without_stray_processes(tmp_path: Path) -> None:
    require_binary("mosquitto", "mosquitto")
    out = tmp_path / "demo"
    process = demo(out, "--days", "30", "--meters", "3")
    deadline = time.monotonic() + 60
    while not (out / "edge.yaml").exists() or len(processes_mentioning(str(out))) < 4:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "demo did not start its processes"
        time.sleep(0.2)
    children = processes_mentioning(str(out))
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert processes_mentioning(str(out)) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
