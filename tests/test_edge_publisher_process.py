"""Edge publisher processes killed with SIGKILL: Last Will, and restart on the same queue file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from edge_mqtt_recorder import (
    Recorder,
    check_delivery,
    make_sample,
    wait_until,
)
from services import MosquittoBroker

from edge.config import QueueSettings
from edge.queue import ReadingQueue

SCRIPT = Path(__file__).with_name("edge_publisher_proc.py")
GATEWAY = "gw-proc"


def start_publisher(
    queue_path: Path, mosquitto: MosquittoBroker, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), "--queue", str(queue_path), "--url", mosquitto.url,
             "--gateway", GATEWAY, *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )  # fmt: skip


def kill_9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def test_last_will_marks_the_gateway_offline_after_kill_9(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    process = start_publisher(tmp_path / "queue.sqlite", mosquitto, tmp_path / "proc.log")
    try:
        with Recorder(mosquitto.port) as recorder:
            wait_until(
                lambda: [s.state for s in recorder.statuses()] == ["online"], 30, "online status"
            )
            kill_9(process)
            wait_until(
                lambda: [s.state for s in recorder.statuses()] == ["online", "offline"],
                30,
                "the Last Will",
            )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with Recorder(mosquitto.port, persistent=False) as fresh:  # what a newcomer is told
        wait_until(lambda: bool(fresh.retained_statuses()), 10, "retained status")
        (status,) = fresh.retained_statuses()
    assert status.gateway_id == GATEWAY and status.state == "offline"
    assert status.agent_version == "test-proc"


def test_restart_after_kill_9_mid_drain_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    queue_path = tmp_path / "queue.sqlite"
    counts = {f"m{i}": 0 for i in range(4)}
    queue = ReadingQueue(queue_path, QueueSettings(path=queue_path))
    for _ in range(10):
        samples = []
        for meter_id in counts:
            for _ in range(500):
                samples.append(make_sample(meter_id, counts[meter_id]))
                counts[meter_id] += 1
        queue.append(samples)
    total = sum(counts.values())
    assert queue.depth() == total == 20_000
    queue.close()
    small_batches = ("--max-batch", "10", "--max-inflight", "2")

    with Recorder(mosquitto.port) as recorder:
        first = start_publisher(queue_path, mosquitto, tmp_path / "first.log", *small_batches)
        try:
            wait_until(lambda: recorder.distinct_count() >= 2000, 60, "2000 readings")
            kill_9(first)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()

        # Killed mid-drain: some rows were acknowledged and deleted, the rest waits.
        queue = ReadingQueue(queue_path, QueueSettings(path=queue_path))
        left = queue.depth()
        queue.close()
        assert 0 < left <= total - 2000 + 2 * 10

        second = start_publisher(
            queue_path, mosquitto, tmp_path / "second.log", *small_batches, "--exit-when-empty"
        )
        stdout, _ = second.communicate(timeout=120)
        assert second.returncode == 0, (tmp_path / "second.log").read_text()
        stats = json.loads(stdout)
        assert stats["published_readings"] >= left

        wait_until(lambda: recorder.distinct_count() == total, 30, f"all {total} readings")
        duplicates = check_delivery(recorder.readings(), counts)
    # Re-sent are only the messages in flight (or acked but not yet deleted) at the kill.
    assert duplicates <= 2 * 2 * 10
    queue = ReadingQueue(queue_path, QueueSettings(path=queue_path))
    assert queue.depth() == 0
    assert all(queue.next_seq(m) == n for m, n in counts.items())  # seqs survived both
    queue.close()
