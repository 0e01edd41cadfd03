"""SqliteStore against real SQLite files, with readers and lock holders in other processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlite_lock_holder import LockHolder

from electrocloud.storage import (
    IntervalEnergy,
    StoredReading,
    StoreRejected,
    StoreUnavailable,
)
from electrocloud.stores.sqlite import SqliteStore

S = 1_700_000_000_000  # range start used by the energy tests, UTC ms
Q = 900_000  # one quarter hour, ms


def reading(meter_id: str, ts_ms: int, seq: int = 0, **values: object) -> StoredReading:
    return StoredReading(gateway_id="gw-1", meter_id=meter_id, ts_ms=ts_ms, seq=seq, **values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "store.sqlite", busy_timeout_ms=200)
    yield s
    s.close()


def test_round_trip_keeps_every_field(store: SqliteStore) -> None:
    full = StoredReading(
        gateway_id="gw-1",
        meter_id="m-1",
        ts_ms=S,
        seq=7,
        import_kwh=12.5,
        export_kwh=0.25,
        power_w=-350.0,
        voltage_l1_v=230.1,
        voltage_l2_v=231.2,
        voltage_l3_v=229.9,
        current_l1_a=1.5,
        current_l2_a=1.6,
        current_l3_a=1.7,
        frequency_hz=50.01,
        power_factor=-0.95,
        flags=("import_kwh_decreased", "value_dropped"),
    )
    sparse = reading("m-2", S + 1000, seq=1, import_kwh=3.0)
    store.write_batch([full, sparse])

    assert store.readings(None, S, S + 2000) == [full, sparse]
    assert store.latest() == {"m-1": full, "m-2": sparse}
    assert store.meter_ids() == ["m-1", "m-2"]


def test_redelivered_reading_overwrites_instead_of_duplicating(store: SqliteStore) -> None:
    store.write_batch([reading("m-1", S, seq=1, import_kwh=1.0)])
    corrected = reading("m-1", S, seq=1, import_kwh=1.5, power_w=10.0)
    store.write_batch([corrected])
    store.write_batch([corrected])  # the same again, as after a redelivery

    assert store.count() == 1
    assert store.readings(["m-1"], S, S + 1) == [corrected]


def test_range_is_half_open_and_filters_meters(store: SqliteStore) -> None:
    store.write_batch(
        [reading(m, S + k * 1000, seq=k, import_kwh=float(k)) for m in ("a", "b") for k in range(5)]
    )
    got = store.readings(["b"], S + 1000, S + 4000)
    assert [(r.meter_id, r.ts_ms) for r in got] == [
        ("b", S + 1000),
        ("b", S + 2000),
        ("b", S + 3000),
    ]
    assert store.count(["a"]) == 5
    assert store.count() == 10
    assert store.latest(["a"])["a"].ts_ms == S + 4000
    assert list(store.latest(["a"])) == ["a"]


def test_file_uses_wal_and_a_without_rowid_primary_key(store: SqliteStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'readings'").fetchone()[0]
    assert "PRIMARY KEY (meter_id, ts_ms)" in sql and "WITHOUT ROWID" in sql
    conn.close()


def test_value_sqlite_cannot_hold_is_rejected_and_the_batch_rolled_back(
    store: SqliteStore,
) -> None:
    good = reading("m-1", S, seq=1, import_kwh=1.0)
    too_big = reading("m-1", S + 1000, seq=2**63, import_kwh=1.0)  # beyond SQLite's INTEGER
    with pytest.raises(StoreRejected, match="too large"):
        store.write_batch([good, too_big])
    assert store.count() == 0
    store.write_batch([good])  # the store still works
    assert store.count() == 1


def test_writer_lock_held_by_another_process_makes_the_store_unavailable(
    store: SqliteStore, tmp_path: Path
) -> None:
    batch = [reading("m-1", S, seq=1, import_kwh=1.0)]
    with LockHolder(tmp_path / "store.sqlite") as holder:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.write_batch(batch)
        # Reads are not blocked by the other process's write transaction (WAL), and
        # neither is opening the existing file (a reader starting, a backend restarting).
        assert store.count() == 0
        second = SqliteStore(tmp_path / "store.sqlite", busy_timeout_ms=200)
        assert second.meter_ids() == []
        second.close()
        holder.release()
    store.write_batch(batch)
    assert store.count() == 1


def test_reader_in_another_connection_sees_old_state_during_a_write(
    store: SqliteStore, tmp_path: Path
) -> None:
    store.write_batch([reading("m-1", S, import_kwh=1.0)])
    writer = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE readings SET import_kwh = 99.0")
    assert store.readings(None, S, S + 1)[0].import_kwh == 1.0  # not blocked, not dirty
    writer.execute("COMMIT")
    assert store.readings(None, S, S + 1)[0].import_kwh == 99.0
    writer.close()


_READER = """
import sys
from pathlib import Path
from electrocloud.stores.sqlite import SqliteStore
store = SqliteStore(sys.argv[1], busy_timeout_ms=200)
stop = Path(sys.argv[2])
print("started", flush=True)
counts = []
while not stop.exists():
    counts.append(store.count())
counts.append(store.count())
print(" ".join(map(str, counts)), flush=True)
"""


def test_another_process_reads_consistently_while_batches_are_written(
    store: SqliteStore, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(tmp_path / "store.sqlite"), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "started"
    batches, size = 60, 50
    for b in range(batches):
        store.write_batch(
            [reading(f"m-{k % 5}", S + (b * size + k) * 1000, import_kwh=1.0) for k in range(size)]
        )
    stop.touch()
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    counts = [int(c) for c in out.split()]
    # Every read saw whole batches only (one transaction each), never going backwards.
    assert all(c % size == 0 for c in counts)
    assert counts == sorted(counts)
    assert counts[-1] == batches * size


def test_one_instance_is_safe_to_share_between_threads(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def write(t: int) -> None:
        try:
            for b in range(25):
                store.write_batch(
                    [reading(f"t{t}", S + (b * 10 + k) * 1000, import_kwh=1.0) for k in range(10)]
                )
                store.latest()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 4 * 25 * 10


def _energy_fixture(store: SqliteStore) -> None:
    store.write_batch(
        [
            # Meter a: history before the range, a reading on a boundary, a gap, one after.
            reading("a", S - 10 * Q, seq=1, import_kwh=50.0, export_kwh=1.0),
            reading("a", S - 300_000, seq=2, import_kwh=100.0, export_kwh=5.0),
            reading("a", S + 300_000, seq=3, import_kwh=100.5),
            reading("a", S + Q, seq=4, import_kwh=101.0),
            reading("a", S + 1_200_000, seq=5, import_kwh=101.2, export_kwh=5.5),
            reading("a", S + 3_000_000, seq=6, import_kwh=102.0),
            reading("a", S + 3_700_000, seq=7, import_kwh=150.0),
            # Meter b: first reading inside the range, no export register.
            reading("b", S + 1_000_000, seq=1, import_kwh=10.0),
            reading("b", S + 1_500_000, seq=2, import_kwh=10.4),
            reading("b", S + 2_000_000, seq=3, import_kwh=11.0),
            # Meter c: only after the range.
            reading("c", S + 5 * Q, seq=1, import_kwh=1.0),
        ]
    )


def _as_tuples(energy: list[IntervalEnergy]) -> list[tuple[str, int, float, float]]:
    return [(e.meter_id, (e.start_ms - S) // Q, e.import_kwh, e.export_kwh) for e in energy]


def test_interval_energy_differences_register_values_at_boundaries(store: SqliteStore) -> None:
    _energy_fixture(store)
    got = _as_tuples(store.interval_energy(None, S, S + 4 * Q, Q))
    expected = [
        ("a", 0, 1.0, 0.0),  # 101.0 (on the boundary) - 100.0 (before the range)
        ("a", 1, 0.2, 0.5),
        ("a", 2, 0.0, 0.0),  # gap: no reading, nothing attributed yet
        ("a", 3, 0.8, 0.0),  # the gap's energy lands with the next reading
        ("b", 1, 0.4, 0.0),  # b counts from its first reading
        ("b", 2, 0.6, 0.0),
        ("b", 3, 0.0, 0.0),
    ]
    assert got == [pytest.approx(row) for row in expected]
    # The intervals add up to the register difference over the whole range.
    assert sum(e[2] for e in got if e[0] == "a") == pytest.approx(102.0 - 100.0)


def test_interval_energy_cuts_the_last_interval_at_the_end_and_filters_meters(
    store: SqliteStore,
) -> None:
    _energy_fixture(store)
    got = _as_tuples(store.interval_energy(["a"], S, S + 3 * Q + 400_000, Q))
    assert got == [
        pytest.approx(row)
        for row in [("a", 0, 1.0, 0.0), ("a", 1, 0.2, 0.5), ("a", 2, 0.0, 0.0), ("a", 3, 0.8, 0.0)]
    ]
    assert store.interval_energy(["c"], S, S + 4 * Q, Q) == []
    assert store.interval_energy(None, S, S, Q) == []
    with pytest.raises(ValueError, match="interval_ms"):
        store.interval_energy(None, S, S + Q, 0)
