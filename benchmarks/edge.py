"""Benchmark 1, edge polling: the edge agent against a bare pymodbus client.

Both read the same 100 simulated SDM630 meters (one Modbus TCP server in its own
process, all meters behind one connection, as behind one TCP gateway) as fast as
they can, with the same two requests per read. The agent does everything it does
in production: decode, sanity check, group commit to its SQLite queue, publish
to a real Mosquitto and delete after the PUBACK. The floor only issues the requests.
Both run in the same worker process, alternating, after a warm-up of each.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Mosquitto, Outcome, Worker, cpu_seconds, fmt, ratios
from benchmarks.meters import READ_REQUESTS, MeterServerProcess, meter_ids

TARGET_RATIO = 0.7
METERS = 100


def edge_config(
    path: Path,
    *,
    broker_url: str,
    modbus_port: int,
    meters: int,
    poll_interval_s: float,
    queue_path: Path,
    commit_interval_s: float = 1.0,
    profile: str = "simulated-sdm630",
    time_source: str = "device",
    gateway_id: str = "gw-bench",
) -> Path:
    """Write an edge agent YAML for ``meters`` simulated meters on one TCP connection."""
    config = {
        "gateway_id": gateway_id,
        "mqtt": {"url": broker_url, "client_id": f"bench-edge-{path.stem}"},
        "queue": {"path": str(queue_path), "commit_interval_s": commit_interval_s},
        "connections": [
            {"name": "sim", "host": "127.0.0.1", "port": modbus_port, "timeout_s": 5.0}
        ],
        "meters": [
            {
                "meter_id": meter_id,
                "connection": "sim",
                "unit_id": index + 1,
                "profile": profile,
                "poll_interval_s": poll_interval_s,
                "time_source": time_source,
            }
            for index, meter_id in enumerate(meter_ids(meters))
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- worker side -----------------------------------------------------------------------


def _server_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return float("nan")


async def floor_window(
    port: int, meters: int, warmup_s: float, seconds: float, server_pid: int
) -> dict[str, Any]:
    """A bare pymodbus client reading every meter in turn; counts reads in the window."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"cannot connect to the meter server on port {port}")
    reads = 0
    start = time.perf_counter()
    measuring = False
    t0 = cpu0 = server0 = 0.0
    try:
        while True:
            for unit in range(1, meters + 1):
                for address, count in READ_REQUESTS:
                    response = await client.read_input_registers(
                        address, count=count, device_id=unit
                    )
                    if response.isError():
                        raise RuntimeError(f"unit {unit}: {response}")
                reads += 1
                now = time.perf_counter()
                if not measuring and now - start >= warmup_s:
                    measuring, reads = True, 0
                    t0, cpu0, server0 = now, time.process_time(), _server_cpu(server_pid)
                elif measuring and now - t0 >= seconds:
                    return {
                        "reads": reads,
                        "seconds": now - t0,
                        "cpu_s": time.process_time() - cpu0,
                        "server_cpu_s": _server_cpu(server_pid) - server0,
                    }
    finally:
        client.close()


async def agent_window(
    config: str, warmup_s: float, seconds: float, server_pid: int
) -> dict[str, Any]:
    """The real EdgeAgent polling as fast as it can; counts polls and publishes in the window."""
    from edge.agent import EdgeAgent
    from edge.config import EdgeSettings
    from electrocloud.config import load_settings

    agent = EdgeAgent(load_settings(EdgeSettings, config))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))

    def counts() -> tuple[int, int, int]:
        polls = sum(p.stats.polls_ok for p in agent.pollers)
        failed = sum(p.stats.polls_failed for p in agent.pollers)
        return polls, failed, agent.publisher.stats.published_readings

    try:
        await asyncio.sleep(warmup_s)
        polls0, failed0, published0 = counts()
        t0, cpu0, server0 = time.perf_counter(), time.process_time(), _server_cpu(server_pid)
        await asyncio.sleep(seconds)
        polls1, failed1, published1 = counts()
        t1, cpu1, server1 = time.perf_counter(), time.process_time(), _server_cpu(server_pid)
    finally:
        stop.set()
        await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    return {
        "reads": polls1 - polls0,
        "failed": failed1 - failed0,
        "published": published1 - published0,
        "seconds": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "server_cpu_s": server1 - server0,
    }


# --- parent side --------------------------------------------------------------------------


def run(*, quick: bool, runs: int, work_dir: Path, log_dir: Path) -> Outcome:
    seconds = 1.0 if quick else 5.0
    warmup_s = 0.3 if quick else 1.5
    outcome = Outcome("Edge polling: 100 SDM630 meters over Modbus TCP")
    outcome.method = (
        f"{METERS} simulated SDM630 meters behind one Modbus TCP server (own process), one "
        "connection, two requests per read (clock 4 registers + block 76 registers). "
        "Project: the edge agent (profile simulated-sdm630, poll interval 1 ms, i.e. as fast "
        "as the link allows; queue commit every 1 s; publishing to Mosquitto). Floor: a bare "
        "pymodbus AsyncModbusTcpClient issuing the same requests in a loop. Both in one worker "
        f"process, alternating, {warmup_s:g} s warm-up then a {seconds:g} s window per run."
    )
    with (
        Mosquitto(work_dir, log_dir) as broker,
        MeterServerProcess(METERS, _free(), log_dir) as server,
        Worker("edge", log_dir) as worker,
    ):
        from benchmarks.common import wait_for_port

        wait_for_port(server.port, 60)
        server.check_alive()

        def agent(index: int, window: float, warm: float) -> dict[str, Any]:
            config = edge_config(
                work_dir / f"edge-{index}.yaml",
                broker_url=broker.url,
                modbus_port=server.port,
                meters=METERS,
                poll_interval_s=0.001,
                queue_path=work_dir / f"edge-queue-{index}.sqlite",
            )
            result: dict[str, Any] = worker.call(
                "benchmarks.edge:agent_window",
                config=str(config),
                warmup_s=warm,
                seconds=window,
                server_pid=server.pid,
            )
            return result

        def floor(window: float, warm: float) -> dict[str, Any]:
            result: dict[str, Any] = worker.call(
                "benchmarks.edge:floor_window",
                port=server.port,
                meters=METERS,
                warmup_s=warm,
                seconds=window,
                server_pid=server.pid,
            )
            return result

        floor(seconds, warmup_s)  # warm-up runs, discarded
        agent(0, seconds, warmup_s)
        agents, floors = [], []
        for index in range(runs):
            if index % 2 == 0:
                floors.append(floor(seconds, warmup_s))
                agents.append(agent(index + 1, seconds, warmup_s))
            else:
                agents.append(agent(index + 1, seconds, warmup_s))
                floors.append(floor(seconds, warmup_s))
            server.check_alive()

    agent_rate = [r["reads"] / r["seconds"] for r in agents]
    floor_rate = [r["reads"] / r["seconds"] for r in floors]
    agent_cpu = [1000 * r["cpu_s"] / r["reads"] for r in agents]
    floor_cpu = [1000 * r["cpu_s"] / r["reads"] for r in floors]
    outcome.add("edge agent", "reads/s", agent_rate)
    outcome.add("floor: bare pymodbus client", "reads/s", floor_rate)
    ratio = outcome.add("ratio agent / floor", "", ratios(agent_rate, floor_rate))
    outcome.add("edge agent CPU", "s per 1,000 reads", agent_cpu)
    outcome.add("floor CPU", "s per 1,000 reads", floor_cpu)
    outcome.add("CPU ratio agent / floor", "", ratios(agent_cpu, floor_cpu))
    outcome.add(
        "agent: readings published", "readings/s", [r["published"] / r["seconds"] for r in agents]
    )
    outcome.add(
        "meter server CPU during the agent's window",
        "cores",
        [r["server_cpu_s"] / r["seconds"] for r in agents],
    )
    outcome.add(
        "meter server CPU during the floor's window",
        "cores",
        [r["server_cpu_s"] / r["seconds"] for r in floors],
    )
    failed = sum(r["failed"] for r in agents)
    if failed:
        outcome.notes.append(f"{failed} agent polls failed during the windows")
    outcome.target(
        f"agent reads/s >= {TARGET_RATIO} x floor",
        ratio.median >= TARGET_RATIO,
        f"{fmt(ratio.median)} x",
    )
    return outcome


def _free() -> int:
    from benchmarks.common import free_port

    return free_port()
