"""A real VictoriaMetrics server for tests of the InfluxDB write path.

VictoriaMetrics accepts InfluxDB 2 line-protocol writes at ``/api/v2/write``
(it ignores ``org`` and ``bucket``: no ``db`` label is added unless ``?db=`` is
sent) and stores every numeric field as its own series named
``<measurement>_<field>``; a string field is stored as the number 0. What it
stored comes back from ``/api/v1/export`` as one JSON line per series.
Started with ``-dedup.minScrapeInterval=1ms`` so that samples of one series
with the same millisecond collapse to one, like InfluxDB's overwrite of a point.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from services import free_port, require_binary, wait_for_port


class VictoriaMetrics:
    """A victoria-metrics process; can be stopped and restarted on the same port and data."""

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.binary = require_binary("victoria-metrics", "victoria-metrics")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.workdir / "victoria-metrics.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                self.binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.workdir / 'data'}",
                "-retentionPeriod=100y",
                "-dedup.minScrapeInterval=1ms",
                "-loggerLevel=WARN",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for_port(self.port)
        self._wait_healthy()

    def _wait_healthy(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.read().strip() == b"OK":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"victoria-metrics on {self.url} not healthy after {timeout_s} s"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): VictoriaMetrics flushes what it accepted to disk."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> VictoriaMetrics:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def export(self, match: str = '{__name__=~"meter_.*"}', *, raw: bool = False) -> list[Any]:
        """Stored series as ``{"metric": labels, "values": [...], "timestamps": [...]}``.

        Deduplicated like queries are; ``raw=True`` skips deduplication
        (``reduce_mem_usage``) to show every sample that reached storage.
        """
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        params = {"match[]": match}
        if raw:
            params["reduce_mem_usage"] = "1"
        body = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data=body, timeout=10) as answer:
            return [json.loads(line) for line in answer.read().splitlines() if line.strip()]

    def influx_rows_inserted(self) -> int:
        """Samples received over the InfluxDB protocol since start (one per numeric field)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith('vm_rows_inserted_total{type="influx"}'):
                    return int(float(line.split()[-1]))
        raise AssertionError("victoria-metrics reported no vm_rows_inserted_total for influx")
