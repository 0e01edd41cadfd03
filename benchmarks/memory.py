"""Benchmark 5, memory: RSS of the edge agent polling 100 meters and of the backend at full load.

One run, everything at once: a real ``electrocloud edge`` process polls 100
simulated SDM630 meters every second (default settings) next to its floor, the
bare pymodbus poller of the freshness benchmark; a real ``electrocloud backend``
process ingests a load generator's 60-reading messages as fast as it can (the
generator keeps at most ~60,000 readings waiting at the broker, reading the
backend's own ``readings_written`` metric), next to its floor, a bare paho
subscriber that parses the same stream. RSS is sampled from /proc every few
seconds; "flat" compares the backend's RSS at the start and the end of the second
half of the run (the first half includes caches and allocator arenas filling up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.backend import METERS as BACKEND_METERS
from benchmarks.backend import backend_config, reading_json
from benchmarks.common import (
    Child,
    Mosquitto,
    Outcome,
    fmt,
    free_port,
    memory_bytes,
    python_module,
    wait_for_port,
)
from benchmarks.edge import edge_config
from benchmarks.meters import MeterServerProcess

EDGE_TARGET_MIB = 80
GROWTH_TOLERANCE = 0.05  # "flat": the last quarter within 5 % (or 2 MiB) of the first
MAX_WAITING_READINGS = 60_000
PER_MESSAGE = 60
GATEWAY = "gw-load"


# --- child processes -------------------------------------------------------------------------


def _written(http_port: int) -> float:
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("electrocloud_backend_readings_written_total "):
                return float(line.split()[1])
    return 0.0


def generate_load(broker_port: int, http_port: int, stop: threading.Event) -> None:
    """Publish 60-reading messages, round-robin over meters, as fast as the backend keeps up."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-load", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    # Reading bodies without ts_ms/seq, rendered once: formatting floats is the slow part.
    bodies = [
        reading_json(meter, seq, 0).split(",", 2)[2] for meter in range(4) for seq in range(60)
    ]
    base_ms = (int(time.time()) - 60 * 86400) * 1000
    published = 0
    round_index = 0
    written = 0.0
    while not stop.is_set():
        if published - written > MAX_WAITING_READINGS:
            time.sleep(0.02)
            with contextlib.suppress(OSError):
                written = _written(http_port)
            continue
        for meter in range(BACKEND_METERS):
            meter_id = f"m-{meter + 1:04d}"
            first = round_index * PER_MESSAGE
            readings = ",".join(
                f'{{"ts_ms":{base_ms + (first + i) * 1000},"seq":{first + i},'
                + bodies[(meter % 4) * 60 + i]
                for i in range(PER_MESSAGE)
            )
            payload = (
                f'{{"schema_version":1,"gateway_id":"{GATEWAY}","meter_id":"{meter_id}",'
                f'"readings":[{readings}]}}'
            )
            client.publish(f"electrocloud/v1/{GATEWAY}/{meter_id}/readings", payload, qos=1)
            published += PER_MESSAGE
        round_index += 1
    client.disconnect()
    client.loop_stop()


def parse_stream(broker_port: int, stop: threading.Event) -> None:
    """The backend's floor: a bare paho subscriber that parses every readings message."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-parse", protocol=mqtt.MQTTv5)
    client.on_message = lambda client, userdata, message: json.loads(message.payload)
    client.on_connect = lambda client, *args: client.subscribe(
        "electrocloud/v1/+/+/readings", qos=1
    )
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="load and floor of the memory benchmark")
    parser.add_argument("part", choices=["load", "parse"])
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--http-port", type=int)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.part == "load":
        generate_load(args.broker_port, args.http_port, stop)
    else:
        parse_stream(args.broker_port, stop)


# --- parent -------------------------------------------------------------------------------


def _mib(value: float) -> float:
    return value / 2**20


def run(*, quick: bool, duration_s: float, work_dir: Path, log_dir: Path) -> Outcome:
    sample_every = 1.0 if quick else 5.0
    warmup_s = min(30.0, duration_s / 5)
    outcome = Outcome("Memory: edge agent and backend RSS")
    outcome.method = (
        f"One run of {duration_s:g} s ({duration_s / 60:.1f} min) after starting everything: "
        "`electrocloud edge` polling 100 simulated SDM630 meters every 1 s (default settings) "
        "and its floor, the bare pymodbus poller of the freshness benchmark; `electrocloud "
        "backend` (default settings, SQLite) ingesting 60-reading messages as fast as it can "
        f"from a load generator that keeps <= {MAX_WAITING_READINGS:,} readings waiting at "
        "the broker, and its floor, a bare paho subscriber parsing the same stream. RSS from "
        f"/proc every {sample_every:g} s; the first {warmup_s:g} s are warm-up. 'Flat' "
        "compares the backend's median RSS at the start and the end of the run's second half."
    )
    children: list[Child] = []
    samples: dict[str, list[tuple[float, int]]] = {}
    modbus_port, http_port = free_port(), free_port()
    try:
        broker = Mosquitto(work_dir, log_dir)
        children.append(broker)
        server = MeterServerProcess(100, modbus_port, log_dir)
        children.append(server)
        wait_for_port(modbus_port, 60)
        edge_yaml = edge_config(
            work_dir / "memory-edge.yaml",
            broker_url=broker.url,
            modbus_port=modbus_port,
            meters=100,
            poll_interval_s=1.0,
            queue_path=work_dir / "memory-queue.sqlite",
            profile="sdm630",
            time_source="gateway",
        )
        backend_yaml = backend_config(
            work_dir / "memory-backend.yaml",
            port=broker.port,
            client_id="bench-memory",
            share_group="memory",
            store=work_dir / "memory.sqlite",
            http_port=http_port,
        )
        ports = ["--broker-port", str(broker.port)]
        watched = {
            "edge agent": Child(
                "memory-edge",
                python_module("electrocloud.cli", "edge", "--config", str(edge_yaml)),
                log_dir,
            ),
            "floor: bare pymodbus poller": Child(
                "memory-floor-poll",
                python_module(
                    "benchmarks.freshness", "poll", *ports, "--modbus-port", str(modbus_port)
                ),
                log_dir,
            ),
            "backend": Child(
                "memory-backend",
                python_module("electrocloud.cli", "backend", "--config", str(backend_yaml)),
                log_dir,
            ),
            "floor: bare paho subscriber": Child(
                "memory-floor-parse", python_module("benchmarks.memory", "parse", *ports), log_dir
            ),
        }
        children.extend(watched.values())
        wait_for_port(http_port, 60)
        load = Child(
            "memory-load",
            python_module("benchmarks.memory", "load", *ports, "--http-port", str(http_port)),
            log_dir,
        )
        children.append(load)
        started = time.time()
        written_at_warmup = None
        while (elapsed := time.time() - started) < duration_s:
            for child in children:
                child.check_alive()
            for name, child in watched.items():
                samples.setdefault(name, []).append((elapsed, memory_bytes(child.pid)[0]))
            if written_at_warmup is None and elapsed >= warmup_s:
                written_at_warmup = (elapsed, _written(http_port))
            time.sleep(sample_every)
        written_end = (time.time() - started, _written(http_port))
        peaks = {name: memory_bytes(child.pid)[1] for name, child in watched.items()}
    finally:
        for child in reversed(children):
            child.stop()

    edge_peak = outcome.add("edge agent peak RSS", "MiB", [_mib(peaks["edge agent"])])
    outcome.add(
        "floor: bare pymodbus poller peak RSS", "MiB", [_mib(peaks["floor: bare pymodbus poller"])]
    )
    steady = [(t, rss) for t, rss in samples["backend"] if t >= warmup_s]
    quarter = max(1, len(steady) // 4)
    first = statistics.median(rss for _, rss in steady[:quarter])
    last = statistics.median(rss for _, rss in steady[-quarter:])
    span_min = max(1e-9, (steady[-1][0] - steady[0][0]) / 60)
    outcome.add("backend RSS, first quarter (median)", "MiB", [_mib(first)])
    outcome.add("backend RSS, last quarter (median)", "MiB", [_mib(last)])
    outcome.add("backend peak RSS", "MiB", [_mib(peaks["backend"])])
    outcome.add(
        "floor: bare paho subscriber peak RSS", "MiB", [_mib(peaks["floor: bare paho subscriber"])]
    )
    growth = last - first
    outcome.add("backend RSS growth per minute", "MiB/min", [_mib(growth) / span_min])
    # "Flat" is judged on the second half: caches and allocator arenas fill up first.
    second = steady[len(steady) // 2 :]
    eighth = max(1, len(second) // 4)
    second_start = statistics.median(rss for _, rss in second[:eighth])
    second_growth = last - second_start
    if written_at_warmup is not None:
        rate = (written_end[1] - written_at_warmup[1]) / (written_end[0] - written_at_warmup[0])
        outcome.add("backend load during the run", "readings/s", [rate])
    outcome.target(
        f"edge agent peak RSS < {EDGE_TARGET_MIB} MiB",
        _mib(peaks["edge agent"]) < EDGE_TARGET_MIB,
        f"{fmt(edge_peak.median)} MiB",
    )
    flat = second_growth <= max(GROWTH_TOLERANCE * second_start, 2 * 2**20)
    outcome.target(
        "backend RSS flat at full load (over the second half of the run: its last quarter "
        "within 5 % or 2 MiB of its first)",
        flat,
        f"{_mib(second_start):.0f} -> {_mib(last):.0f} MiB "
        f"(whole run after warm-up: {_mib(first):.0f} -> {_mib(last):.0f} MiB)",
    )
    # The backend's RSS over the run, at ten evenly spaced samples, to show its shape.
    series = samples["backend"]
    picks = [series[round(i * (len(series) - 1) / 9)] for i in range(10)] if series else []
    outcome.notes.append(
        "backend RSS over the run: "
        + ", ".join(f"{t / 60:.1f} min {_mib(rss):.0f} MiB" for t, rss in picks)
    )
    outcome.notes.append(
        "single long run: the median/min/max columns of this benchmark repeat one value"
    )
    return outcome


if __name__ == "__main__":
    main()
