"""The provisioned Grafana datasource and dashboards, validated offline.

Dashboards are validated against JSON Schemas generated from Grafana's own
dashboard and panel types (@grafana/schema 12.2.1, the Grafana version the
compose file pins) by tools/flux-check/grafana-schema.mjs; their queries are
compiled in test_flux_compile.py.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
import yaml
from grafana_support import (
    DASHBOARD_DIR,
    DATASOURCE_UID,
    all_dashboard_queries,
    dashboards,
    load_build_script,
    panel_queries,
)
from production_support import REPO, grafana_schemas

PROVISIONING = REPO / "grafana" / "provisioning"
UNITS_REQUIRED = {"kwatth", "watt", "volt", "amp", "hertz"}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return grafana_schemas()


def validate(instance: Any, schema: dict[str, Any], what: str) -> None:
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{what}:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
    )


def test_committed_dashboards_are_the_build_scripts_output() -> None:
    rendered = load_build_script().render()
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARD_DIR.glob("*")}
    assert committed == rendered, "run: python grafana/build_dashboards.py"


def test_dashboards_validate_against_grafanas_schema(schemas: dict[str, Any]) -> None:
    assert schemas["grafana_schema"] == "12.2.1"
    for name, dashboard in dashboards().items():
        validate(dashboard, schemas["dashboard"], name)
        for panel in dashboard["panels"]:
            where = f"{name}: panel {panel['title']!r}"
            plugin = schemas["panels"].get(panel["type"])
            assert plugin is not None, f"{where}: no schema for panel type {panel['type']}"
            validate(panel["options"], plugin["options"], f"{where} options")
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
            if custom is not None:
                assert plugin["fieldConfig"] is not None, f"{where}: no custom options"
                validate(custom, plugin["fieldConfig"], f"{where} fieldConfig.defaults.custom")


def test_the_schema_catches_mistakes(schemas: dict[str, Any]) -> None:
    """Control: the generated schemas are strict enough to notice a broken dashboard."""
    dashboard = dashboards()["fleet-overview.json"]
    broken = {**dashboard, "panels": [{**dashboard["panels"][0], "gridPos": {"x": "left"}}]}
    with pytest.raises(AssertionError, match="gridPos"):
        validate(broken, schemas["dashboard"], "broken")
    with pytest.raises(AssertionError, match="schemaVersion"):
        validate(
            {k: v for k, v in dashboard.items() if k != "schemaVersion"}, schemas["dashboard"], "x"
        )
    options = {**dashboard["panels"][0]["options"], "colourMode": "value"}
    with pytest.raises(AssertionError, match="colourMode"):
        validate(options, schemas["panels"]["stat"]["options"], "stat options")


def datasource_refs(node: Any) -> list[Any]:
    """Every value of a ``datasource`` key anywhere in ``node``."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            found.extend(datasource_refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(datasource_refs(item))
    return found


def test_provisioned_datasource_is_the_only_one_used() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "electrocloud.yaml").read_text())
    (datasource,) = config["datasources"]
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["type"] == "influxdb"
    assert datasource["jsonData"]["version"] == "Flux"
    assert datasource["jsonData"]["organization"] == "${INFLUXDB_ORG}"
    assert datasource["jsonData"]["defaultBucket"] == "${INFLUXDB_BUCKET}"
    # The token is read from the file the token job writes, never written here.
    assert (
        datasource["secureJsonData"]["token"] == "$__file{/run/electrocloud/tokens/grafana.token}"
    )
    for name, dashboard in dashboards().items():
        refs = datasource_refs(dashboard)
        assert refs, f"{name} names no datasource"
        for ref in refs:
            assert ref == {"type": "influxdb", "uid": DATASOURCE_UID}, f"{name}: {ref}"
        for panel in dashboard["panels"]:
            if panel["type"] != "text":
                assert panel["targets"], f"{name}: {panel['title']} has no query"


def test_dashboard_provider_points_at_the_dashboards() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "electrocloud.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_uids_titles_and_ids_are_unique_and_stable() -> None:
    boards = dashboards()
    uids = [d["uid"] for d in boards.values()]
    assert sorted(uids) == [
        "electrocloud-energy-cost",
        "electrocloud-fleet",
        "electrocloud-ingestion",
        "electrocloud-meter",
    ]
    assert len({d["title"] for d in boards.values()}) == len(boards)
    for name, dashboard in boards.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        assert "id" not in dashboard or dashboard["id"] is None


def call_arguments(text: str, begin: int) -> dict[str, str]:
    """Named arguments of the call whose ``(`` ends just before ``begin``."""
    depth, current, parts = 0, "", []
    for char in text[begin:]:
        if char == ")" and depth == 0:
            break
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    parts.append(current)
    arguments = {}
    for part in parts:
        name, _, value = part.partition(":")
        if name.strip():
            arguments[name.strip()] = value.strip()
    return arguments


def test_queries_use_grafanas_macros_and_stay_bounded() -> None:
    """Every query reads the default bucket over a range tied to the dashboard's time
    range, and reduces the data (aggregateWindow, first/last) rather than returning raw
    points; only the meter variable looks back a fixed 90 days in the tag index."""
    for where, query in all_dashboard_queries(bound=False).items():
        if where.endswith("variable meter_id"):
            assert "schema.tagValues(" in query and "start: -90d" in query
            continue
        assert "from(bucket: v.defaultBucket)" in query, where
        assert 'bucket: "' not in query, f"{where}: hard-coded bucket"
        ranges = [call_arguments(query, match.end()) for match in re.finditer(r"range\(", query)]
        assert ranges, f"{where}: no range()"
        for arguments in ranges:
            start, stop = arguments["start"], arguments["stop"]
            assert re.search(r"v\.timeRange(Start|Stop)", start) or start == "start", where
            assert stop in ("v.timeRangeStop", "v.timeRangeStart", "stop"), where
        assert re.search(r"aggregateWindow\(|\|> last\(\)|\|> first\(\)", query), (
            f"{where}: returns raw points"
        )
        if "every: v.windowPeriod" not in query:
            # Fixed windows are for energy (15m, 1d) or one-row-per-series results.
            assert re.search(r"every: (15m|1d)|\|> last\(\)", query), where


def test_dashboards_cover_the_required_views() -> None:
    boards = dashboards()
    units = set()
    for dashboard in boards.values():
        for panel in dashboard["panels"]:
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            units.add(defaults.get("unit"))
            for override in panel.get("fieldConfig", {}).get("overrides", []):
                units.update(p["value"] for p in override["properties"] if p["id"] == "unit")
    assert units >= UNITS_REQUIRED
    titles = {
        name: " | ".join(p["title"] for p in d["panels"]).lower() for name, d in boards.items()
    }
    assert all(
        w in titles["fleet-overview.json"] for w in ("import", "energy today", "top", "silent")
    )
    assert all(
        w in titles["meter-detail.json"]
        for w in ("power", "voltage", "current", "frequency", "power factor", "15 minutes", "day")
    )
    assert all(w in titles["energy-and-cost.json"] for w in ("time-of-use", "peak demand"))
    assert all(
        w in titles["ingestion-health.json"]
        for w in ("readings per second", "rejected", "backlog", "gateway")
    )
    meter = boards["meter-detail.json"]
    (variable,) = [v for v in meter["templating"]["list"] if v["name"] == "meter_id"]
    assert variable["type"] == "query" and "schema.tagValues(" in variable["query"]
    queries = [q for _, q in panel_queries(meter) if "schema.tagValues" not in q]
    assert all('r.meter_id == "${meter_id}"' in q for q in queries)


def test_stats_the_dashboards_read_are_written_by_the_backend() -> None:
    from backend.stats_writer import (
        COUNTER_FIELDS,
        GAUGE_FIELDS,
        REJECTIONS,
        STATS,
        STATUS,
        STATUS_FIELDS,
    )

    written = {
        STATS: set(COUNTER_FIELDS) | set(GAUGE_FIELDS),
        REJECTIONS: {"messages"},
        STATUS: set(STATUS_FIELDS),
    }
    read: dict[str, set[str]] = {}
    for query in all_dashboard_queries(bound=False).values():
        for measurement, field in re.findall(
            r'r\._measurement == "(\w+)" and r\._field == "(\w+)"', query
        ):
            read.setdefault(measurement, set()).add(field)
    for measurement, fields in read.items():
        if measurement != "meter":
            assert fields <= written[measurement], (measurement, fields - written[measurement])
