"""Real services for tests: a Mosquitto broker on a free port, and helpers.

Under ``CI=true`` a missing service binary fails the test run; elsewhere the
test is skipped with a message saying what to install.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, apt_package: str) -> str:
    """Path of ``name``; fail under CI and skip elsewhere when it is missing."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path:
        return path
    message = f"{name} not found: apt-get install {apt_package}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")


class MosquittoBroker:
    """A real mosquitto process; can be stopped and restarted on the same port.

    ``extra_config`` lines are appended to a minimal config (anonymous access on
    loopback, persistence in ``workdir`` so QoS 1 sessions survive a restart).
    """

    def __init__(self, workdir: Path, *, port: int | None = None, extra_config: str = "") -> None:
        self.binary = require_binary("mosquitto", "mosquitto")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    # Started as root, mosquitto drops to user 'mosquitto', which cannot
                    # write persistence or logs in a test's private tmp dir.
                    "user root" if os.geteuid() == 0 else "",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "autosave_interval 1",
                    "max_queued_messages 0",
                    "max_inflight_messages 0",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    self.extra_config,
                    "",
                ]
            )
        )
        return config

    def start(self) -> None:
        config = self._write_config()
        log = open(self.workdir / "mosquitto.stdout", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen([self.binary, "-c", str(config)], stdout=log, stderr=log)
        log.close()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
