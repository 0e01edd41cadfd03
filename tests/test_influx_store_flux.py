"""The Flux text of every query: parameters rendered safely, key pieces present.

This checks the text only. Executing the queries needs InfluxDB 2, which is not
available here; a later issue compiles every query of
``flux.all_queries_with_examples()`` with the official Flux compiler.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from electrocloud import flux

START_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
DAY_MS = 86_400_000


def pipeline(query: str) -> list[str]:
    """The function names of a ``|>`` pipeline, in order."""
    return re.findall(r"\|> (\w+)\(", query)


def test_examples_cover_every_query_function() -> None:
    examples = flux.all_queries_with_examples()
    renderers = {name for name in dir(flux) if name.endswith("_query")}
    assert renderers == {
        "readings_query",
        "latest_query",
        "interval_energy_query",
        "meter_ids_query",
        "boundary_reads_query",
    }
    for renderer in renderers:
        base = renderer.removesuffix("_query")
        assert any(name.startswith(base) for name in examples), f"no example of {renderer}"
    for name, query in examples.items():
        assert 'r._measurement == "meter"' in query, name
        assert "spread(" not in query, name


def test_interval_energy_query_takes_last_per_window_and_differences_per_meter() -> None:
    query = flux.interval_energy_query("electrocloud", START_MS, START_MS + DAY_MS, 900_000)

    # One window early, so the first interval has a predecessor.
    assert "range(start: 2024-02-29T23:45:00Z, stop: 2024-03-02T00:00:00Z)" in query
    assert (
        'aggregateWindow(every: 15m, offset: 0s, fn: last, timeSrc: "_start", createEmpty: false)'
        in query
    )
    assert "difference(nonNegative: true)" in query
    assert 'r._field == "import_kwh" or r._field == "export_kwh"' in query
    steps = pipeline(query)
    assert steps == [
        "range", "filter", "filter", "group", "sort", "aggregateWindow", "difference", "pivot"
    ]  # fmt: skip
    # Regrouped per meter and field, never ungrouped: no meter differenced against another.
    assert "group()" not in query
    assert 'group(columns: ["meter_id", "_field"])' in query
    assert 'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")' in query


def test_interval_energy_windows_align_to_an_unaligned_start() -> None:
    start = START_MS + 5 * 60_000  # 00:05
    query = flux.interval_energy_query("b", start, start + 4 * 3_600_000, 3_600_000, ["m-1"])
    assert "range(start: 2024-02-29T23:05:00Z, stop: 2024-03-01T04:05:00Z)" in query
    assert "aggregateWindow(every: 1h, offset: 5m," in query
    assert 'filter(fn: (r) => r.meter_id == "m-1")' in query


@pytest.mark.parametrize(
    ("start", "stop", "message"),
    [
        ("-1d", START_MS, "absolute start"),
        (START_MS, "now", "neither an RFC3339 time nor a Flux duration"),
        (START_MS, START_MS, "must be after start"),
        (datetime(2024, 3, 1), START_MS + DAY_MS, "no time zone"),
    ],
)
def test_interval_energy_rejects_bad_times(start: object, stop: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flux.interval_energy_query("b", start, stop)  # type: ignore[arg-type]


def test_readings_query_renders_ms_times_and_pivots_one_row_per_reading() -> None:
    query = flux.readings_query("electrocloud", START_MS + 123, START_MS + DAY_MS, ["m-2", "m-1"])
    assert query.startswith('from(bucket: "electrocloud")')
    assert "range(start: 2024-03-01T00:00:00.123Z, stop: 2024-03-02T00:00:00Z)" in query
    assert "filter(fn: (r) => r.meter_id =~ /^(m-1|m-2)$/)" in query
    assert pipeline(query) == ["range", "filter", "filter", "pivot"]


def test_latest_query_takes_the_newest_pivoted_row_per_meter() -> None:
    query = flux.latest_query("electrocloud")
    assert "range(start: 1970-01-01T00:00:00Z, stop: 1d)" in query  # meter clocks may lead
    assert pipeline(query) == ["range", "filter", "last", "pivot", "group", "sort", "limit"]
    assert 'group(columns: ["meter_id"])' in query
    assert 'sort(columns: ["_time"], desc: true)' in query
    assert "limit(n: 1)" in query


def test_meter_ids_query_lists_the_tag_over_all_history() -> None:
    query = flux.meter_ids_query("electrocloud")
    assert query.startswith('import "influxdata/influxdb/schema"')
    assert "schema.tagValues(" in query
    assert 'tag: "meter_id"' in query
    assert "start: 1970-01-01T00:00:00Z" in query


@pytest.mark.parametrize(
    ("meter_ids", "message"),
    [
        (["m-1", "m-2|.*"], "must match"),
        (['m"1'], "must match"),
        (["m/1"], "must match"),
        ([], "empty"),
        ("m-1", "not one string"),
    ],
)
def test_meter_ids_are_validated_before_they_reach_flux(meter_ids: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flux.readings_query("b", START_MS, START_MS + DAY_MS, meter_ids)


def test_bucket_is_escaped_as_a_string_literal() -> None:
    query = flux.meter_ids_query('we"ird\\bucket${x}')
    assert r'bucket: "we\"ird\\bucket\${x}",' in query
    with pytest.raises(ValueError, match="bucket name"):
        flux.readings_query("", "-1h", "0s")


def test_time_literals() -> None:
    assert flux.time_literal("-30d") == "-30d"
    assert flux.time_literal("1h30m") == "1h30m"
    assert flux.time_literal(0) == "1970-01-01T00:00:00Z"
    assert flux.time_literal("2024-03-01T01:00:00+01:00") == "2024-03-01T00:00:00Z"
    berlin = timezone(timedelta(hours=1))
    assert flux.time_literal(datetime(2024, 3, 1, 1, 0, 0, 5000, berlin)) == (
        "2024-03-01T00:00:00.005Z"
    )
    assert flux.time_literal(datetime(2024, 3, 1, tzinfo=UTC)) == "2024-03-01T00:00:00Z"
    with pytest.raises(ValueError, match="negative"):
        flux.time_literal(-1)


def test_duration_literals() -> None:
    assert flux.duration_literal(900_000) == "15m"
    assert flux.duration_literal(3_600_000) == "1h"
    assert flux.duration_literal(86_400_000) == "24h"
    assert flux.duration_literal(1500) == "1500ms"
    assert flux.duration_literal(0) == "0s"
