"""Every Flux query the project emits passes libflux's semantic check.

libflux is the Flux parser and type checker InfluxDB runs before executing a query
(@influxdata/flux-lsp-browser: libflux compiled to WebAssembly, run by
tools/flux-check/flux-check.mjs). It checks syntax, identifiers, imports, function
signatures and types; it does not execute anything (no InfluxDB 2 server runs here).
Dashboard queries are checked as Grafana sends them: variables and macros bound.
"""

from __future__ import annotations

import pytest
from grafana_support import all_dashboard_queries
from production_support import FluxVerdict, flux_check

from electrocloud import flux

# Negative controls: each breaks a real project query the way a typo would.
_readings = flux.readings_query("electrocloud", "-1h", "1d", ["meter-1"])
_meter_ids = flux.meter_ids_query("electrocloud")
BROKEN = {
    "misspelled function": (_readings.replace("|> range(", "|> rang(", 1), "rang"),
    "missing import": (
        _meter_ids.replace('import "influxdata/influxdb/schema"\n', ""),
        "undefined identifier schema",
    ),
    "wrong parameter name": (
        _readings.replace("range(start:", "range(begin:", 1),
        "unexpected argument begin",
    ),
    "wrong type": (
        flux.latest_query("electrocloud").replace("limit(n: 1)", 'limit(n: "1")'),
        "expected int but found string",
    ),
    "macro left unbound": (
        'from(bucket: "b") |> range(start: v.timeRangeStart, stop: v.timeRangeStop)',
        "undefined identifier v",
    ),
}


def project_queries() -> dict[str, str]:
    queries = {f"electrocloud.flux: {n}": q for n, q in flux.all_queries_with_examples().items()}
    queries.update(all_dashboard_queries(bound=True))
    return queries


@pytest.fixture(scope="module")
def verdicts() -> dict[str, FluxVerdict]:
    queries = project_queries()
    queries.update({f"broken: {name}": source for name, (source, _) in BROKEN.items()})
    version, results = flux_check(queries)
    assert version == "0.8.40", "tools/flux-check pins @influxdata/flux-lsp-browser 0.8.40"
    assert set(results) == set(queries)
    return results


def test_there_are_queries_to_check() -> None:
    queries = project_queries()
    assert sum(name.startswith("electrocloud.flux: ") for name in queries) >= 8
    assert sum(name.endswith(".json: variable meter_id") for name in queries) == 1
    assert sum(" panel " in name for name in queries) >= 20
    for name, query in queries.items():
        assert "${" not in query and "v.time" not in query, f"{name}: unbound: {query}"


def test_every_project_query_compiles(verdicts: dict[str, FluxVerdict]) -> None:
    queries = project_queries()
    failed = {
        name: (verdicts[name].diagnostics, queries[name])
        for name in queries
        if not verdicts[name].valid
    }
    assert not failed, "\n\n".join(
        f"{name}:\n  {diagnostics}\n{query}" for name, (diagnostics, query) in failed.items()
    )
    # A valid query has no diagnostics either (the language server agrees).
    assert all(not verdicts[name].diagnostics for name in queries)


@pytest.mark.parametrize("control", sorted(BROKEN))
def test_the_checker_rejects_broken_queries(verdicts: dict[str, FluxVerdict], control: str) -> None:
    verdict = verdicts[f"broken: {control}"]
    assert not verdict.valid, f"{control} passed the check"
    expected = BROKEN[control][1]
    assert any(expected in message for message in verdict.diagnostics), verdict.diagnostics
