"""Child processes of the demo: started with logs in the output folder, stopped cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from electrocloud.errors import ElectroCloudError


class DemoError(ElectroCloudError):
    """The demo could not start or finish a stage."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DemoError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


class Child:
    """One named child process whose output goes to ``logs/<name>.log``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = False  # set by stop(): an exit is then expected

    def start(self) -> Child:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and not self.stopping and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise DemoError(
                f"{self.name} exited with code {self.process.returncode}; "
                f"see {self.log_path}:\n{tail}"
            )

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL as a last resort. Returns the exit code."""
        process = self.process
        if process is None:
            return None
        self.stopping = True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode


def electrocloud_command(*args: str) -> list[str]:
    """The argv that runs an ``electrocloud`` subcommand with this interpreter."""
    return [sys.executable, "-m", "electrocloud.cli", *args]


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def mosquitto_child(binary: str, work_dir: Path, port: int, log_dir: Path) -> Child:
    """A private Mosquitto: loopback only, anonymous, persistent, unlimited queues.

    ``max_queued_messages 0``: the default of 1000 silently drops messages for a
    slow subscriber (docs/backend.md has the measurement).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {work_dir}/",
        "autosave_interval 10",
        "max_queued_messages 0",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to 'mosquitto', which cannot write here
    config.write_text("\n".join(lines) + "\n")
    return Child("mosquitto", [binary, "-c", str(config)], log_dir)
