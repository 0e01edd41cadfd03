"""Writes ElectroCloud's provisioned Grafana dashboards (grafana/dashboards/*.json).

Run ``python grafana/build_dashboards.py`` after changing a panel; the test suite
checks that the committed JSON equals this script's output, that every Flux
query compiles (libflux, Grafana's macros bound) and that every dashboard
validates against Grafana's dashboard schema.

Data (docs/influxdb.md, docs/production.md): measurement ``meter`` (one point
per reading: tags gateway_id, meter_id, site; fields import_kwh, export_kwh,
power_w, voltage_l1_v.., current_l1_a.., frequency_hz, power_factor, seq),
``backend_stats`` and ``backend_rejections`` (counters each backend process
writes, backend/stats_writer.py) and ``gateway_status`` (the gateways' retained
status topic, as the backend sees it). Every query reads the datasource's
default bucket (``v.defaultBucket``), is bounded by the dashboard's time range
(``v.timeRangeStart``/``v.timeRangeStop``) or by a fixed look-back ending there,
and reduces data at storage (``aggregateWindow``, ``last``) before anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "influxdb", "uid": "electrocloud-influxdb"}
OUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41  # Grafana 12.2's dashboard schema version
TAGS = ["electrocloud"]

# --- Flux building blocks ------------------------------------------------------------

FROM = "from(bucket: v.defaultBucket)"
RANGE = "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)"
METER = '  |> filter(fn: (r) => r._measurement == "meter" and r.meter_id == "${meter_id}")'
REGISTERS = '  |> filter(fn: (r) => r._field == "import_kwh" or r._field == "export_kwh")'
# Merge the series of one field (a meter whose gateway or site tag changed has two).
BY_FIELD = ['  |> group(columns: ["_field"])', '  |> sort(columns: ["_time"])']
SUM_OVER_SERIES = [
    '  |> group(columns: ["_time"])',
    "  |> sum()",
    "  |> group()",
    '  |> sort(columns: ["_time"])',
]
# How long before the range a register value is looked for (energy of the first interval).
LOOKBACK = "1d"
# Meters/gateways silent for longer than this are not listed at all.
LAST_SEEN_LOOKBACK = "30d"
SILENT_AFTER = "15m"
TOU_FUNCTIONS = [
    'loc = timezone.location(name: "${tz}")',
    'peakStart = int(v: "${peak_start_hour}")',
    'peakEnd = int(v: "${peak_end_hour}")',
    'offpeakStart = int(v: "${offpeak_start_hour}")',
    'offpeakEnd = int(v: "${offpeak_end_hour}")',
    "period = (t) => {",
    "    hour = date.hour(t: t, location: loc)",
    "",
    '    return if hour >= peakStart and hour < peakEnd then "peak"',
    '        else if hour >= offpeakStart or hour < offpeakEnd then "off-peak"',
    '        else "shoulder"',
    "}",
]


def flux(*parts: str | list[str]) -> str:
    lines: list[str] = []
    for part in parts:
        lines.extend(part if isinstance(part, list) else [part])
    return "\n".join(lines)


def meter_fields(*fields: str, fn: str = "mean") -> str:
    """One meter's fields, aggregated per window of the panel's resolution."""
    condition = " or ".join(f'r._field == "{name}"' for name in fields)
    return flux(
        FROM,
        RANGE,
        METER,
        f"  |> filter(fn: (r) => {condition})",
        f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)",
        BY_FIELD,
    )


def interval_energy(
    every: str,
    *,
    location: str | None = None,
    meter: bool = True,
    fields: str = REGISTERS,
) -> list[str]:
    """Register at each window's end minus the one before: energy per window.

    The same method as electrocloud.flux.interval_energy_query: ``last`` per
    window labelled with the window start, then ``difference`` per series; the
    range starts one window early so the first window has a predecessor.
    ``meter``: the ``${meter_id}`` variable's meter (series merged per field),
    else every meter (one series per meter and field).
    """
    window_options = f", location: {location}" if location else ""
    return [
        FROM,
        f"  |> range(start: date.sub(d: {every}, from: v.timeRangeStart), stop: v.timeRangeStop)",
        METER if meter else '  |> filter(fn: (r) => r._measurement == "meter")',
        fields,
        f'  |> aggregateWindow(every: {every}, fn: last, timeSrc: "_start", '
        f"createEmpty: false{window_options})",
        BY_FIELD[0] if meter else '  |> group(columns: ["meter_id", "_field"])',
        '  |> sort(columns: ["_time"])',
        "  |> difference(nonNegative: true)",
    ]


def energy_in_range(field_filter: str) -> list[str]:
    """Energy per meter and register over the whole time range.

    Register at the last reading minus the last reading before the range (looked
    for up to LOOKBACK back; a meter without one counts from its first reading
    in the range). A register that went backwards contributes nothing.
    """
    return [
        "registers = (start, stop) =>",
        f"    {FROM}",
        "        |> range(start: start, stop: stop)",
        f'        |> filter(fn: (r) => r._measurement == "meter" and ({field_filter}))',
        "",
        "before =",
        f"    registers(start: date.sub(d: {LOOKBACK}, from: v.timeRangeStart), "
        "stop: v.timeRangeStart)",
        "        |> last()",
        "firstInRange = registers(start: v.timeRangeStart, stop: v.timeRangeStop) |> first()",
        "lastInRange = registers(start: v.timeRangeStart, stop: v.timeRangeStop) |> last()",
        "",
        "union(tables: [before, firstInRange, lastInRange])",
        '  |> group(columns: ["meter_id", "_field"])',
        '  |> sort(columns: ["_time"])',
        "  |> difference(nonNegative: true)",
        "  |> sum()",
    ]


def last_seen(by: str) -> list[str]:
    """Newest reading time per ``by`` tag, over LAST_SEEN_LOOKBACK before the range's end."""
    return [
        FROM,
        f"  |> range(start: date.sub(d: {LAST_SEEN_LOOKBACK}, from: v.timeRangeStop), "
        "stop: v.timeRangeStop)",
        '  |> filter(fn: (r) => r._measurement == "meter" and r._field == "seq")',
        "  |> last()",
        f'  |> group(columns: ["{by}"])',
        '  |> sort(columns: ["_time"], desc: true)',
        "  |> limit(n: 1)",
        "  |> group()",
    ]


# --- panels -------------------------------------------------------------------------


def target(query: str, ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": DATASOURCE, "query": query}


def overrides_display_names(names: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "matcher": {"id": "byName", "options": field},
            "properties": [{"id": "displayName", "value": label}],
        }
        for field, label in names.items()
    ]


def timeseries(
    title: str,
    queries: list[str],
    unit: str,
    *,
    description: str,
    names: dict[str, str] | None = None,
    bars: bool = False,
    stacked: bool = False,
    decimals: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    display_name: str | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        },
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if display_name is not None:
        defaults["displayName"] = display_name
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(q, chr(ord("A") + i)) for i, q in enumerate(queries)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides_display_names(names or {})},
        "options": {
            "legend": {
                "calcs": ["mean", "max"] if not bars else ["sum"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def stat(
    title: str,
    queries: list[str],
    unit: str,
    *,
    description: str,
    names: dict[str, str] | None = None,
    time_from: str | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    panel: dict[str, Any] = {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(q, chr(ord("A") + i)) for i, q in enumerate(queries)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides_display_names(names or {})},
        "options": {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "percentChangeColorMode": "standard",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "value_and_name",
            "wideLayout": True,
        },
    }
    if time_from is not None:
        panel["timeFrom"] = time_from
    return panel


def table(
    title: str,
    query: str,
    *,
    description: str,
    units: dict[str, str],
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    overrides = [
        {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": u}]}
        for column, u in units.items()
    ] + overrides_display_names(names or {})
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(query)],
        "fieldConfig": {
            "defaults": {
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}
            },
            "overrides": overrides,
        },
        "options": {"frameIndex": 0, "showHeader": True, "cellHeight": "sm"},
    }


def text(content: str) -> dict[str, Any]:
    return {
        "type": "text",
        "title": "",
        "transparent": True,
        "options": {"content": content, "mode": "markdown"},
    }


def layout(rows: list[list[tuple[dict[str, Any], int, int]]]) -> list[dict[str, Any]]:
    """Place panels row by row: each entry is ``(panel, width, height)`` on the 24-wide grid."""
    panels = []
    y = 0
    panel_id = 1
    for row in rows:
        x = 0
        height = 0
        for panel, width, h in row:
            grid = {"x": x, "y": y, "w": width, "h": h}
            panels.append({"id": panel_id, "gridPos": grid, **panel})
            panel_id += 1
            x += width
            height = max(height, h)
        assert x <= 24, f"row too wide: {[p['title'] for p, _, _ in row]}"
        y += height
    return panels


# --- variables ------------------------------------------------------------------------


def textbox(name: str, label: str, value: str, description: str) -> dict[str, Any]:
    return {
        "type": "textbox",
        "name": name,
        "label": label,
        "description": description,
        "query": value,
        "current": {"text": value, "value": value},
        "hide": 0,
    }


TZ_VARIABLE = textbox(
    "tz",
    "Time zone",
    "UTC",
    "IANA time zone for days and time-of-use hours (e.g. Europe/Berlin); use your tariff's.",
)


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    *,
    variables: list[dict[str, Any]] | None = None,
    time_from: str = "now-24h",
    refresh: str = "1m",
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": False,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "ElectroCloud",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": panels,
    }


# --- the dashboards ---------------------------------------------------------------------


def fleet_overview() -> dict[str, Any]:
    def fleet_power(direction: str) -> str:
        keep = "r._value > 0.0" if direction == "import" else "r._value < 0.0"
        value = "r._value" if direction == "import" else "-r._value"
        return flux(
            FROM,
            RANGE,
            '  |> filter(fn: (r) => r._measurement == "meter" and r._field == "power_w")',
            "  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)",
            # power_w is signed (negative = export): split before summing the meters.
            f"  |> map(fn: (r) => ({{r with _value: if {keep} then {value} else 0.0}}))",
            SUM_OVER_SERIES,
            f"  |> map(fn: (r) => ({{_time: r._time, {direction}_w: r._value}}))",
        )

    energy_today = flux(
        'import "date"',
        "",
        energy_in_range('r._field == "import_kwh" or r._field == "export_kwh"'),
        '  |> group(columns: ["_field"])',
        "  |> sum()",
    )
    top_consumers = flux(
        'import "date"',
        "",
        energy_in_range('r._field == "import_kwh"'),
        "  |> group()",
        '  |> sort(columns: ["_value"], desc: true)',
        "  |> limit(n: 10)",
        '  |> keep(columns: ["meter_id", "_value"])',
        '  |> rename(columns: {_value: "import_kwh"})',
    )
    reporting = flux(
        'import "date"',
        "",
        f"cutoff = date.sub(d: {SILENT_AFTER}, from: v.timeRangeStop)",
        "",
        last_seen("meter_id"),
        "  |> map(fn: (r) => ({reporting: if r._time >= cutoff then 1 else 0, "
        "silent: if r._time >= cutoff then 0 else 1}))",
        "  |> reduce(",
        "      fn: (r, accumulator) => ({reporting: accumulator.reporting + r.reporting, "
        "silent: accumulator.silent + r.silent}),",
        "      identity: {reporting: 0, silent: 0},",
        "  )",
    )
    silent_meters = flux(
        'import "date"',
        "",
        f"cutoff = date.sub(d: {SILENT_AFTER}, from: v.timeRangeStop)",
        "",
        last_seen("meter_id"),
        "  |> filter(fn: (r) => r._time < cutoff)",
        '  |> keep(columns: ["meter_id", "gateway_id", "_time"])',
        '  |> rename(columns: {_time: "last_reading"})',
        '  |> sort(columns: ["last_reading"])',
    )
    panels = layout(
        [
            [
                (
                    stat(
                        "Energy today",
                        [energy_today],
                        "kwatth",
                        description="Import and export of all meters since midnight "
                        "(dashboard time zone): register now minus register at midnight.",
                        names={"import_kwh": "Import", "export_kwh": "Export"},
                        time_from="now/d",
                        decimals=1,
                    ),
                    8,
                    5,
                ),
                (
                    stat(
                        "Meters reporting vs silent",
                        [reporting],
                        "none",
                        description=f"Meters with a reading in the last {SILENT_AFTER} vs "
                        f"meters whose newest reading is older (meters silent for more "
                        f"than {LAST_SEEN_LOOKBACK} are not counted).",
                        names={"reporting": "Reporting", "silent": "Silent"},
                    ),
                    8,
                    5,
                ),
                (
                    text(
                        "**ElectroCloud fleet.** Power and energy come from the meters' own "
                        "registers (measurement `meter`). Per-meter detail: *ElectroCloud / "
                        "Meter detail*; ingestion problems: *ElectroCloud / Ingestion health*."
                    ),
                    8,
                    5,
                ),
            ],
            [
                (
                    timeseries(
                        "Fleet power: import and export",
                        [fleet_power("import"), fleet_power("export")],
                        "watt",
                        description="Sum over all meters of the mean power per interval; "
                        "a meter's power counts as import when positive, export when negative.",
                        names={"import_w": "Import", "export_w": "Export"},
                    ),
                    24,
                    9,
                )
            ],
            [
                (
                    table(
                        "Top consumers (import in the time range)",
                        top_consumers,
                        description="The ten meters with the largest import in the "
                        "dashboard's time range.",
                        units={"import_kwh": "kwatth"},
                        names={"meter_id": "Meter", "import_kwh": "Import"},
                    ),
                    12,
                    10,
                ),
                (
                    table(
                        "Silent meters",
                        silent_meters,
                        description=f"Meters without a reading in the last {SILENT_AFTER}.",
                        units={"last_reading": "dateTimeAsIso"},
                        names={
                            "meter_id": "Meter",
                            "gateway_id": "Gateway",
                            "last_reading": "Last reading",
                        },
                    ),
                    12,
                    10,
                ),
            ],
        ]
    )
    return dashboard(
        "electrocloud-fleet",
        "ElectroCloud / Fleet overview",
        "Total import and export power, energy today, top consumers, meters reporting.",
        panels,
    )


def meter_detail() -> dict[str, Any]:
    meter_variable = {
        "type": "query",
        "name": "meter_id",
        "label": "Meter",
        "description": "meter_id tag values of the last 90 days",
        "datasource": DATASOURCE,
        "query": flux(
            'import "influxdata/influxdb/schema"',
            "",
            "schema.tagValues(",
            "    bucket: v.defaultBucket,",
            '    tag: "meter_id",',
            '    predicate: (r) => r._measurement == "meter",',
            "    start: -90d,",
            ")",
        ),
        "refresh": 1,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }
    phases = ("l1", "l2", "l3")
    panels = layout(
        [
            [
                (
                    timeseries(
                        "Power",
                        [meter_fields("power_w")],
                        "watt",
                        description="Mean total active power per interval; negative = export.",
                        names={"power_w": "Power"},
                    ),
                    24,
                    8,
                )
            ],
            [
                (
                    timeseries(
                        "Voltage per phase",
                        [meter_fields(*(f"voltage_{p}_v" for p in phases))],
                        "volt",
                        description="Mean voltage per phase and interval.",
                        names={f"voltage_{p}_v": p.upper() for p in phases},
                        decimals=1,
                    ),
                    12,
                    8,
                ),
                (
                    timeseries(
                        "Current per phase",
                        [meter_fields(*(f"current_{p}_a" for p in phases))],
                        "amp",
                        description="Mean current per phase and interval.",
                        names={f"current_{p}_a": p.upper() for p in phases},
                        decimals=2,
                    ),
                    12,
                    8,
                ),
            ],
            [
                (
                    timeseries(
                        "Frequency",
                        [meter_fields("frequency_hz")],
                        "hertz",
                        description="Mean grid frequency per interval.",
                        names={"frequency_hz": "Frequency"},
                        decimals=2,
                    ),
                    12,
                    7,
                ),
                (
                    timeseries(
                        "Power factor",
                        [meter_fields("power_factor")],
                        "none",
                        description="Mean total power factor per interval.",
                        names={"power_factor": "Power factor"},
                        decimals=2,
                        min_value=-1,
                        max_value=1,
                    ),
                    12,
                    7,
                ),
            ],
            [
                (
                    timeseries(
                        "Energy per 15 minutes",
                        [flux('import "date"', "", interval_energy("15m"))],
                        "kwatth",
                        description="Register at the end of each quarter hour minus the "
                        "register at its start; a gap's energy lands in the first quarter "
                        "hour after it.",
                        names={"import_kwh": "Import", "export_kwh": "Export"},
                        bars=True,
                        decimals=3,
                    ),
                    12,
                    8,
                ),
                (
                    timeseries(
                        "Energy per day",
                        [
                            flux(
                                'import "date"',
                                'import "timezone"',
                                "",
                                interval_energy("1d", location='timezone.location(name: "${tz}")'),
                            )
                        ],
                        "kwatth",
                        description="Register at the end of each day (time zone variable) "
                        "minus the register at its start.",
                        names={"import_kwh": "Import", "export_kwh": "Export"},
                        bars=True,
                        decimals=2,
                    ),
                    12,
                    8,
                ),
            ],
        ]
    )
    return dashboard(
        "electrocloud-meter",
        "ElectroCloud / Meter detail",
        "One meter: power, voltage and current per phase, frequency, power factor, energy.",
        panels,
        variables=[meter_variable, TZ_VARIABLE],
    )


def energy_and_cost() -> dict[str, Any]:
    # Every meter's import per quarter hour: the import register is what is priced.
    import_only = '  |> filter(fn: (r) => r._field == "import_kwh")'
    quarter_hours = [
        "quarterHours =",
        *("    " + line for line in interval_energy("15m", meter=False, fields=import_only)),
    ]
    header = ['import "date"', 'import "timezone"', "", *TOU_FUNCTIONS, "", *quarter_hours, ""]
    by_period = flux(
        header,
        "quarterHours",
        "  |> map(fn: (r) => ({r with period: period(t: r._time)}))",
        '  |> group(columns: ["period"])',
        '  |> sort(columns: ["_time"])',
        '  |> aggregateWindow(every: 1d, fn: sum, timeSrc: "_start", createEmpty: false, '
        "location: loc)",
        # Name each series by its period (Grafana names a series by _field).
        "  |> map(fn: (r) => ({r with _field: r.period}))",
        '  |> group(columns: ["_field"])',
        '  |> keep(columns: ["_time", "_value", "_field"])',
    )
    cost = flux(
        header,
        'price = (p) => if p == "peak" then float(v: "${price_peak}")',
        '    else if p == "off-peak" then float(v: "${price_offpeak}")',
        '    else float(v: "${price_shoulder}")',
        "",
        "quarterHours",
        "  |> map(fn: (r) => ({r with _value: r._value * price(p: period(t: r._time))}))",
        "  |> group()",
        '  |> sort(columns: ["_time"])',
        '  |> aggregateWindow(every: 1d, fn: sum, timeSrc: "_start", createEmpty: false, '
        "location: loc)",
        "  |> map(fn: (r) => ({_time: r._time, cost: r._value}))",
    )
    peak_demand = flux(
        header,
        "quarterHours",
        *SUM_OVER_SERIES,
        # kWh in a quarter hour x 4 = mean kW over it: the demand a tariff bills.
        "  |> map(fn: (r) => ({r with _value: r._value * 4.0}))",
        '  |> aggregateWindow(every: 1d, fn: max, timeSrc: "_start", createEmpty: false, '
        "location: loc)",
        "  |> map(fn: (r) => ({_time: r._time, peak_kw: r._value}))",
    )
    peak_per_meter = flux(
        header,
        "quarterHours",
        "  |> map(fn: (r) => ({r with _value: r._value * 4.0}))",
        '  |> group(columns: ["meter_id"])',
        "  |> max()",
        "  |> group()",
        '  |> sort(columns: ["_value"], desc: true)',
        "  |> limit(n: 20)",
        '  |> keep(columns: ["meter_id", "_time", "_value"])',
        '  |> rename(columns: {_time: "quarter_hour", _value: "peak_kw"})',
    )
    hour = "Hour of day (0-23, time zone variable)"
    variables = [
        TZ_VARIABLE,
        textbox("peak_start_hour", "Peak from", "17", f"{hour}: peak starts"),
        textbox("peak_end_hour", "Peak until", "21", f"{hour}: peak ends (exclusive)"),
        textbox("offpeak_start_hour", "Off-peak from", "22", f"{hour}: off-peak starts"),
        textbox("offpeak_end_hour", "Off-peak until", "6", f"{hour}: off-peak ends (exclusive)"),
        textbox("price_peak", "Peak price", "0.40", "Price per kWh in the peak period"),
        textbox("price_shoulder", "Shoulder price", "0.30", "Price per kWh otherwise"),
        textbox("price_offpeak", "Off-peak price", "0.20", "Price per kWh off-peak"),
    ]
    panels = layout(
        [
            [
                (
                    timeseries(
                        "Daily import by time-of-use period",
                        [by_period],
                        "kwatth",
                        description="Fleet import per day, split by the period each quarter "
                        "hour falls in (hours from the variables above).",
                        names={"peak": "Peak", "shoulder": "Shoulder", "off-peak": "Off-peak"},
                        bars=True,
                        stacked=True,
                        decimals=1,
                    ),
                    24,
                    9,
                )
            ],
            [
                (
                    timeseries(
                        "Estimated daily energy cost",
                        [cost],
                        "none",
                        description="Import x the period's price from the variables above, in "
                        "the prices' currency. An estimate: invoices come from billing, "
                        "with the full tariff.",
                        names={"cost": "Cost"},
                        bars=True,
                        decimals=2,
                    ),
                    12,
                    8,
                ),
                (
                    timeseries(
                        "Daily peak demand (fleet, 15-minute)",
                        [peak_demand],
                        "kwatt",
                        description="Highest mean demand of the whole fleet over any quarter "
                        "hour of the day.",
                        names={"peak_kw": "Peak demand"},
                        bars=True,
                        decimals=1,
                    ),
                    12,
                    8,
                ),
            ],
            [
                (
                    table(
                        "Peak 15-minute demand per meter",
                        peak_per_meter,
                        description="Each meter's highest mean demand over a quarter hour "
                        "in the time range, and when.",
                        units={"peak_kw": "kwatt", "quarter_hour": "dateTimeAsIso"},
                        names={
                            "meter_id": "Meter",
                            "quarter_hour": "Quarter hour",
                            "peak_kw": "Peak demand",
                        },
                    ),
                    24,
                    10,
                )
            ],
        ]
    )
    return dashboard(
        "electrocloud-energy-cost",
        "ElectroCloud / Energy and cost",
        "Daily energy by time-of-use period, estimated cost, peak demand.",
        panels,
        variables=variables,
        time_from="now-30d",
        refresh="",
    )


def ingestion_health() -> dict[str, Any]:
    def counter_rate(field: str, name: str) -> str:
        return flux(
            FROM,
            RANGE,
            f'  |> filter(fn: (r) => r._measurement == "backend_stats" and r._field == "{field}")',
            "  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)",
            # Per backend process; a restart resets its counters (the negative step is dropped).
            "  |> derivative(unit: 1s, nonNegative: true)",
            SUM_OVER_SERIES,
            f"  |> map(fn: (r) => ({{_time: r._time, {name}: r._value}}))",
        )

    def per_instance(field: str, fn: str) -> str:
        return flux(
            FROM,
            RANGE,
            f'  |> filter(fn: (r) => r._measurement == "backend_stats" and r._field == "{field}")',
            f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)",
            '  |> group(columns: ["_field", "instance"])',
            '  |> sort(columns: ["_time"])',
        )

    rejected = flux(
        FROM,
        RANGE,
        '  |> filter(fn: (r) => r._measurement == "backend_rejections" and r._field == "messages")',
        "  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)",
        "  |> difference(nonNegative: true)",
        '  |> group(columns: ["_time", "reason"])',
        "  |> sum()",
        '  |> group(columns: ["reason"])',
        '  |> sort(columns: ["_time"])',
        "  |> map(fn: (r) => ({r with _field: r.reason}))",
        '  |> group(columns: ["_field"])',
        '  |> keep(columns: ["_time", "_value", "_field"])',
    )
    edge_queue = flux(
        FROM,
        RANGE,
        '  |> filter(fn: (r) => r._measurement == "gateway_status" and r._field == "queue_depth")',
        "  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)",
        '  |> group(columns: ["_field", "gateway_id"])',
        '  |> sort(columns: ["_time"])',
    )
    gateway_age = flux(
        'import "date"',
        "",
        last_seen("gateway_id"),
        "  |> map(",
        "      fn: (r) => ({",
        "          gateway_id: r.gateway_id,",
        "          last_reading: r._time,",
        "          data_age_s: float(v: int(v: v.timeRangeStop) - int(v: r._time)) / 1000000000.0,",
        "      }),",
        "  )",
        '  |> sort(columns: ["data_age_s"], desc: true)',
    )
    gateway_status = flux(
        'import "date"',
        "",
        FROM,
        f"  |> range(start: date.sub(d: {LAST_SEEN_LOOKBACK}, from: v.timeRangeStop), "
        "stop: v.timeRangeStop)",
        '  |> filter(fn: (r) => r._measurement == "gateway_status" and r._field == "online")',
        "  |> last()",
        '  |> group(columns: ["gateway_id"])',
        '  |> sort(columns: ["_time"], desc: true)',
        "  |> limit(n: 1)",
        "  |> group()",
        "  |> map(",
        "      fn: (r) => ({",
        "          gateway_id: r.gateway_id,",
        '          state: if r._value == 1 then "online" else "offline",',
        "          since: r._time,",
        "      }),",
        "  )",
        '  |> sort(columns: ["state", "gateway_id"])',
    )
    panels = layout(
        [
            [
                (
                    timeseries(
                        "Readings per second",
                        [
                            counter_rate("readings_received", "received"),
                            counter_rate("readings_written", "written"),
                        ],
                        "reqps",
                        description="Valid readings received and readings written to the "
                        "store, all backend processes together (redeliveries included).",
                        names={"received": "Received", "written": "Written"},
                    ),
                    12,
                    8,
                ),
                (
                    timeseries(
                        "Rejected messages by reason",
                        [rejected],
                        "none",
                        description="Messages dead-lettered per interval, by reason "
                        "(docs/wire-contract.md, 'Validation: reasons').",
                        bars=True,
                        stacked=True,
                    ),
                    12,
                    8,
                ),
            ],
            [
                (
                    timeseries(
                        "Backend backlog (readings held, not yet written)",
                        [per_instance("backlog_readings", "max")],
                        "none",
                        description="Per backend process. Grows while the store is down; "
                        "past batch.backlog_max_readings the broker keeps the rest.",
                        display_name="${__field.labels.instance}",
                    ),
                    12,
                    8,
                ),
                (
                    timeseries(
                        "Store write failures per second",
                        [counter_rate("store_failures", "failures")],
                        "reqps",
                        description="Failed write attempts while the store was unavailable.",
                        names={"failures": "Failures"},
                    ),
                    12,
                    8,
                ),
            ],
            [
                (
                    timeseries(
                        "Edge backlog: readings queued per gateway",
                        [edge_queue],
                        "none",
                        description="Readings waiting in each gateway's store-and-forward "
                        "queue, from the status the edge republishes every "
                        "mqtt.status_interval_s while connected. A gateway that cannot reach "
                        "the broker reports its backlog when it is back.",
                        display_name="${__field.labels.gateway_id}",
                    ),
                    24,
                    8,
                ),
            ],
            [
                (
                    table(
                        "Edge backlog: data age per gateway",
                        gateway_age,
                        description="Newest stored reading per gateway and how far it lags "
                        "the end of the time range. Gateways send the oldest queued readings "
                        "first, so a gateway draining a backlog shows the backlog's age here.",
                        units={"data_age_s": "s", "last_reading": "dateTimeAsIso"},
                        names={
                            "gateway_id": "Gateway",
                            "last_reading": "Last reading",
                            "data_age_s": "Data age",
                        },
                    ),
                    12,
                    9,
                ),
                (
                    table(
                        "Gateway connection (retained status)",
                        gateway_status,
                        description="Each gateway's last online/offline status as the backend "
                        "saw it on electrocloud/v1/<gateway>/status (offline is also the "
                        "gateway's Last Will).",
                        units={"since": "dateTimeAsIso"},
                        names={"gateway_id": "Gateway", "state": "State", "since": "Since"},
                    ),
                    12,
                    9,
                ),
            ],
        ]
    )
    return dashboard(
        "electrocloud-ingestion",
        "ElectroCloud / Ingestion health",
        "Readings per second, rejections by reason, backlogs, gateways' last data and status.",
        panels,
        time_from="now-6h",
        refresh="30s",
    )


DASHBOARDS = {
    "fleet-overview.json": fleet_overview,
    "meter-detail.json": meter_detail,
    "energy-and-cost.json": energy_and_cost,
    "ingestion-health.json": ingestion_health,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (OUT_DIR / name).write_text(content, encoding="utf-8")
        print(f"wrote {OUT_DIR / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
