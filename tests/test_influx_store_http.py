"""InfluxStore's retry policy and result parsing against a real scripted HTTP server.

The server answers ``/api/v2/write`` with the statuses a test scripts and
``/api/v2/query`` with a recorded annotated-CSV response from
``tests/fixtures/flux`` (see the README there). It counts what it received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from services import free_port

from electrocloud import flux
from electrocloud.storage import (
    IntervalEnergy,
    StoredReading,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from electrocloud.stores.influx import InfluxStore

FIXTURES = Path(__file__).parent / "fixtures" / "flux"
T0_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
HOUR_MS = 3_600_000


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


def influx_error(status: int, code: str, message: str) -> Answer:
    """An error answer shaped like InfluxDB 2's JSON errors."""
    return Answer(status, json.dumps({"code": code, "message": message}).encode())


class ScriptedInflux:
    """A tiny real HTTP server: scripted answers per endpoint, last one repeats."""

    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, list[Answer]] = {"/api/v2/write": [Answer(204)]}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.received.append(
                        Received(url.path, parse_qs(url.query), dict(self.headers), body)
                    )
                    script = outer.answers.get(url.path, [Answer(404)])
                    answer = script.pop(0) if len(script) > 1 else script[0]
                time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def attempts(self, path: str) -> list[Received]:
        with self._lock:
            return [request for request in self.received if request.path == path]

    def __enter__(self) -> ScriptedInflux:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def influx() -> Iterator[ScriptedInflux]:
    with ScriptedInflux() as server:
        yield server


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def store(influx: ScriptedInflux, delays: list[float]) -> Iterator[InfluxStore]:
    """A store whose backoff sleeps are recorded and shortened (the HTTP is real)."""

    def short_sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(min(seconds, 0.01))

    store = InfluxStore(
        url=influx.url,
        org="electrocloud",
        bucket="readings",
        token="test-token",
        timeout_s=2,
        site_by_meter={"m-1": "Block A, Nord=1"},
        retries=2,
        backoff_s=0.1,
        max_backoff_s=30,
        sleep=short_sleep,
    )
    yield store
    store.close()


def reading(meter_id: str = "m-1", seq: int = 1, **values: Any) -> StoredReading:
    return StoredReading(
        gateway_id="gw-1",
        meter_id=meter_id,
        ts_ms=T0_MS + seq * 1000 + 5,
        seq=seq,
        import_kwh=values.pop("import_kwh", 1000.0 + seq),
        **values,
    )


BATCH = [reading(seq=1, flags=("value_dropped",)), reading("m-2", seq=2, power_w=-1.5)]


# --- the write request -------------------------------------------------------


def test_write_is_one_request_with_org_bucket_ms_precision_token_and_line_protocol(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    store.write_batch(BATCH)

    (request,) = influx.attempts("/api/v2/write")
    assert request.params == {"org": ["electrocloud"], "bucket": ["readings"], "precision": ["ms"]}
    assert request.headers["Authorization"] == "Token test-token"
    assert request.body.decode().split("\n") == [
        r"meter,gateway_id=gw-1,meter_id=m-1,site=Block\ A\,\ Nord\=1 "
        f'import_kwh=1001.0,seq=1i,flags="value_dropped" {T0_MS + 1005}',
        f"meter,gateway_id=gw-1,meter_id=m-2 import_kwh=1002.0,power_w=-1.5,seq=2i {T0_MS + 2005}",
    ]


def test_empty_batch_sends_nothing(influx: ScriptedInflux, store: InfluxStore) -> None:
    store.write_batch([])
    assert influx.attempts("/api/v2/write") == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_value_is_rejected_before_sending(
    influx: ScriptedInflux, store: InfluxStore, value: float
) -> None:
    with pytest.raises(StoreRejected, match=r"meter m-2 at ts_ms \d+: power_w is"):
        store.write_batch([reading(), reading("m-2", power_w=value)])
    assert influx.attempts("/api/v2/write") == []


def test_invalid_meter_id_is_rejected_before_sending(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    with pytest.raises(StoreRejected, match="meter_id 'm 1' must match"):
        store.write_batch([reading("m 1")])
    assert influx.attempts("/api/v2/write") == []


@pytest.mark.parametrize("site", ["", "Hall\\2", "Hall\n2"])
def test_unusable_site_is_a_construction_error(site: str) -> None:
    with pytest.raises(ValueError, match=r"site_by_meter\['m-1'\]"):
        InfluxStore(
            url="http://127.0.0.1:1", org="o", bucket="b", token="t", site_by_meter={"m-1": site}
        )


# --- the retry policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid"), (413, "request too large"), (422, "unprocessable entity")],
)  # fmt: skip
def test_4xx_is_rejected_at_once(
    influx: ScriptedInflux, store: InfluxStore, status: int, code: str
) -> None:
    influx.answers["/api/v2/write"] = [influx_error(status, code, f"server says {code}")]

    with pytest.raises(StoreRejected, match=f"HTTP {status} .*server says {code}"):
        store.write_batch(BATCH)
    assert len(influx.attempts("/api/v2/write")) == 1  # a rejection is never retried


@pytest.mark.parametrize(
    ("status", "code"), [(401, "unauthorized"), (403, "forbidden"), (404, "not found")]
)
def test_auth_and_missing_bucket_are_unavailable_not_rejected(
    influx: ScriptedInflux, store: InfluxStore, status: int, code: str
) -> None:
    # A wrong token must not dead-letter every batch: the backend keeps retrying.
    influx.answers["/api/v2/write"] = [influx_error(status, code, f"server says {code}")]

    with pytest.raises(StoreUnavailable, match=f"HTTP {status} .*check the token"):
        store.write_batch(BATCH)
    assert len(influx.attempts("/api/v2/write")) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_then_unavailable(
    influx: ScriptedInflux, store: InfluxStore, delays: list[float], status: int
) -> None:
    influx.answers["/api/v2/write"] = [influx_error(status, "internal error", "try later")]

    with pytest.raises(StoreUnavailable, match=f"failed 3 times; last: HTTP {status}"):
        store.write_batch(BATCH)
    attempts = influx.attempts("/api/v2/write")
    assert len(attempts) == 3  # retries=2
    assert len({attempt.body for attempt in attempts}) == 1  # the same batch every time
    # Exponential backoff with 50-100 % jitter: ~0.1 s, then ~0.2 s.
    assert len(delays) == 2
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2


def test_429_and_503_honour_retry_after_then_succeed(
    influx: ScriptedInflux, store: InfluxStore, delays: list[float]
) -> None:
    influx.answers["/api/v2/write"] = [
        Answer(429, b'{"code":"too many requests"}', headers={"Retry-After": "7"}),
        Answer(503, b'{"code":"unavailable"}', headers={"Retry-After": "45"}),
        Answer(204),
    ]

    store.write_batch(BATCH)  # no exception: the third attempt is stored
    assert len(influx.attempts("/api/v2/write")) == 3
    assert delays == [7.0, 30.0]  # Retry-After, capped at max_backoff_s


def test_transient_errors_then_success_stores_the_batch(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    influx.answers["/api/v2/write"] = [Answer(500), Answer(502), Answer(204)]
    store.write_batch(BATCH)
    assert len(influx.attempts("/api/v2/write")) == 3


def test_connection_refused_is_retried_then_unavailable(delays: list[float]) -> None:
    store = InfluxStore(
        url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        org="o",
        bucket="b",
        token="t",
        retries=3,
        backoff_s=0.001,
        sleep=delays.append,
    )
    try:
        with pytest.raises(StoreUnavailable, match="failed 4 times; last: NewConnectionError"):
            store.write_batch(BATCH)
    finally:
        store.close()
    assert len(delays) == 3


def test_timeout_is_retried_then_unavailable(influx: ScriptedInflux) -> None:
    influx.answers["/api/v2/write"] = [Answer(204, delay_s=1.0)]
    store = InfluxStore(
        url=influx.url, org="o", bucket="b", token="t", timeout_s=0.2, retries=1, backoff_s=0.01
    )
    try:
        with pytest.raises(StoreUnavailable, match="failed 2 times; last: ReadTimeoutError"):
            store.write_batch(BATCH)
    finally:
        store.close()
    assert len(influx.attempts("/api/v2/write")) == 2


# --- query results -------------------------------------------------------------


def serve_fixture(influx: ScriptedInflux, name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    influx.answers["/api/v2/query"] = [Answer(200, body, "text/csv; charset=utf-8")]


def posted_query(influx: ScriptedInflux) -> str:
    (request,) = influx.attempts("/api/v2/query")
    assert request.params == {"org": ["electrocloud"]}
    return str(json.loads(request.body)["query"])


def m1(seq: int, ts: str, gateway_id: str, **values: Any) -> StoredReading:
    ts_ms = T0_MS + int(float(ts) * 1000)
    return StoredReading(gateway_id=gateway_id, meter_id="m-1", ts_ms=ts_ms, seq=seq, **values)


M1_PHASES = {"voltage_l1_v": 230.1, "voltage_l2_v": 229.8, "voltage_l3_v": 231.0}
READINGS_FIXTURE = [
    m1(100, "0.007", "gw-2", current_l1_a=5.5, current_l2_a=6.2, current_l3_a=4.9, export_kwh=5.5,
       frequency_hz=49.99, import_kwh=1000.0, power_factor=0.97, power_w=-1501.5, **M1_PHASES),
    m1(101, "10.257", "gw-2", current_l1_a=5.5, current_l2_a=6.1, current_l3_a=4.9,
       export_kwh=5.501, frequency_hz=49.98, import_kwh=1000.125, power_factor=0.97,
       power_w=-1500.75, voltage_l1_v=230.2, voltage_l2_v=229.7, voltage_l3_v=231.1),
    m1(102, "20.507", "gw-1", current_l1_a=5.5, current_l2_a=6.1, current_l3_a=4.9,
       export_kwh=None, frequency_hz=49.98, import_kwh=1000.25, power_factor=0.97,
       power_w=-1500.5, flags=("value_dropped",), **M1_PHASES),
    m1(103, "30.757", "gw-1", current_l1_a=5.4, current_l2_a=6.0, current_l3_a=4.8,
       export_kwh=5.503, frequency_hz=50.01, import_kwh=0.5, power_factor=-0.99, power_w=-1499.5,
       flags=("import_kwh_decreased", "value_dropped"), voltage_l1_v=230.0, voltage_l2_v=229.9,
       voltage_l3_v=230.8),
    m1(104, "41.007", "gw-1", current_l1_a=5.3, current_l2_a=5.9, current_l3_a=4.7,
       export_kwh=5.504, frequency_hz=50.0, import_kwh=0.625, power_factor=0.98, power_w=1200.0,
       voltage_l1_v=229.7, voltage_l2_v=230.2, voltage_l3_v=230.5),
    StoredReading(gateway_id="gw-2", meter_id="m-2", ts_ms=T0_MS + 5000, seq=7, current_l1_a=0.0,
                  export_kwh=0.0, frequency_hz=50.0, import_kwh=0.00001, power_factor=1.0,
                  power_w=0.0, voltage_l1_v=231.4),
    StoredReading(gateway_id="gw-2", meter_id="m-2", ts_ms=T0_MS + 15000, seq=8,
                  current_l1_a=12.5, export_kwh=0.0, frequency_hz=50.02, import_kwh=12345678.9,
                  power_factor=-0.5, power_w=-2875.0, voltage_l1_v=229.99),
]  # fmt: skip


def test_readings_replay_parses_one_reading_per_row_ordered_by_meter_then_time(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    serve_fixture(influx, "readings.csv")

    readings = store.readings(["m-2", "m-1"], T0_MS, T0_MS + HOUR_MS)

    assert readings == READINGS_FIXTURE
    assert posted_query(influx) == flux.readings_query(
        "readings", T0_MS, T0_MS + HOUR_MS, ["m-1", "m-2"]
    )


def test_latest_replay_keeps_a_missing_field_of_the_newest_reading_null(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    serve_fixture(influx, "latest.csv")

    latest = store.latest(["m-1", "m-2"])

    newest_m1 = replace(
        READINGS_FIXTURE[4],
        seq=105,
        ts_ms=T0_MS + 51_257,
        export_kwh=None,  # dropped in the newest reading: not the older 5.504
        flags=("value_dropped",),
    )
    assert latest == {"m-1": newest_m1, "m-2": READINGS_FIXTURE[6]}
    assert posted_query(influx) == flux.latest_query("readings", ["m-1", "m-2"])


def test_interval_energy_replay_labels_by_start_counts_null_as_zero_and_fills_gaps(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    serve_fixture(influx, "interval_energy.csv")

    energy = store.interval_energy(None, T0_MS, T0_MS + HOUR_MS, 900_000)

    quarter = 900_000
    assert energy == [
        IntervalEnergy("m-1", T0_MS, import_kwh=0.5, export_kwh=0.0),
        IntervalEnergy("m-1", T0_MS + quarter, import_kwh=0.625, export_kwh=0.001),
        IntervalEnergy("m-1", T0_MS + 2 * quarter, import_kwh=0.0, export_kwh=0.0),  # reset
        IntervalEnergy("m-1", T0_MS + 3 * quarter, import_kwh=1.25, export_kwh=0.0),
        IntervalEnergy("m-2", T0_MS, import_kwh=2.75, export_kwh=0.0),  # no export register
        IntervalEnergy("m-2", T0_MS + quarter, import_kwh=0.0, export_kwh=0.0),  # no readings
        IntervalEnergy("m-2", T0_MS + 2 * quarter, import_kwh=5.5, export_kwh=0.0),  # gap's energy
        IntervalEnergy("m-2", T0_MS + 3 * quarter, import_kwh=0.0, export_kwh=0.0),
    ]
    assert posted_query(influx) == flux.interval_energy_query(
        "readings", T0_MS, T0_MS + HOUR_MS, 900_000
    )


def test_meter_ids_replay(influx: ScriptedInflux, store: InfluxStore) -> None:
    serve_fixture(influx, "meter_ids.csv")
    assert store.meter_ids() == ["m-1", "m-2", "m-7"]
    assert posted_query(influx) == flux.meter_ids_query("readings")


def test_error_inside_a_query_response_is_a_store_error(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    serve_fixture(influx, "runtime_error.csv")
    with pytest.raises(StoreError, match="schema collision"):
        store.readings(None, T0_MS, T0_MS + HOUR_MS)


def test_rejected_query_is_a_store_error_not_retried(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    influx.answers["/api/v2/query"] = [
        influx_error(400, "invalid", "compilation failed: error @1:1-1:5: undefined identifier")
    ]
    with pytest.raises(StoreError, match=r"HTTP 400 .*compilation failed") as caught:
        store.meter_ids()
    assert type(caught.value) is StoreError  # not StoreRejected: nothing to dead-letter
    assert len(influx.attempts("/api/v2/query")) == 1


def test_unavailable_query_is_retried_then_unavailable(
    influx: ScriptedInflux, store: InfluxStore
) -> None:
    influx.answers["/api/v2/query"] = [influx_error(503, "unavailable", "starting up")]
    with pytest.raises(StoreUnavailable, match="failed 3 times"):
        store.latest()
    assert len(influx.attempts("/api/v2/query")) == 3


def test_empty_meter_selection_sends_no_query(influx: ScriptedInflux, store: InfluxStore) -> None:
    assert store.latest([]) == {}
    assert store.readings([], T0_MS, T0_MS + HOUR_MS) == []
    assert store.interval_energy([], T0_MS, T0_MS + HOUR_MS) == []
    assert store.readings(None, T0_MS, T0_MS) == []
    assert influx.attempts("/api/v2/query") == []
