"""The edge's on-disk queue: seq numbers, group commit, caps, batching, acks (real SQLite files)."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
from edge_mqtt_recorder import expected_reading, make_sample

from edge.config import QueueSettings
from edge.queue import QueueError, ReadingQueue
from edge.sample import MeterSample
from electrocloud.contract import Reading


def settings(path: Path, **overrides: object) -> QueueSettings:
    return QueueSettings(path=path, **overrides)  # type: ignore[arg-type]


def open_queue(tmp_path: Path, **overrides: object) -> ReadingQueue:
    path = tmp_path / "queue.sqlite"
    return ReadingQueue(path, settings(path, **overrides))


def drain_all(queue: ReadingQueue, max_readings: int = 1000) -> dict[str, list[int]]:
    """Hand out and ack everything; seqs per meter in the order handed out."""
    seqs: dict[str, list[int]] = {}
    while batches := queue.next_batches(max_readings=max_readings, max_messages=50):
        for batch in batches:
            seqs.setdefault(batch.meter_id, []).extend(r.seq for r in batch.readings)
            queue.ack(batch.row_ids)
    return seqs


def wal_commits(db_path: Path) -> int:
    """Commit records in the -wal file: frames whose 'db size after commit' is set.

    Counted from the file SQLite writes, so it shows what reaches the disk.
    """
    data = (db_path.parent / (db_path.name + "-wal")).read_bytes()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits = 0
    offset = 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salts:
            break  # left over from before the last checkpoint
        if struct.unpack(">I", header[4:8])[0] != 0:
            commits += 1
        offset += 24 + page_size
    return commits


def test_seq_numbers_are_contiguous_per_meter_and_survive_reopening(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    counts = {"m1": 0, "m2": 0, "m3": 0, "m4": 0}

    def append_round(per_meter: dict[str, int]) -> None:
        samples = []
        for meter_id, n in per_meter.items():
            for _ in range(n):
                samples.append(make_sample(meter_id, counts[meter_id]))
                counts[meter_id] += 1
        assert queue.append(samples) == len(samples)

    append_round({"m1": 5, "m2": 3})
    append_round({"m1": 2, "m3": 4})
    queue.close()

    queue = ReadingQueue(tmp_path / "queue.sqlite", settings(tmp_path / "queue.sqlite"))
    assert queue.depth() == 14
    assert (queue.next_seq("m1"), queue.next_seq("m2"), queue.next_seq("m3")) == (7, 3, 4)
    append_round({"m2": 2, "m1": 1, "m4": 1})

    handed_out: dict[str, list[Reading]] = {}
    while batches := queue.next_batches(max_readings=100, max_messages=10):
        for batch in batches:
            handed_out.setdefault(batch.meter_id, []).extend(batch.readings)
    assert {m: [r.seq for r in rs] for m, rs in handed_out.items()} == {
        m: list(range(n)) for m, n in counts.items()
    }
    for meter_id, readings in handed_out.items():
        assert readings == [expected_reading(meter_id, i) for i in range(len(readings))]
    queue.close()


def test_append_commits_once_per_call_not_per_reading(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    queue.append([make_sample("m1", 0)])  # schema and first page settled
    commits_before = wal_commits(queue.path)
    stats_before = queue.stats.commits

    samples = [make_sample(f"m{i % 5}", i) for i in range(300)]
    assert queue.append(samples) == 300

    assert wal_commits(queue.path) == commits_before + 1
    assert queue.stats.commits == stats_before + 1
    assert queue.depth() == 301
    queue.close()


def test_ack_deletes_in_one_transaction_and_survives_reopening(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    queue.append([make_sample("m1", i) for i in range(10)])
    (batch,) = queue.next_batches(max_readings=4, max_messages=1)
    assert [r.seq for r in batch.readings] == [0, 1, 2, 3]
    commits_before = wal_commits(queue.path)

    assert queue.ack(batch.row_ids) == 4
    assert wal_commits(queue.path) == commits_before + 1
    assert queue.depth() == 6
    assert queue.ack(batch.row_ids) == 0  # already gone: acking again is harmless
    assert queue.stats.acked == 4
    queue.close()

    queue = ReadingQueue(tmp_path / "queue.sqlite", settings(tmp_path / "queue.sqlite"))
    assert queue.depth() == 6
    assert drain_all(queue) == {"m1": [4, 5, 6, 7, 8, 9]}
    assert queue.depth() == 0
    queue.close()


def test_next_batches_oldest_first_one_meter_each_bounded(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    # Interleaved as pollers deliver them: m1 starts first, m3 joins late.
    samples = []
    for i in range(20):
        samples.append(make_sample("m1", i))
        samples.append(make_sample("m2", i))
    queue.append(samples)
    queue.append([make_sample("m3", i) for i in range(5)] + [make_sample("m1", 20)])

    batches = queue.next_batches(max_readings=7, max_messages=4)
    assert [(b.meter_id, [r.seq for r in b.readings]) for b in batches] == [
        ("m1", list(range(0, 7))),
        ("m2", list(range(0, 7))),
        ("m1", list(range(7, 14))),
        ("m2", list(range(7, 14))),
    ]
    assert [b.first_row_id for b in batches] == sorted(b.first_row_id for b in batches)

    # Rows handed out are not handed out again; the rest continues in order.
    rest = queue.next_batches(max_readings=7, max_messages=100)
    assert [(b.meter_id, [r.seq for r in b.readings]) for b in rest] == [
        ("m1", list(range(14, 21))),
        ("m2", list(range(14, 20))),
        ("m3", list(range(0, 5))),
    ]
    assert queue.next_batches(max_readings=7, max_messages=100) == []

    # After a lost connection everything unacked is handed out again, oldest first.
    queue.ack(batches[0].row_ids)
    queue.rewind()
    again = queue.next_batches(max_readings=100, max_messages=100)
    assert [(b.meter_id, b.readings[0].seq, len(b.readings)) for b in again] == [
        ("m2", 0, 20),  # m1's first rows are gone: m2's first row is now the oldest
        ("m1", 7, 14),
        ("m3", 0, 5),
    ]
    queue.close()


def test_next_batches_respects_a_byte_budget(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    queue.append([make_sample("m1", i) for i in range(50)])
    one_reading = len(expected_reading("m1", 0).model_dump_json(exclude_none=True))
    batches = queue.next_batches(max_readings=50, max_messages=100, max_bytes=one_reading * 10)
    assert all(len(b.readings) <= 10 for b in batches)
    assert [r.seq for b in batches for r in b.readings] == list(range(50))
    queue.close()


def test_drop_oldest_row_cap_counts_and_logs_once_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = open_queue(tmp_path, max_rows=1000, when_full="drop_oldest")
    caplog.set_level(logging.WARNING, logger="edge.queue")
    queue.append([make_sample("m1", i) for i in range(1000)])
    assert queue.stats.dropped_oldest == 0

    for start in (1000, 1100, 1200):
        assert queue.append([make_sample("m1", i) for i in range(start, start + 100)]) == 100
    assert queue.depth() == 1000
    assert queue.stats.dropped_oldest == 300
    assert queue.stats.drop_episodes == 1
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1 and "drop_oldest" in full[0].getMessage()

    seqs = drain_all(queue)["m1"]
    assert seqs == list(range(300, 1300))  # the newest 1000 survive

    queue.append([make_sample("m1", 1300)])  # room again: the episode ends, once
    assert not queue.stats.dropping
    assert len([r for r in caplog.records if "accepts every reading again" in r.getMessage()]) == 1
    assert "300 readings were dropped" in caplog.records[-1].getMessage()
    queue.close()


def test_drop_newest_refuses_new_readings_and_leaves_a_seq_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = open_queue(tmp_path, max_rows=1000, when_full="drop_newest")
    caplog.set_level(logging.WARNING, logger="edge.queue")
    assert queue.append([make_sample("m1", i) for i in range(990)]) == 990
    assert queue.append([make_sample("m1", i) for i in range(990, 1020)]) == 10
    assert queue.append([make_sample("m1", i) for i in range(1020, 1030)]) == 0
    assert queue.depth() == 1000
    assert queue.stats.dropped_newest == 30
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1

    assert drain_all(queue)["m1"] == list(range(1000))  # the oldest are kept
    # Refused readings used their seq numbers: the backend sees 1000..1029 missing.
    queue.append([make_sample("m1", 1030)])
    assert drain_all(queue)["m1"] == [1030]
    queue.close()


def test_age_cap_uses_enqueue_wall_time(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "queue.sqlite"
    queue = ReadingQueue(
        path, settings(path, max_age_s=3600, when_full="drop_oldest"), clock=lambda: now[0]
    )
    # Reading timestamps are far in the past (an accelerated simulator clock, say):
    # the age cap must not care, only when the row was queued.
    queue.append([make_sample("m1", i) for i in range(5)])
    now[0] += 1800
    queue.append([make_sample("m1", i) for i in range(5, 8)])
    assert queue.stats.dropped_oldest == 0
    now[0] += 1801  # the first five are now older than an hour
    queue.append([make_sample("m1", 8)])
    assert queue.stats.dropped_oldest == 5
    assert queue.depth() == 4
    assert drain_all(queue)["m1"] == [5, 6, 7, 8]
    queue.close()


def test_age_cap_with_drop_newest_keeps_the_old_rows(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "queue.sqlite"
    queue = ReadingQueue(
        path, settings(path, max_age_s=60, when_full="drop_newest"), clock=lambda: now[0]
    )
    queue.append([make_sample("m1", i) for i in range(3)])
    now[0] += 61
    assert queue.append([make_sample("m1", 3), make_sample("m2", 0)]) == 0
    assert queue.stats.dropped_newest == 2
    assert drain_all(queue) == {"m1": [0, 1, 2]}
    assert queue.append([make_sample("m1", 4)]) == 1  # empty again: accepted, after a gap
    assert drain_all(queue) == {"m1": [4]}
    queue.close()


def test_invalid_sample_is_counted_and_the_rest_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = open_queue(tmp_path)
    bad = MeterSample("m1", 1, {"import_kwh": -5.0})  # negative energy register
    assert queue.append([make_sample("m1", 0), bad, make_sample("m2", 0)]) == 2
    assert queue.stats.rejected_invalid == 1
    assert any("do not make valid readings" in r.getMessage() for r in caplog.records)
    queue.append([make_sample("m1", 2)])
    assert drain_all(queue) == {"m1": [0, 2], "m2": [0]}
    queue.close()


def test_one_process_per_queue_file(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    with pytest.raises(QueueError, match="in use by another process"):
        open_queue(tmp_path)
    queue.close()
    open_queue(tmp_path).close()  # released on close


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(QueueError, match=r"cannot open queue .*queue\.sqlite"):
        ReadingQueue(path, settings(path))


def test_large_backlog_drains_completely_in_order(tmp_path: Path) -> None:
    queue = open_queue(tmp_path)
    meters = [f"m{i:02d}" for i in range(25)]
    for round_ in range(40):  # 25 meters x 10 reads per commit, 40 commits
        queue.append([make_sample(m, round_ * 10 + k) for m in meters for k in range(10)])
    assert queue.depth() == 10_000
    seqs = drain_all(queue, max_readings=60)
    assert seqs == {m: list(range(400)) for m in meters}
    assert queue.depth() == 0 and queue.oldest_ts_ms() is None
    queue.close()
