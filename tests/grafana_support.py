"""The provisioned Grafana dashboards, and their Flux queries as Grafana would send them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from production_support import REPO

DASHBOARD_DIR = REPO / "grafana" / "dashboards"
DATASOURCE_UID = "electrocloud-influxdb"

# What Grafana binds when it runs a query (pkg/tsdb/influxdb/flux/macros.go): the
# time range as RFC3339, the interval as a Go duration string, bucket and org quoted.
MACROS = {
    "timeRangeStart": "2024-03-01T00:00:00Z",
    "timeRangeStop": "2024-03-08T12:30:00Z",
    "windowPeriod": "1m0s",
    "defaultBucket": '"electrocloud"',
    "bucket": '"electrocloud"',
    "organization": '"electrocloud"',
}
_MACRO_RE = re.compile(r"([a-zA-Z]+)\.([a-zA-Z]+)")
#: Values for dashboard variables without a current value (query variables).
EXAMPLE_VARIABLES = {"meter_id": "meter-1"}


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard, for every provisioned dashboard."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    values = dict(EXAMPLE_VARIABLES)
    for variable in dashboard.get("templating", {}).get("list", []):
        current = variable.get("current") or {}
        if current.get("value"):
            values[variable["name"]] = str(current["value"])
    return values


def bind(query: str, variables: dict[str, str]) -> str:
    """``query`` as Grafana sends it: template variables, then Flux macros, replaced."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"dashboard variable ${name} has no value")
        return variables[name]

    query = re.sub(r"\$\{(\w+)\}|\$(\w+)", variable, query)
    for match in _MACRO_RE.findall(query):
        prefix, name = match
        if name in MACROS:
            query = query.replace(f"{prefix}.{name}", MACROS[name])
    return query.replace("$__interval", "1m")


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, raw query)`` for every panel target and query variable."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target['refId']}", target["query"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            yield f"variable {variable['name']}", variable["query"]


def all_dashboard_queries(bound: bool = True) -> dict[str, str]:
    """Every dashboard query by ``"<file>: <where>"``, bound (as sent) or raw."""
    queries = {}
    for name, dashboard in dashboards().items():
        values = variable_values(dashboard)
        for where, query in panel_queries(dashboard):
            queries[f"{name}: {where}"] = bind(query, values) if bound else query
    return queries


def load_build_script() -> Any:
    """grafana/build_dashboards.py as a module."""
    import importlib.util

    path = REPO / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


__all__ = [
    "DASHBOARD_DIR",
    "DATASOURCE_UID",
    "MACROS",
    "all_dashboard_queries",
    "bind",
    "dashboards",
    "load_build_script",
    "panel_queries",
    "variable_values",
]
