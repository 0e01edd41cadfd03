"""Shared parts of the benchmarks: statistics, child processes, /proc readings, Mosquitto.

Every measured piece of code runs in a child process (a :class:`Worker`), so its
CPU time and memory are its own and the parent, which only orchestrates, does
not compete with it for the interpreter lock.
"""

from __future__ import annotations

import json
import os
import platform
import selectors
import shutil
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from electrocloud.demo.processes import free_port as free_port
from electrocloud.demo.processes import wait_for_port as wait_for_port

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- statistics -------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One figure measured over several runs: median, min and max are what gets reported."""

    name: str
    unit: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "runs": list(self.values),
        }


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, ...]:
    """Run-by-run ratios (run i of the project over run i of its floor, measured back to back)."""
    return tuple(
        n / d if d else float("nan") for n, d in zip(numerators, denominators, strict=True)
    )


def fmt(value: float, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, thousands separated."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:,.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}g}"


def fmt_figure(figure: Figure, digits: int = 3) -> str:
    return f"{fmt(figure.median, digits)} ({fmt(figure.low, digits)} .. {fmt(figure.high, digits)})"


@dataclass
class Outcome:
    """What one benchmark reports: figures, targets checked, notes and raw data."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)  # (target, met, measured)
    notes: list[str] = field(default_factory=list)
    method: str = ""
    error: str | None = None

    def add(self, name: str, unit: str, values: Sequence[float]) -> Figure:
        figure = Figure(name, unit, tuple(float(v) for v in values))
        self.figures.append(figure)
        return figure

    def target(self, text: str, met: bool, measured: str) -> None:
        self.targets.append((text, met, measured))

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "method": self.method,
            "figures": [f.as_dict() for f in self.figures],
            "targets": [{"target": t, "met": m, "measured": v} for t, m, v in self.targets],
            "notes": self.notes,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """An outcome written by :meth:`as_dict` (to reuse a previous run's figures)."""
        outcome = cls(data["title"], method=data.get("method", ""), error=data.get("error"))
        for figure in data["figures"]:
            outcome.add(figure["name"], figure["unit"], figure["runs"])
        for target in data["targets"]:
            outcome.target(target["target"], target["met"], target["measured"])
        outcome.notes = list(data["notes"])
        return outcome


# --- /proc ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of process ``pid`` in bytes, from /proc/<pid>/status."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


# --- ports and processes ------------------------------------------------------------


# free_port and wait_for_port are re-exported from the demo: one implementation.


class BenchmarkError(Exception):
    """A benchmark could not run (a child failed, a service is missing...)."""


class Worker:
    """A child ``python -m benchmarks.worker`` that runs commands sent as JSON lines.

    It stays alive across runs, so imports and warm-up are paid once and the
    project and its floor can alternate in the same interpreter.
    """

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, command: str, **args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": command, "args": args}).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout_s: float) -> Any:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                raise BenchmarkError(f"worker {self.name}: no answer within {timeout_s:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise BenchmarkError(f"worker {self.name} exited:\n{self.log_tail()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise BenchmarkError(f"worker {self.name}: {reply['error']}")
        return reply["result"]

    def call(self, command: str, *, wait_s: float = 900.0, **args: Any) -> Any:
        """Run ``command`` with ``args`` in the worker; wait ``wait_s`` for the answer."""
        self.send(command, **args)
        return self.receive(wait_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.close()
                self.process.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Child:
    """A long-running child process (a service) with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            raise BenchmarkError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# --- Mosquitto -------------------------------------------------------------------------


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise BenchmarkError("mosquitto not found: apt-get install mosquitto")
    return path


class Mosquitto(Child):
    """A private Mosquitto on a free loopback port.

    No persistence (a periodic save of a large queue would stall the broker in the
    middle of a measurement); ``max_queued_messages 0`` so nothing queued for an
    offline session is dropped (see docs/backend.md).
    """

    def __init__(self, work_dir: Path, log_dir: Path) -> None:
        self.port = free_port()
        config = work_dir / f"mosquitto-{self.port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "user root" if os.geteuid() == 0 else "",
                    "allow_anonymous true",
                    "persistence false",
                    "max_queued_messages 0",
                    "max_inflight_messages 0",
                    "log_type error",
                    "log_type warning",
                    "",
                ]
            )
        )
        super().__init__(f"mosquitto-{self.port}", [mosquitto_binary(), "-c", str(config)], log_dir)
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


# --- the machine ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _mosquitto_version() -> str:
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5
        ).stdout
    except (BenchmarkError, OSError, subprocess.TimeoutExpired):
        return "not installed"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ").strip() or "unknown"


def machine_info() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{int(meminfo[1]) / 1024 / 1024:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": _mosquitto_version(),
        **{
            name: _version(name)
            for name in ("electrocloud", "pymodbus", "paho-mqtt", "aiomqtt", "pydantic")
        },
        "pydantic-core": _version("pydantic_core"),
    }
