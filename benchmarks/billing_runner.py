"""Benchmark 4, billing: runs ``benchmarks/billing.py`` as a subprocess and parses its figures.

The billing benchmark itself is its own script (``python -m benchmarks.billing``);
this module runs it once per run and reads its one-line summary.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from benchmarks.common import REPO, Outcome, fmt, python_module

TARGET_METERS_PER_S = 200
SCRIPT = REPO / "benchmarks" / "billing.py"

_SUMMARY = re.compile(
    r"billed (?P<meters>\d+) meters.*?best (?P<best>[\d.]+) s.*?median (?P<median>[\d.]+) s"
    r".*?peak RSS (?P<rss>[\d.]+) MiB(?:.*?heap of one run (?P<heap>[\d.]+) MiB)?"
)


def run(*, quick: bool, runs: int, work_dir: Path, log_dir: Path) -> Outcome:
    meters = 100 if quick else 1000
    outcome = Outcome("Billing: one month of 15-minute data per meter from SQLite")
    if not SCRIPT.exists():
        outcome.error = f"{SCRIPT.relative_to(REPO)} does not exist yet: billing not measured"
        return outcome
    outcome.method = (
        f"`python -m benchmarks.billing --meters {meters} --repeat {runs}` as a subprocess "
        "(see its docstring: fills a SQLite file through SqliteStore, untimed, then bills July "
        "2024 on the commercial TOU + tiered + demand tariff for every meter); meters per "
        "second from its median run, and its peak RSS and peak Python heap. No floor: billing "
        "has no bare equivalent to compare with."
        + (" Quick mode bills 100 meters, not 1,000." if quick else "")
    )
    log = log_dir / "billing.log"
    completed = subprocess.run(
        python_module("benchmarks.billing", "--meters", str(meters), "--repeat", str(runs)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    log.write_text(completed.stdout + completed.stderr)
    match = _SUMMARY.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-5:]
        outcome.error = f"billing benchmark failed (exit {completed.returncode}): " + " | ".join(
            tail
        )
        return outcome
    billed = int(match["meters"])
    median_s, best_s = float(match["median"]), float(match["best"])
    rate = outcome.add("billing, median run", "meters/s", [billed / median_s])
    outcome.add("billing, best run", "meters/s", [billed / best_s])
    outcome.add("billing process peak RSS", "MiB", [float(match["rss"])])
    if match["heap"] is not None:
        outcome.add("peak Python heap of one billing run", "MiB", [float(match["heap"])])
    outcome.notes.append(f"billing.py's own summary: {match.group(0)}")
    outcome.notes.append(
        f"the billing script reports best and median of its {runs} runs, not every run: "
        "min/max columns repeat the one value"
    )
    outcome.target(
        f">= {TARGET_METERS_PER_S} meters/s" + (" (quick mode: 100 meters)" if quick else ""),
        rate.median >= TARGET_METERS_PER_S,
        f"{fmt(rate.median)} meters/s",
    )
    return outcome
