"""A ready-to-use edge agent config (YAML) for a simulated fleet.

Follows ``edge.config.EdgeSettings`` without importing it (stage packages do not
import each other); ``tests/test_simulator_cli.py`` loads the result with it.
The ``simulated-sdm630`` / ``simulated-sdm120`` profiles ship with the edge
package: Eastron maps plus the simulator's device clock register.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from simulator.model import SimulatedMeter

EDGE_PROFILE = {"sdm630": "simulated-sdm630", "sdm120": "simulated-sdm120"}


def connection_name(server_index: int) -> str:
    """``sim`` for the first server, ``sim-2``, ``sim-3``, ... for further ports."""
    return "sim" if server_index == 0 else f"sim-{server_index + 1}"


def edge_config(
    *,
    gateway_id: str,
    mqtt_url: str,
    queue_path: Path,
    host: str,
    servers: Sequence[tuple[int, Sequence[SimulatedMeter]]],
    poll_interval_s: float,
) -> dict[str, Any]:
    """The config as plain data; ``servers``: ``(port, meters)`` per Modbus server."""
    connections: list[dict[str, Any]] = []
    meters: list[dict[str, Any]] = []
    for index, (port, served) in enumerate(servers):
        name = connection_name(index)
        connections.append({"name": name, "type": "tcp", "host": host, "port": port})
        meters.extend(
            {
                "meter_id": meter.meter_id,
                "connection": name,
                "unit_id": meter.unit_id,
                "profile": EDGE_PROFILE[meter.model.value],
                "poll_interval_s": poll_interval_s,
                "time_source": "device",
            }
            for meter in served
        )
    return {
        "gateway_id": gateway_id,
        "mqtt": {"url": mqtt_url},
        "queue": {"path": str(queue_path)},
        "connections": connections,
        "meters": meters,
    }


def edge_config_yaml(**kwargs: Any) -> str:
    """:func:`edge_config` as YAML text with a header comment."""
    header = "# Edge agent config for the simulated fleet (written by `electrocloud simulate`).\n"
    return header + yaml.safe_dump(edge_config(**kwargs), sort_keys=False)
