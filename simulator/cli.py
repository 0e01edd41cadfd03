"""``electrocloud simulate``: serve a simulated meter fleet over Modbus TCP.

Module-level imports stay light (``electrocloud --help`` imports this module);
numpy, pandas and pymodbus load only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.clock import SimClock
    from simulator.fleet import FleetSpec
    from simulator.model import SimulatedMeter
    from simulator.server import MeterServer

log = logging.getLogger("simulator")

DEFAULT_PORT = 5020


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0 = any free port), got {value}")
    return value


def parse_start(text: str) -> int:
    """ISO 8601 time -> ms since epoch; no offset means UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2025-01-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.year < 1970:
        raise argparse.ArgumentTypeError(f"must be 1970 or later, got {text!r}")
    return int(moment.timestamp() * 1000)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=_positive_int, default=10, help="number of meters")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    parser.add_argument(
        "--speed", type=_positive_float, default=1.0, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--start",
        type=parse_start,
        default=None,
        help="simulated start, ISO 8601, UTC if no offset (default: now at speed 1, "
        "else 00:00 UTC on the first day of the previous month)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="Modbus TCP port (0 = any free port); fleets over 247 meters also use port+1, ...",
    )
    parser.add_argument("--gateway-id", default="gw-sim", help="gateway_id for --edge-config")
    parser.add_argument(
        "--ground-truth", type=Path, metavar="FILE", help="write exact served values to this CSV"
    )
    parser.add_argument(
        "--edge-config", type=Path, metavar="FILE", help="write an edge agent YAML for the fleet"
    )
    parser.add_argument(
        "--fleet-file",
        type=Path,
        metavar="FILE",
        help="write the fleet (meter ids, units, load profiles, annual kWh, PV kWp) as JSON",
    )
    parser.add_argument(
        "--mqtt-url", default="mqtt://127.0.0.1:1883", help="mqtt.url for --edge-config"
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="poll_interval_s for --edge-config",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="stop after this many real seconds (default: run until Ctrl-C / SIGTERM)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from electrocloud.errors import ConfigError, ConfigProblem
    from simulator.clock import SimClock
    from simulator.fleet import FleetSpec

    clock = SimClock(args.start, args.speed)
    try:
        spec = FleetSpec(
            meters=args.meters, seed=args.seed, start_ms=clock.start_ms, gateway_id=args.gateway_id
        )
    except ValidationError as exc:
        problems = [
            ConfigProblem("command line", "--" + str(e["loc"][0]).replace("_", "-"), e["msg"])
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError("command line", problems) from None
    return asyncio.run(_serve(args, spec, clock))


async def _serve(args: argparse.Namespace, spec: FleetSpec, clock: SimClock) -> int:
    import asyncio
    import contextlib
    import signal

    from simulator.fleet import describe_fleet
    from simulator.groundtruth import GroundTruthWriter
    from simulator.server import MeterServer

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("pymodbus").setLevel(logging.WARNING)  # one start-up line is ours
    meters = spec.build()
    groups: dict[int, list[SimulatedMeter]] = {}
    for meter in meters:
        groups.setdefault(meter.spec.server_index, []).append(meter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    writer = None
    try:
        writer = GroundTruthWriter(args.ground_truth) if args.ground_truth else None
        servers = [
            MeterServer(
                group,
                clock,
                host=args.host,
                port=args.port + index if args.port else 0,
                ground_truth=writer,
            )
            for index, group in sorted(groups.items())
        ]
        async with contextlib.AsyncExitStack() as stack:
            for server in servers:
                await stack.enter_async_context(server)
            ports = ", ".join(
                f"{args.host}:{s.port} (units {s.meters[0].unit_id}-{s.meters[-1].unit_id})"
                for s in servers
            )
            log.info(
                "simulating %s on %s; speed %gx, start %s, seed %d",
                describe_fleet(meters),
                ports,
                clock.speed,
                _iso(clock.start_ms),
                spec.seed,
            )
            if args.fleet_file:  # before the edge config, which callers wait for
                _write_fleet_file(args.fleet_file, meters)
            if args.edge_config:
                _write_edge_config(args, spec, servers)
                log.info("edge agent config written to %s", args.edge_config)
            if args.duration is None:
                await stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.duration)
            log.info("stopping at simulated %s", _iso(clock.now_ms()))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if writer is not None:
            writer.close()
    return 0


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _write_fleet_file(path: Path, meters: list[SimulatedMeter]) -> None:
    import json

    from simulator.errors import SimulatorError

    fleet = [meter.spec.model_dump(mode="json") for meter in meters]
    try:
        path.write_text(json.dumps(fleet, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SimulatorError(f"cannot write fleet file {path}: {exc.strerror}") from None


def _write_edge_config(
    args: argparse.Namespace, spec: FleetSpec, servers: list[MeterServer]
) -> None:
    from simulator.edgeconfig import edge_config_yaml
    from simulator.errors import SimulatorError

    path: Path = args.edge_config
    connect_host = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host
    text = edge_config_yaml(
        gateway_id=spec.gateway_id,
        mqtt_url=args.mqtt_url,
        queue_path=path.parent.resolve() / f"{spec.gateway_id}-queue.sqlite",
        host=connect_host,
        servers=[(server.port, server.meters) for server in servers],
        poll_interval_s=args.poll_interval,
    )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SimulatorError(f"cannot write edge config {path}: {exc.strerror}") from None
