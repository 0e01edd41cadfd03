"""Determinants: the stores' boundary reads, register exactness, SQL vs the reference.

Real SQLite files through SqliteStore; the InfluxDB adapter parses a recorded
Flux answer served by a real HTTP server (no InfluxDB 2 here, see
tests/fixtures/billing/README.md).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from billing_support import DAY_MS, QUARTER_MS, reading, write_intervals
from services import free_port

from billing.determinants import (
    Determinants,
    DeterminantsError,
    compute_determinants,
    compute_determinants_batch,
    reference_determinants,
)
from electrocloud import flux
from electrocloud.storage import BoundaryReads, StoredReading
from electrocloud.stores.influx import InfluxStore
from electrocloud.stores.sqlite import SqliteStore

T0 = 1_709_251_200_000  # 2024-03-01T00:00:00Z
MINUTE = 60_000
FIXTURE = Path(__file__).parent / "fixtures" / "billing" / "boundary_reads.csv"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "readings.db")
    yield s
    s.close()


def as_lists(reads: list[BoundaryReads]) -> dict[str, dict[str, list[tuple[int, int]]]]:
    return {
        r.meter_id: {
            "import": list(
                zip(r.import_register.ts_ms.tolist(), r.import_register.ukwh.tolist(), strict=False)
            ),
            "export": list(
                zip(r.export_register.ts_ms.tolist(), r.export_register.ukwh.tolist(), strict=False)
            ),
        }
        for r in reads
    }


FIXTURE_READINGS = [
    reading("m-1", T0 - 20 * MINUTE, 99.5, 10.0),
    reading("m-1", T0 - 10 * MINUTE, 99.75, 10.0),
    reading("m-1", T0, 100.0, 10.0),
    reading("m-1", T0 + 5 * MINUTE, 100.1, 10.0),
    reading("m-1", T0 + 14 * MINUTE, 100.25, None),
    reading("m-1", T0 + 20 * MINUTE, 100.5, 10.5),
    reading("m-1", T0 + 60 * MINUTE, 101.0, 11.0),
    reading("m-1", T0 + 70 * MINUTE, 101.25, 11.0),
    reading("m-2", T0 + 30 * MINUTE, 5.5, None),
    reading("m-2", T0 + 40 * MINUTE, 5.75, None),
]
EXPECTED_FIXTURE_READS = {
    "m-1": {
        # first and last read of each window; 00:05 is neither for import
        "import": [(T0 - 20 * MINUTE, 99_500_000), (T0 - 10 * MINUTE, 99_750_000),
                   (T0, 100_000_000), (T0 + 14 * MINUTE, 100_250_000),
                   (T0 + 20 * MINUTE, 100_500_000), (T0 + 60 * MINUTE, 101_000_000),
                   (T0 + 70 * MINUTE, 101_250_000)],
        # export is null at 00:14, so 00:05 is that register's last read of window 0
        "export": [(T0 - 20 * MINUTE, 10_000_000), (T0 - 10 * MINUTE, 10_000_000),
                   (T0, 10_000_000), (T0 + 5 * MINUTE, 10_000_000),
                   (T0 + 20 * MINUTE, 10_500_000), (T0 + 60 * MINUTE, 11_000_000),
                   (T0 + 70 * MINUTE, 11_000_000)],
    },
    "m-2": {"import": [(T0 + 30 * MINUTE, 5_500_000), (T0 + 40 * MINUTE, 5_750_000)],
            "export": []},
}  # fmt: skip


def test_sqlite_boundary_reads_keep_window_edges_and_context(store: SqliteStore) -> None:
    store.write_batch(FIXTURE_READINGS)
    # Older and later reads beyond the two context reads on each side are not needed.
    store.write_batch([reading("m-1", T0 - 60 * MINUTE, 99.0), reading("m-1", T0 + DAY_MS, 200.0)])
    got = store.boundary_reads(None, T0, T0 + 60 * MINUTE, QUARTER_MS)
    assert as_lists(got) == EXPECTED_FIXTURE_READS
    assert as_lists(store.boundary_reads(["m-2", "m-9"], T0, T0 + 60 * MINUTE)) == {
        "m-2": EXPECTED_FIXTURE_READS["m-2"]
    }
    with pytest.raises(ValueError, match="must be after"):
        store.boundary_reads(None, T0, T0)


class RecordedFlux:
    """A real HTTP server answering /api/v2/query with the fixture; it keeps the queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.queries.append(json.loads(body)["query"])
                data = FIXTURE.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordedFlux:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_influx_boundary_reads_match_sqlite_for_the_same_readings(store: SqliteStore) -> None:
    store.write_batch(FIXTURE_READINGS)
    with RecordedFlux() as server:
        port = server.server.server_address[1]
        influx = InfluxStore(url=f"http://127.0.0.1:{port}", org="o", bucket="b", token="t")
        try:
            got = influx.boundary_reads(["m-1", "m-2"], T0, T0 + 60 * MINUTE, QUARTER_MS)
        finally:
            influx.close()
    assert as_lists(got) == as_lists(store.boundary_reads(None, T0, T0 + 60 * MINUTE))
    assert server.queries == [
        flux.boundary_reads_query("b", T0, T0 + 60 * MINUTE, 900_000, ["m-1", "m-2"])
    ]


def test_boundary_reads_flux_selects_window_edges_per_meter_and_field() -> None:
    query = flux.boundary_reads_query("b", T0, T0 + DAY_MS, 900_000, ["m-1"])
    assert "window(every: 15m, offset: 0s) |> first()" in query
    assert "window(every: 15m, offset: 0s) |> last()" in query
    assert "before = registers(start: 2023-01-26T00:00:00Z, stop: 2024-03-01T00:00:00Z)" in query
    assert "|> tail(n: 2)" in query and "|> limit(n: 2)" in query
    assert "union(tables: [before, firsts, lasts, after])" in query
    assert 'unique(column: "_time")' in query
    # Never ungrouped (meters would mix) and never spread() (it undercounts).
    assert "group()" not in query and "spread(" not in query
    assert re.findall(r"group\(columns: \[(.*?)\]\)", query) == ['"meter_id", "_field"'] * 2
    assert 'r.meter_id == "m-1"' in query
    assert "boundary_reads" in flux.all_queries_with_examples()
    with pytest.raises(ValueError, match="absolute start"):
        flux.boundary_reads_query("b", "-1d", T0)


def test_consecutive_periods_add_up_exactly_to_the_register_difference(
    store: SqliteStore,
) -> None:
    rng = np.random.default_rng(7)
    # Irregular reads every 40-170 s with float noise in the values.
    ts = T0 - 3600_000 + np.cumsum(rng.integers(40_000, 170_000, 3000))
    values = 5000 + np.cumsum(rng.uniform(0, 0.05, 3000))
    store.write_batch([reading("m-1", int(t), float(v)) for t, v in zip(ts, values, strict=True)])
    cuts = [T0, T0 + 7 * 3_600_000 + 123_456, T0 + 19 * 3_600_000, T0 + 2 * DAY_MS]
    parts = [compute_determinants(store, "m-1", a, b) for a, b in itertools.pairwise(cuts)]
    whole = compute_determinants(store, "m-1", cuts[0], cuts[-1])

    assert sum(p.import_register.total_ukwh for p in parts) == whole.import_register.total_ukwh
    for left, right in itertools.pairwise(parts):
        assert left.register_end == right.register_start  # one value per shared boundary
    assert whole.register_end.import_kwh - whole.register_start.import_kwh == (
        sum(p.register_end.import_kwh - p.register_start.import_kwh for p in parts)
    )
    assert whole.import_register.interval_ukwh.sum() == whole.import_register.total_ukwh
    # interval k is the register difference between its boundaries, interpolated linearly
    b = int(whole.boundaries_ms[5])
    i = int(np.searchsorted(ts, b, side="right")) - 1
    t0, t1 = int(ts[i]), int(ts[i + 1])
    v0, v1 = round(values[i] * 1e6), round(values[i + 1] * 1e6)
    assert whole.import_register.boundary_ukwh[5] == v0 + round((v1 - v0) * (b - t0) / (t1 - t0))


def random_readings(seed: int) -> tuple[list[StoredReading], float | None, float | None]:
    """Random registers with gaps, resets, rollovers, spikes, nulls and dense stretches."""
    rng = np.random.default_rng(seed)
    rollover = 10_000.0 if seed % 2 else None
    max_power = float(rng.choice([20.0, 60.0])) if seed % 3 else None
    readings = []
    for meter in ("m-1", "m-2"):
        t = T0 - int(rng.integers(0, 3 * 3_600_000))
        imp = float(rng.uniform(0, 9_990)) if rollover else float(rng.uniform(0, 1e5))
        exp = float(rng.uniform(0, 100))
        for seq in range(int(rng.integers(50, 400))):
            t += int(rng.choice([5_000, 60_000, 900_000, 1_000_000, 3 * 3_600_000],
                                p=[0.3, 0.3, 0.25, 0.1, 0.05]))  # fmt: skip
            imp += float(rng.exponential(0.05 + 2 * rng.random()))
            exp += float(rng.exponential(0.02)) if rng.random() < 0.5 else 0.0
            if rollover and imp >= rollover:
                imp -= rollover
            value = imp
            event = rng.random()
            if event < 0.02:
                imp = float(rng.uniform(0, 3))  # reset
                value = imp
            elif event < 0.04:
                value = imp + float(rng.uniform(50, 5_000))  # upward spike, this read only
            elif event < 0.05:
                value = 0.0  # downward spike
            readings.append(
                StoredReading(
                    gateway_id="gw-1",
                    meter_id=meter,
                    ts_ms=t,
                    seq=seq,
                    import_kwh=None if rng.random() < 0.03 else value,
                    export_kwh=None if rng.random() < 0.1 else exp,
                )
            )
    return readings, rollover, max_power


def assert_same(got: Determinants, want: Determinants) -> None:
    for name in ("import_register", "export_register"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.reads.ts_ms.tolist() == b.reads.ts_ms.tolist(), name
        assert a.reads.ukwh.tolist() == b.reads.ukwh.tolist(), name
        assert a.boundary_ukwh.tolist() == b.boundary_ukwh.tolist(), name
        assert a.boundary_meter_ukwh.tolist() == b.boundary_meter_ukwh.tolist(), name
        assert a.boundary_estimated.tolist() == b.boundary_estimated.tolist(), name
        assert a.interval_ukwh.tolist() == b.interval_ukwh.tolist(), name
        assert a.interval_estimated_ukwh.tolist() == b.interval_estimated_ukwh.tolist(), name
    assert got.vee_events == want.vee_events
    assert got.register_start == want.register_start
    assert got.register_end == want.register_end


@pytest.mark.parametrize("seed", range(30))
def test_sql_and_reference_determinants_agree_on_random_data(tmp_path: Path, seed: int) -> None:
    readings, rollover, max_power = random_readings(seed)
    start = T0 + int(np.random.default_rng(seed).integers(-2, 3)) * QUARTER_MS
    end = start + DAY_MS // 2 + 7 * MINUTE  # the last interval is cut short
    store = SqliteStore(tmp_path / "r.db")
    try:
        store.write_batch(readings)
        batch = compute_determinants_batch(
            store, None, start, end, rollover_kwh=rollover, max_power_kw=max_power
        )
    finally:
        store.close()
    for meter_id in ("m-1", "m-2"):
        want = reference_determinants(
            readings, meter_id, start, end, rollover_kwh=rollover, max_power_kw=max_power
        )
        assert_same(batch[meter_id], want)
        # every interval adds up to the register difference over the period
        got = batch[meter_id].import_register
        assert int(got.interval_ukwh.sum()) == got.total_ukwh
        assert (got.interval_ukwh >= 0).all()


def test_random_data_exercises_every_vee_rule(tmp_path: Path) -> None:
    """The agreement above is only meaningful if the random data triggers the rules."""
    kinds: set[str] = set()
    for seed in range(30):
        readings, rollover, max_power = random_readings(seed)
        for meter_id in ("m-1", "m-2"):
            d = reference_determinants(
                readings, meter_id, T0, T0 + DAY_MS // 2, rollover_kwh=rollover,
                max_power_kw=max_power,
            )  # fmt: skip
            kinds |= {e.kind for e in d.vee_events}
    assert kinds == {"gap_estimated", "register_reset", "rollover", "spike_rejected"}


def test_a_meter_without_reads_is_an_error(store: SqliteStore) -> None:
    write_intervals(store, "m-1", T0, [0.25] * 4)
    with pytest.raises(DeterminantsError, match="meter m-7 has no import or export"):
        compute_determinants(store, "m-7", T0, T0 + 3_600_000)
    assert set(compute_determinants_batch(store, ["m-1", "m-7"], T0, T0 + 3_600_000)) == {"m-1"}
