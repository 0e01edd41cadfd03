"""The benchmark harness runs end to end in quick mode and reports a figure for every benchmark.

No number is asserted (speed is for the benchmarks themselves): only that every
benchmark ran against real services and wrote its figures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from services import require_binary

REPO = Path(__file__).resolve().parent.parent

#: Section titles of docs/benchmarks.md, one per benchmark.
TITLES = (
    "Edge polling",
    "Backend ingestion",
    "End-to-end freshness",
    "Billing",
    "Memory",
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_run_writes_figures_for_every_benchmark(tmp_path: Path) -> None:
    require_binary("mosquitto", "mosquitto")
    out = tmp_path / "out"
    out.mkdir()
    figures = tmp_path / "figures.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--out",
            str(out),
            "--json",
            str(figures),
            "--keep",
            str(tmp_path / "scratch"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-4000:]

    report = (out / "benchmarks.md").read_text()
    data = json.loads(figures.read_text())
    assert [b["title"].split(":")[0] for b in data["benchmarks"]] == list(TITLES)
    for benchmark in data["benchmarks"]:
        title = benchmark["title"]
        assert benchmark["error"] is None, f"{title}: {benchmark['error']}"
        assert benchmark["figures"], f"{title} reported no figure"
        assert benchmark["targets"], f"{title} checked no target"
        for figure in benchmark["figures"]:
            assert figure["runs"], f"{title}: {figure['name']} has no runs"
            # Every figure is a measured number (rates, times and sizes above zero),
            # printed and written.
            assert all(math.isfinite(v) for v in figure["runs"]), f"{title}: {figure['name']}"
            if "growth" not in figure["name"]:
                assert all(v > 0 for v in figure["runs"]), f"{title}: {figure['name']}"
            assert figure["name"] in completed.stdout
            assert f"| {figure['name']} |" in report
        assert f". {title}" in report
    # Figures set against their floor: each benchmark but billing names one.
    for benchmark in data["benchmarks"][:3] + data["benchmarks"][4:]:
        assert any("floor" in f["name"] for f in benchmark["figures"]), benchmark["title"]
    assert "## Machine" in report and "mosquitto" in report
