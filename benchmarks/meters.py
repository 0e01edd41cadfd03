"""Simulated SDM630 meters for the benchmarks, served over Modbus TCP in their own process.

``python -m benchmarks.meters --meters 100 --port P`` serves until SIGTERM. The
fleet is the simulator's (seed 0), with every meter an SDM630, so every read is
the same two requests: the device clock (4 registers) and the measurement block
(76 registers).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

from benchmarks.common import Child, python_module
from simulator.clock import SimClock
from simulator.fleet import FleetSpec
from simulator.model import MeterModel, SimulatedMeter
from simulator.server import MeterServer

#: Requests of one read of one meter, as planned for the simulated-sdm630 profile.
READ_REQUESTS: tuple[tuple[int, int], ...] = ((0x0F00, 4), (0x0000, 76))


def sdm630_fleet(meters: int, start_ms: int) -> list[SimulatedMeter]:
    spec = FleetSpec(meters=meters, seed=0, start_ms=start_ms)
    return [
        SimulatedMeter(
            meter_spec.model_copy(update={"model": MeterModel.SDM630}),
            seed=spec.seed,
            start_ms=start_ms,
            site=spec.site,
        )
        for meter_spec in spec.meter_specs()
    ]


def meter_ids(meters: int) -> list[str]:
    return [f"m-{index + 1:04d}" for index in range(meters)]


async def _serve(meters: int, port: int) -> None:
    clock = SimClock(int(time.time() * 1000), speed=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with MeterServer(sdm630_fleet(meters, clock.start_ms), clock, port=port) as server:
        print(f"serving {meters} meters on port {server.port}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.meters, args.port))


class MeterServerProcess(Child):
    """The meter server as a child process; ``port`` is known before it starts."""

    def __init__(self, meters: int, port: int, log_dir: Path) -> None:
        self.meters = meters
        self.port = port
        super().__init__(
            f"meters-{port}",
            python_module("benchmarks.meters", "--meters", str(meters), "--port", str(port)),
            log_dir,
        )


if __name__ == "__main__":
    main()
