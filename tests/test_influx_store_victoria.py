"""The InfluxStore write path against a real server speaking the InfluxDB 2 write API.

No InfluxDB 2 can be installed here; VictoriaMetrics accepts the same
``/api/v2/write`` line protocol and shows what it stored (see tests/victoria.py).
Query execution is not tested here (see docs/influxdb.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from victoria import VictoriaMetrics

from electrocloud.storage import VALUE_FIELDS, StoredReading, StoreUnavailable
from electrocloud.stores.influx import InfluxStore

T0_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
SITE_WITH_SPECIALS = "Block A, Nord=1"  # needs tag escaping: space, comma, equals


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "victoria") as server:
        yield server


def make_store(server: VictoriaMetrics, **kwargs: Any) -> InfluxStore:
    options: dict[str, Any] = {
        "url": server.url,
        "org": "electrocloud",
        "bucket": "readings",
        "token": "test-token",
        "site_by_meter": {"m-1": SITE_WITH_SPECIALS},
        **kwargs,
    }
    return InfluxStore(**options)


def reading(meter_id: str, seq: int, **values: Any) -> StoredReading:
    """A reading of ``meter_id`` every 10.25 s, with energy growing by seq."""
    defaults: dict[str, Any] = {
        "import_kwh": 1000.0 + seq * 0.125,
        "export_kwh": round(5.5 + seq * 0.001, 3),  # meter registers have 3 decimals
        "power_w": -1500.5 + seq,
        "voltage_l1_v": 230.1,
    }
    defaults.update(values)
    return StoredReading(
        gateway_id="gw-1",
        meter_id=meter_id,
        ts_ms=T0_MS + seq * 10_250 + 7,  # odd milliseconds: precision must survive
        seq=seq,
        **defaults,
    )


def series(exported: list[Any]) -> dict[tuple[str, str], dict[int, float]]:
    """``(metric name, meter_id) -> {ts_ms: value}``; fails on a duplicate series."""
    result: dict[tuple[str, str], dict[int, float]] = {}
    for line in exported:
        key = (line["metric"]["__name__"], line["metric"]["meter_id"])
        assert key not in result, f"two series for {key}: {line['metric']}"
        assert len(line["timestamps"]) == len(set(line["timestamps"])), f"duplicates in {key}"
        result[key] = dict(zip(line["timestamps"], line["values"], strict=True))
    return result


def expected_series(readings: Sequence[StoredReading]) -> dict[tuple[str, str], dict[int, float]]:
    expected: dict[tuple[str, str], dict[int, float]] = {}
    for r in readings:
        for name in (*VALUE_FIELDS, "seq"):
            value = getattr(r, name)
            if value is not None:
                expected.setdefault((f"meter_{name}", r.meter_id), {})[r.ts_ms] = value
        if r.flags:  # VictoriaMetrics stores a string field as 0
            expected.setdefault(("meter_flags", r.meter_id), {})[r.ts_ms] = 0
    return expected


def test_written_readings_are_stored_with_tags_values_and_ms_timestamps(
    victoria: VictoriaMetrics,
) -> None:
    batch = [
        reading("m-1", 0, current_l1_a=5.5, frequency_hz=49.98, power_factor=-0.97),
        reading("m-1", 1, export_kwh=None, flags=("value_dropped",)),
        reading("m-1", 2, import_kwh=0.00001, flags=("import_kwh_decreased", "value_dropped")),
        reading("m-2", 0),
        reading("m-2", 1, import_kwh=1e16),
    ]
    store = make_store(victoria)
    try:
        store.write_batch(batch)
    finally:
        store.close()

    exported = victoria.export()
    assert series(exported) == expected_series(batch)
    for line in exported:
        labels = line["metric"]
        # Only the ids and the site are tags: seq and flags are fields, and
        # org/bucket become no label.
        if labels["meter_id"] == "m-1":
            assert labels == {
                "__name__": labels["__name__"],
                "gateway_id": "gw-1",
                "meter_id": "m-1",
                "site": SITE_WITH_SPECIALS,
            }
        else:
            assert labels == {
                "__name__": labels["__name__"],
                "gateway_id": "gw-1",
                "meter_id": "m-2",
            }
    # flags is written only for readings that have flags.
    flagged = series(exported)[("meter_flags", "m-1")]
    assert sorted(flagged) == [batch[1].ts_ms, batch[2].ts_ms]
    assert ("meter_flags", "m-2") not in series(exported)


def test_writing_the_same_batch_twice_stores_one_point_per_meter_and_ts(
    victoria: VictoriaMetrics,
) -> None:
    batch = [reading(meter, seq) for meter in ("m-1", "m-2") for seq in range(20)]
    samples_per_write = len(batch) * 5  # import, export, power, voltage_l1, seq
    store = make_store(victoria)
    try:
        store.write_batch(batch)
        store.write_batch(batch)
    finally:
        store.close()

    assert victoria.influx_rows_inserted() == 2 * samples_per_write  # both writes arrived
    assert series(victoria.export()) == expected_series(batch)  # ... and collapsed to one


def test_restart_during_ingestion_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server = VictoriaMetrics(tmp_path / "victoria")
    server.start()
    batches = [
        [reading(meter, seq) for meter in ("m-1", "m-2") for seq in range(start, start + 5)]
        for start in range(0, 150, 5)
    ]
    halfway = threading.Event()
    server_stopped = threading.Event()
    outage_seen = threading.Event()
    failures: list[StoreUnavailable] = []
    errors: list[BaseException] = []
    # Short timeouts and backoff keep the outage brief; the policy is the real one.
    store = make_store(server, timeout_s=2, retries=2, backoff_s=0.02, max_backoff_s=0.1)

    def ingest() -> None:
        """The backend's loop: retry the same batch until the store takes it."""
        try:
            for number, batch in enumerate(batches):
                while True:
                    try:
                        store.write_batch(batch)
                        break
                    except StoreUnavailable as exc:
                        failures.append(exc)
                        outage_seen.set()
                        time.sleep(0.05)
                if number == len(batches) // 3:
                    halfway.set()
                    server_stopped.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)
            raise

    writer = threading.Thread(target=ingest, name="ingest")
    writer.start()
    try:
        assert halfway.wait(timeout=30)
        server.stop()
        server_stopped.set()
        assert outage_seen.wait(timeout=30), "no write failed while the server was down"
        server.start()  # same port, same data directory
        writer.join(timeout=60)
        assert not writer.is_alive()
        assert not errors
        assert failures, "the writer never saw the outage"
        assert all("failed 3 times" in str(failure) for failure in failures)

        everything = [r for batch in batches for r in batch]
        assert series(server.export()) == expected_series(everything)
    finally:
        server_stopped.set()
        store.close()
        server.stop()
