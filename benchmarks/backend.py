"""Benchmark 2, backend ingestion: the backend against a bare paho subscriber.

A real Mosquitto is preloaded: every consumer's persistent session (one share
group per run, so each run gets every message) is created, then all messages are
published once while the consumers are offline. Each run then connects one
consumer and times it from connecting until the last reading is stored (backend)
or parsed (floor). The backend runs in a worker process as ``BackendService`` with
its default batch and flow-control settings, writing to a fresh SQLite file per
run; the floor is a paho MQTT v5 subscriber (same Receive Maximum) that only
parses the JSON. Two payload shapes: 60 readings per message (what an edge agent
sends with a backlog or a 1-minute publish) and one reading per message (a
real-time stream). With two backend processes on one share group (and one SQLite
file) the combined rate gives the scaling factor.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Mosquitto, Outcome, Worker, fmt, ratios

READINGS_TARGET = 50_000  # readings/s per process, batched messages
MESSAGE_RATIO_TARGET = 0.5  # of the floor's messages/s, single-reading messages
METERS = 100
GATEWAY = "gw-bench"
TOPIC = "electrocloud/v1/+/+/readings"
SESSION_EXPIRY_S = 3600
RECEIVE_MAXIMUM = 100  # the backend's default (backend/config.py)


# --- payloads ----------------------------------------------------------------------------


def _f32(value: float) -> str:
    """``value`` as a float32 register would give it, as the edge agent serialises it."""
    return repr(struct.unpack(">f", struct.pack(">f", value))[0])


def reading_json(meter: int, seq: int, ts_ms: int) -> str:
    """One SDM630 reading exactly as the edge agent encodes it (all fields, float32 values)."""
    phase = seq % 17
    return (
        f'{{"ts_ms":{ts_ms},"seq":{seq},"import_kwh":{_f32(1000.0 * meter + seq * 0.0125)},'
        f'"export_kwh":{_f32(10.0 + seq * 0.001)},"power_w":{_f32(1500.0 + meter - phase)},'
        f'"voltage_v":{{"l1":{_f32(230.1 + phase / 10)},"l2":{_f32(229.7 - phase / 20)},'
        f'"l3":{_f32(231.3 + phase / 30)}}},'
        f'"current_a":{{"l1":{_f32(3.2 + phase / 7)},"l2":{_f32(2.1 + phase / 9)},'
        f'"l3":{_f32(1.4 + phase / 11)}}},'
        f'"frequency_hz":{_f32(50.0 + phase / 1000)},"power_factor":{_f32(0.95 + phase / 400)},'
        '"flags":[],"dropped":[]}'
    )


def payloads(messages: int, per_message: int) -> list[tuple[str, bytes]]:
    """``messages`` contract v1 batches of ``per_message`` readings, round-robin over meters.

    Readings are 10 s apart per meter and start 30 days ago (well inside the
    backend's accepted window); every (meter, ts_ms) is distinct.
    """
    base_ms = (int(time.time()) - 30 * 86400) * 1000
    next_seq = [0] * METERS
    out = []
    for index in range(messages):
        meter = index % METERS
        meter_id = f"m-{meter + 1:04d}"
        first = next_seq[meter]
        next_seq[meter] += per_message
        readings = ",".join(
            reading_json(meter, seq, base_ms + seq * 10_000)
            for seq in range(first, first + per_message)
        )
        payload = (
            f'{{"schema_version":1,"gateway_id":"{GATEWAY}","meter_id":"{meter_id}",'
            f'"readings":[{readings}]}}'
        )
        out.append((f"electrocloud/v1/{GATEWAY}/{meter_id}/readings", payload.encode()))
    return out


# --- sessions and preloading (parent) ------------------------------------------------------


def _client(client_id: str, port: int) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )


def create_session(port: int, client_id: str, share_group: str) -> None:
    """A persistent session subscribed to every readings topic in ``share_group``, offline."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    client = _client(client_id, port)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect("127.0.0.1", port, clean_start=True, properties=properties)
    client.loop_start()
    client.subscribe(f"$share/{share_group}/{TOPIC}", options=SubscribeOptions(qos=1))
    if not subscribed.wait(10):
        raise TimeoutError(f"no SUBACK for {client_id}")
    client.disconnect()
    client.loop_stop()


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 and wait for every PUBACK; returns the seconds it took."""
    client = _client("bench-preload", port)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(120)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def backend_config(
    path: Path,
    *,
    port: int,
    client_id: str,
    share_group: str,
    store: Path,
    batch: dict[str, Any] | None = None,
    receive_maximum: int = RECEIVE_MAXIMUM,
    http_port: int = 0,
) -> Path:
    config: dict[str, Any] = {
        "mqtt": {
            "url": f"mqtt://127.0.0.1:{port}",
            "client_id": client_id,
            "share_group": share_group,
            "session_expiry_s": SESSION_EXPIRY_S,
            "receive_maximum": receive_maximum,
        },
        "store": {"sqlite": {"path": str(store)}},
        "dead_letter": {"path": str(store.with_name(store.stem + "-dead.sqlite"))},
        "http": {"port": http_port},
    }
    if batch:
        config["batch"] = batch
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- worker side ---------------------------------------------------------------------------


def backend_run(
    config: str,
    expected_readings: int | None,
    timeout_s: float,
    count_file: str | None = None,
    stop_file: str | None = None,
) -> dict[str, Any]:
    """Run a BackendService until it wrote ``expected_readings``, or until ``stop_file`` exists.

    With several processes on one share group none knows its share in advance:
    each reports its count in ``count_file`` and the parent creates ``stop_file``
    once the sum is complete.
    """
    from backend.config import BackendSettings
    from backend.service import BackendService
    from electrocloud.config import load_settings

    service = BackendService(load_settings(BackendSettings, config))
    registry = service.metrics.registry

    def written() -> float:
        return registry.get_sample_value("electrocloud_backend_readings_written_total") or 0.0

    def received() -> float:
        return registry.get_sample_value("electrocloud_backend_messages_received_total") or 0.0

    stop = threading.Event()
    if not service.start(stop):
        raise RuntimeError("backend did not start")
    t0, cpu0 = time.time(), time.process_time()
    last_count, last_change = 0.0, t0
    try:
        while True:
            time.sleep(0.005)
            now, count = time.time(), written()
            if count != last_count:
                last_count, last_change = count, now
                if count_file is not None:
                    Path(count_file).write_text(str(int(count)))
            if expected_readings is not None and count >= expected_readings:
                break
            if stop_file is not None and os.path.exists(stop_file):
                break
            if now - t0 > timeout_s:
                raise TimeoutError(f"backend wrote {count} readings in {timeout_s} s")
        cpu = time.process_time() - cpu0
        messages = received()
        deferred = registry.get_sample_value("electrocloud_backend_messages_deferred_total")
    finally:
        stop.set()
        service.stop()
    return {
        "readings": last_count,
        "messages": messages,
        "deferred": deferred or 0.0,
        "t0": t0,
        "t1": last_change,
        "seconds": last_change - t0,
        "cpu_s": cpu,
    }


def floor_run(
    port: int, client_id: str, expected_messages: int, timeout_s: float
) -> dict[str, Any]:
    """A bare paho v5 subscriber resuming its session: parses each payload, nothing else."""
    import json

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    counts = {"messages": 0, "readings": 0}
    done = threading.Event()
    last = [0.0]

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        batch = json.loads(message.payload)
        counts["messages"] += 1
        counts["readings"] += len(batch["readings"])
        if counts["messages"] >= expected_messages:
            last[0] = time.time()
            done.set()

    client = _client(client_id, port)
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    t0, cpu0 = time.time(), time.process_time()
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            raise TimeoutError(f"floor got {counts['messages']} of {expected_messages} messages")
        cpu = time.process_time() - cpu0
    finally:
        client.disconnect()
        client.loop_stop()
    return {**counts, "t0": t0, "t1": last[0], "seconds": last[0] - t0, "cpu_s": cpu}


# --- parent side -----------------------------------------------------------------------------


def _wait_for_sum(count_files: list[Path], total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = []
        for path in count_files:
            try:
                counts.append(int(path.read_text() or 0))
            except (OSError, ValueError):
                counts.append(0)
        if sum(counts) >= total:
            return
        time.sleep(0.005)
    raise TimeoutError(f"two backend processes did not write {total} readings in {timeout_s} s")


def run(*, quick: bool, runs: int, work_dir: Path, log_dir: Path) -> Outcome:
    batched_messages = 500 if quick else 3000
    single_messages = 4000 if quick else 30_000
    per_message = 60
    outcome = Outcome("Backend ingestion: Mosquitto -> backend -> SQLite")
    outcome.method = (
        f"Mosquitto preloaded with {batched_messages:,} messages of {per_message} readings "
        f"({batched_messages * per_message:,} readings) and, separately, "
        f"{single_messages:,} single-reading messages, {METERS} meters, SDM630 readings with "
        "every field. Each run resumes a persistent session that holds all of them and is "
        "timed from connecting to the last reading stored. Project: BackendService (default "
        f"batch settings: 5,000 readings / 500 ms; Receive Maximum {RECEIVE_MAXIMUM}) writing "
        "to a fresh SQLite file (WAL, synchronous=FULL). Floor: a paho MQTT v5 subscriber with "
        "the same Receive Maximum that only runs json.loads on each payload. Runs alternate "
        "floor and project in one invocation after a warm-up run of each; the two-process "
        "runs use two backend worker processes on one share group and one SQLite file."
    )
    with (
        Mosquitto(work_dir, log_dir) as broker,
        Worker("backend-a", log_dir) as worker_a,
        Worker("backend-b", log_dir) as worker_b,
        Worker("backend-floor", log_dir) as floor_worker,
    ):
        port = broker.port
        counter = iter(range(1_000_000))

        def session(kind: str) -> tuple[str, str]:
            """A fresh share group with one offline session; returns (client id, group)."""
            n = next(counter)
            group = f"{kind}-{n}"
            client_id = f"bench-{kind}-{n}"
            create_session(port, client_id, group)
            return client_id, group

        def backend(
            worker: Worker,
            client_id: str,
            group: str,
            expected: int | None,
            tag: str,
            **shared: str,
        ) -> None:
            config = backend_config(
                work_dir / f"{client_id}.yaml",
                port=port,
                client_id=client_id,
                share_group=group,
                store=work_dir / f"readings-{tag}.sqlite",
            )
            worker.send(
                "benchmarks.backend:backend_run",
                config=str(config),
                expected_readings=expected,
                timeout_s=600,
                **shared,
            )

        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for mode, messages in (("batched", batched_messages), ("single", single_messages)):
            size = per_message if mode == "batched" else 1
            total = messages * size
            plan = []  # (kind, sessions) in run order, created before the preload
            for index in range(runs + 1):  # run 0 is the warm-up
                floor_session = session(f"floor-{mode}")
                backend_session = session(f"backend-{mode}")
                pair = None
                if mode == "batched":
                    group = f"pair-{index}"
                    pair = [(f"bench-pair-{index}-{k}", group) for k in "ab"]
                    for client_id, pair_group in pair:
                        create_session(port, client_id, pair_group)
                plan.append((floor_session, backend_session, pair))
            data = payloads(messages, size)
            publish_all(port, data)
            del data
            runs_of: dict[str, list[dict[str, Any]]] = {"floor": [], "backend": [], "pair": []}
            for index, (floor_session, backend_session, pair) in enumerate(plan):
                measured: dict[str, dict[str, Any]] = {}
                for side in ("floor", "backend") if index % 2 == 0 else ("backend", "floor"):
                    if side == "floor":
                        measured[side] = floor_worker.call(
                            "benchmarks.backend:floor_run",
                            port=port,
                            client_id=floor_session[0],
                            expected_messages=messages,
                            timeout_s=600,
                        )
                    else:
                        backend(worker_a, *backend_session, total, f"{mode}-{index}")
                        measured[side] = worker_a.receive(620)
                if index == 0:
                    continue  # warm-up
                runs_of["floor"].append(measured["floor"])
                runs_of["backend"].append(measured["backend"])
                if pair is not None:
                    tag = f"pair-{index}"
                    stop_file = work_dir / f"{tag}.stop"
                    count_files = [work_dir / f"{tag}-{k}.count" for k in "ab"]
                    for worker, (client_id, group), count_file in zip(
                        (worker_a, worker_b), pair, count_files, strict=True
                    ):
                        backend(
                            worker,
                            client_id,
                            group,
                            None,
                            tag,
                            count_file=str(count_file),
                            stop_file=str(stop_file),
                        )
                    _wait_for_sum(count_files, total, 600)
                    stop_file.touch()
                    both = [worker_a.receive(620), worker_b.receive(620)]
                    combined = sum(r["readings"] for r in both)
                    if combined != total:
                        outcome.notes.append(
                            f"two-process run {index}: {combined} readings written, "
                            f"expected {total}"
                        )
                    span = max(r["t1"] for r in both) - min(r["t0"] for r in both)
                    runs_of["pair"].append(
                        {
                            "readings": combined,
                            "seconds": span,
                            "shares": [r["readings"] for r in both],
                        }
                    )
            results[mode] = runs_of

    batched, single = results["batched"], results["single"]
    b_rate = [r["readings"] / r["seconds"] for r in batched["backend"]]
    f_rate = [r["readings"] / r["seconds"] for r in batched["floor"]]
    readings = outcome.add("backend, 60-reading messages", "readings/s", b_rate)
    outcome.add("floor, 60-reading messages", "readings/s", f_rate)
    outcome.add("ratio backend / floor, 60-reading messages", "", ratios(b_rate, f_rate))
    outcome.add(
        "backend CPU, 60-reading messages",
        "s per 100,000 readings",
        [1e5 * r["cpu_s"] / r["readings"] for r in batched["backend"]],
    )
    pair_rate = [r["readings"] / r["seconds"] for r in batched["pair"]]
    outcome.add("two backend processes, 60-reading messages", "readings/s", pair_rate)
    scaling = outcome.add("scaling factor two processes / one", "", ratios(pair_rate, b_rate))
    bs_rate = [r["messages"] / r["seconds"] for r in single["backend"]]
    fs_rate = [r["messages"] / r["seconds"] for r in single["floor"]]
    outcome.add("backend, single-reading messages", "messages/s", bs_rate)
    outcome.add("floor, single-reading messages", "messages/s", fs_rate)
    message_ratio = outcome.add(
        "ratio backend / floor, single-reading messages", "", ratios(bs_rate, fs_rate)
    )
    outcome.add(
        "backend CPU, single-reading messages",
        "s per 10,000 messages",
        [1e4 * r["cpu_s"] / r["messages"] for r in single["backend"]],
    )
    outcome.target(
        f">= {READINGS_TARGET:,} readings/s per process, 60-reading messages",
        readings.median >= READINGS_TARGET,
        f"{fmt(readings.median)} readings/s",
    )
    outcome.target(
        f">= {MESSAGE_RATIO_TARGET} x the floor's messages/s, single-reading messages",
        message_ratio.median >= MESSAGE_RATIO_TARGET,
        f"{fmt(message_ratio.median)} x",
    )
    outcome.notes.append(
        f"scaling factor with two processes: {fmt(scaling.median)} (no target; 2 cores shared "
        "with Mosquitto, and both processes write one SQLite file, one writer at a time)"
    )
    return outcome
