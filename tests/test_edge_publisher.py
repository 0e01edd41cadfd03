"""Edge publisher against a real Mosquitto: delivery, order, PUBACK-gated deletes,
outages, retained status, MQTT v5 refusals and the 3.1.1 fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from edge_mqtt_recorder import Recorder, check_delivery, make_sample, wait_until
from services import MosquittoBroker

from edge.config import MqttSettings, QueueSettings
from edge.publisher import Publisher
from edge.queue import ReadingQueue

GATEWAY = "gw-test"


def open_queue(tmp_path: Path) -> ReadingQueue:
    path = tmp_path / "queue.sqlite"
    return ReadingQueue(path, QueueSettings(path=path))


def mqtt_settings(url: str, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "url": url,
        "max_batch_readings": 20,
        "max_inflight": 5,
        "keepalive_s": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    values.update(overrides)
    return MqttSettings(**values)  # type: ignore[arg-type]


def make_publisher(
    queue: ReadingQueue, url: str, shutdown_grace_s: float = 5.0, **overrides: object
) -> Publisher:
    return Publisher(
        gateway_id=GATEWAY,
        mqtt=mqtt_settings(url, **overrides),
        queue=queue,
        agent_version="9.9.9-test",
        shutdown_grace_s=shutdown_grace_s,
    )


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        await publisher.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def append_rounds(queue: ReadingQueue, counts: dict[str, int], rounds: int, per_round: int) -> None:
    """Append ``rounds`` commits of ``per_round`` readings per meter, continuing ``counts``."""
    for _ in range(rounds):
        samples = []
        for meter_id in counts:
            for _ in range(per_round):
                samples.append(make_sample(meter_id, counts[meter_id]))
                counts[meter_id] += 1
        queue.append(samples)


def retained_status(port: int) -> str:
    """The retained gateway status a newly connecting client gets."""
    with Recorder(port, persistent=False) as fresh:
        wait_until(lambda: bool(fresh.retained_statuses()), 10, "retained status")
        (status,) = fresh.retained_statuses()
        assert status.gateway_id == GATEWAY and status.agent_version == "9.9.9-test"
        return status.state


@pytest.mark.parametrize("max_inflight", [1, 5])
def test_every_reading_arrives_in_order_in_bounded_batches(
    tmp_path: Path, mosquitto: MosquittoBroker, max_inflight: int
) -> None:
    queue = open_queue(tmp_path)
    counts = {"m1": 0, "m2": 0, "m3": 0}
    append_rounds(queue, counts, rounds=3, per_round=30)  # a backlog before the start
    publisher = make_publisher(queue, mosquitto.url, max_inflight=max_inflight)

    async def scenario() -> None:
        async with running(publisher):
            for _ in range(8):  # and live commits while running
                append_rounds(queue, counts, rounds=1, per_round=20)
                publisher.notify()
                await asyncio.sleep(0.05)
            await eventually(lambda: queue.depth() == 0, "queue drained")
            await eventually(lambda: recorder.distinct_count() == 750, "750 readings received")

    with Recorder(mosquitto.port) as recorder:
        asyncio.run(scenario())
        assert check_delivery(recorder.readings(), counts) == 0
        assert all(len(b.readings) <= 20 for b in recorder.batches())
        assert all(b.gateway_id == GATEWAY for b in recorder.batches())
    assert publisher.stats.published_readings == 750
    assert publisher.stats.published_messages == len(recorder.batches())
    assert publisher.stats.last_publish_ms is not None
    assert queue.stats.acked == 750
    assert publisher.stats.protocol == "5"  # mosquitto 2 speaks v5; "auto" uses it
    queue.close()


def test_keeps_to_the_brokers_receive_maximum(tmp_path: Path) -> None:
    """paho ignores MQTT v5 Receive Maximum; the publisher must not exceed it."""
    queue = open_queue(tmp_path)
    counts = {"m1": 0, "m2": 0}
    append_rounds(queue, counts, rounds=1, per_round=100)
    peak = 0

    with MosquittoBroker(tmp_path / "mq", extra_config="max_inflight_messages 2") as broker:
        publisher = make_publisher(queue, broker.url, max_inflight=10, max_batch_readings=5)

        async def scenario() -> None:
            nonlocal peak
            async with running(publisher):
                deadline = time.monotonic() + 30
                while queue.depth():
                    assert time.monotonic() < deadline, "queue not drained in 30 s"
                    peak = max(peak, publisher.stats.in_flight)
                    await asyncio.sleep(0)  # look after every turn of the drain loop

        with Recorder(broker.port) as recorder:
            asyncio.run(scenario())
            wait_until(lambda: recorder.distinct_count() == 200, 10, "200 readings")
            assert check_delivery(recorder.readings(), counts) == 0
    assert peak == 2
    queue.close()


def test_retained_online_then_offline_on_clean_close(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    queue = open_queue(tmp_path)
    publisher = make_publisher(queue, mosquitto.url)
    closed_after_ms = 0

    async def scenario() -> None:
        nonlocal closed_after_ms
        task = asyncio.create_task(publisher.run())
        await eventually(lambda: publisher.stats.connected, "connected")
        assert await asyncio.to_thread(retained_status, mosquitto.port) == "online"
        closed_after_ms = int(time.time() * 1000)
        await publisher.close()
        assert task.done() and task.exception() is None

    asyncio.run(scenario())
    with Recorder(mosquitto.port, persistent=False) as fresh:
        wait_until(lambda: bool(fresh.retained_statuses()), 10, "retained status")
        (status,) = fresh.retained_statuses()
    # The agent's own offline message, sent at close (the Last Will's ts is the connect time).
    assert status.state == "offline" and status.ts_ms >= closed_after_ms
    queue.close()


def test_status_reports_the_backlog_and_is_refreshed(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    queue = open_queue(tmp_path)
    counts = {"m1": 0, "m2": 0}
    append_rounds(queue, counts, rounds=3, per_round=10)  # 60 readings wait before connecting
    publisher = make_publisher(queue, mosquitto.url, status_interval_s=1)

    async def scenario(recorder: Recorder) -> None:
        async with running(publisher):
            await eventually(lambda: queue.depth() == 0, "queue drained")
            await eventually(
                lambda: any(s.queue_depth == 0 for s in recorder.statuses()), "a refreshed status"
            )

    with Recorder(mosquitto.port, persistent=False) as recorder:
        asyncio.run(scenario(recorder))
        statuses = recorder.statuses()
    online = [s for s in statuses if s.state == "online"]
    # Published on connect, before draining: the whole backlog, and its oldest meter time.
    assert online[0].queue_depth == 60
    assert online[0].oldest_queued_ts_ms == make_sample("m1", 0).ts_ms
    refreshed = [s for s in online[1:] if s.queue_depth == 0]
    assert refreshed and refreshed[0].oldest_queued_ts_ms is None
    queue.close()


def test_cancelling_run_also_leaves_offline_status(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    queue = open_queue(tmp_path)
    publisher = make_publisher(queue, mosquitto.url)

    async def scenario() -> int:
        task = asyncio.create_task(publisher.run())
        await eventually(lambda: publisher.stats.connected, "connected")
        cancelled_after_ms = int(time.time() * 1000)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return cancelled_after_ms

    cancelled_after_ms = asyncio.run(scenario())
    with Recorder(mosquitto.port, persistent=False) as fresh:
        wait_until(lambda: bool(fresh.retained_statuses()), 10, "retained status")
        (status,) = fresh.retained_statuses()
    assert status.state == "offline" and status.ts_ms >= cancelled_after_ms
    queue.close()


def test_rows_are_deleted_only_after_the_puback(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """A frozen mosquitto accepts the bytes (TCP) but sends no PUBACK: nothing may be deleted."""
    queue = open_queue(tmp_path)
    publisher = make_publisher(queue, mosquitto.url)
    counts = {"m1": 0, "m2": 0}
    assert mosquitto.process is not None
    broker_pid = mosquitto.process.pid

    async def scenario() -> None:
        async with running(publisher):
            await eventually(lambda: publisher.stats.connected, "connected")
            mosquitto.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                append_rounds(queue, counts, rounds=1, per_round=30)
                publisher.notify()
                await eventually(lambda: publisher.stats.in_flight == 4, "4 messages in flight")
                await asyncio.sleep(0.5)  # time for a wrong implementation to delete early
                assert queue.depth() == 60
                assert publisher.stats.published_messages == 0
            finally:
                mosquitto.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            await eventually(lambda: queue.depth() == 0, "queue drained after SIGCONT")
            await eventually(lambda: recorder.distinct_count() == 60, "60 readings received")

    with Recorder(mosquitto.port) as recorder:
        asyncio.run(scenario())
        assert check_delivery(recorder.readings(), counts) == 0
    assert mosquitto.process is not None and mosquitto.process.pid == broker_pid
    queue.close()


def test_close_leaves_unacknowledged_messages_queued(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    queue = open_queue(tmp_path)
    counts = {"m1": 0}
    first = make_publisher(queue, mosquitto.url, shutdown_grace_s=0.3)

    async def close_while_frozen() -> None:
        task = asyncio.create_task(first.run())
        await eventually(lambda: first.stats.connected, "connected")
        mosquitto.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            append_rounds(queue, counts, rounds=1, per_round=40)
            first.notify()
            await eventually(lambda: first.stats.in_flight == 2, "2 messages in flight")
            await first.close()
            assert task.done() and task.exception() is None  # ended by itself, not cancelled
            assert queue.depth() == 40
        finally:
            mosquitto.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    async def next_start() -> None:
        second = make_publisher(queue, mosquitto.url)
        async with running(second):
            await eventually(lambda: queue.depth() == 0, "drained by the next start")

    with Recorder(mosquitto.port) as recorder:
        asyncio.run(close_while_frozen())
        asyncio.run(next_start())
        wait_until(lambda: recorder.distinct_count() == 40, 10, "40 readings")
        # The thawed broker may still deliver what it had buffered: exact duplicates only.
        assert check_delivery(recorder.readings(), counts) <= 40
    queue.close()


def test_broker_outage_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.publisher")
    queue = open_queue(tmp_path)
    publisher = make_publisher(queue, mosquitto.url)
    counts = {"m1": 0, "m2": 0, "m3": 0}
    producing = True

    async def produce() -> None:
        while producing:
            append_rounds(queue, counts, rounds=1, per_round=2)
            publisher.notify()
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        nonlocal producing
        async with running(publisher):
            producer = asyncio.create_task(produce())
            await eventually(lambda: recorder.distinct_count() >= 60, "readings before outage")
            await asyncio.to_thread(mosquitto.stop)
            outage_start_total = sum(counts.values())
            await asyncio.sleep(3)  # readings keep being appended meanwhile
            assert not publisher.stats.connected
            # Nothing appended during the outage was deleted.
            assert queue.depth() >= sum(counts.values()) - outage_start_total > 0
            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: publisher.stats.connected, "reconnected")
            await asyncio.sleep(0.3)
            producing = False
            await producer
            await eventually(lambda: queue.depth() == 0, "queue drained")
            total = sum(counts.values())
            try:
                await eventually(lambda: recorder.distinct_count() == total, f"{total} readings")
            except AssertionError:
                got = {m: sorted({r.seq for r in rs}) for m, rs in recorder.readings().items()}
                for m, seqs in got.items():
                    missing = sorted(set(range(counts[m])) - set(seqs))
                    print("DEBUG", m, len(seqs), counts[m], missing[:5], missing[-5:], len(missing))
                raise

    with Recorder(mosquitto.port) as recorder:
        asyncio.run(scenario())
        duplicates = check_delivery(recorder.readings(), counts)
    # Only what was in flight when the broker went away may arrive twice.
    assert duplicates <= 5 * 20
    assert publisher.stats.reconnects >= 1
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.publisher"]
    assert len([m for m in messages if m.startswith("lost MQTT broker")]) == 1
    assert len([m for m in messages if "is back after" in m]) == 1
    assert not [m for m in messages if m.startswith("cannot connect")]  # said "lost" already
    queue.close()


def test_starting_before_the_broker_retries_with_backoff(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.publisher")
    mosquitto.stop()
    queue = open_queue(tmp_path)
    counts = {"m1": 0}
    append_rounds(queue, counts, rounds=1, per_round=25)
    publisher = make_publisher(queue, mosquitto.url)

    async def scenario() -> None:
        async with running(publisher):
            await eventually(lambda: publisher.stats.connect_failures >= 4, "4 failed attempts")
            assert queue.depth() == 25
            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: queue.depth() == 0, "drained once the broker is up")

    asyncio.run(scenario())
    messages = [r for r in caplog.records if r.name == "edge.publisher"]
    cannot = [r for r in messages if r.getMessage().startswith("cannot connect")]
    assert len(cannot) == 1 and cannot[0].levelno == logging.WARNING
    retries = [r for r in messages if "still unreachable" in r.getMessage()]
    assert retries and all(r.levelno == logging.DEBUG for r in retries)
    assert publisher.stats.reconnects == 0 and publisher.stats.published_readings == 25
    queue.close()


def test_refused_publish_keeps_the_rows_until_the_broker_accepts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT v5 PUBACK "Not authorized" (an ACL) is not a delivery."""
    caplog.set_level(logging.INFO, logger="edge.publisher")
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite electrocloud/v1/+/status\ntopic read electrocloud/#\n")
    queue = open_queue(tmp_path)
    counts = {"m1": 0}
    append_rounds(queue, counts, rounds=1, per_round=50)

    with MosquittoBroker(tmp_path / "mq", extra_config=f"acl_file {acl}") as broker:
        publisher = make_publisher(queue, broker.url)

        async def scenario() -> None:
            async with running(publisher):
                await eventually(lambda: publisher.stats.refused_messages >= 2, "2 refusals")
                assert queue.depth() == 50
                assert queue.stats.acked == 0
                assert recorder.distinct_count() == 0
                acl.write_text("topic readwrite electrocloud/#\n")
                broker.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
                await eventually(lambda: queue.depth() == 0, "queue drained once allowed")
                await eventually(lambda: recorder.distinct_count() == 50, "50 readings")

        with Recorder(broker.port) as recorder:
            asyncio.run(scenario())
            assert check_delivery(recorder.readings(), counts) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.publisher"]
    assert len([m for m in messages if "refused a message: Not authorized" in m]) == 1
    assert len([m for m in messages if "accepts the readings again" in m]) == 1
    queue.close()


class V311OnlyFront:
    """A TCP front for the real broker that answers MQTT v5 CONNECTs like a 3.1.1 broker.

    An MQTT 3.1.1 broker refuses protocol level 5 with CONNACK return code 1
    ("unacceptable protocol version"); everything else is piped to Mosquitto.
    """

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.v5_attempts = 0
        self.v311_connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        while len(head) < 12:  # fixed header + protocol name "MQTT" + level
            chunk = await reader.read(4096)
            if not chunk:
                writer.close()
                return
            head += chunk
        length_bytes = next(i for i in range(1, 5) if head[i] < 0x80)  # remaining-length varint
        level = head[1 + length_bytes + 6]
        if level == 5:
            self.v5_attempts += 1
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        self.v311_connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        up_writer.write(head)
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def drop_connections(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.drop_connections()
        self.server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def test_auto_falls_back_to_mqtt_311_and_remembers(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    queue = open_queue(tmp_path)
    counts = {"m1": 0}
    append_rounds(queue, counts, rounds=1, per_round=40)
    front = V311OnlyFront(mosquitto.port)

    async def scenario() -> Publisher:
        port = await front.start()
        publisher = make_publisher(queue, f"mqtt://127.0.0.1:{port}", protocol="auto")
        async with running(publisher):
            await eventually(lambda: queue.depth() == 0, "drained through the 3.1.1 front")
            assert publisher.stats.protocol == "3.1.1"
            front.drop_connections()  # a lost connection: the reconnect goes straight to 3.1.1
            await eventually(lambda: publisher.stats.reconnects == 1, "reconnected")
            append_rounds(queue, counts, rounds=1, per_round=10)
            publisher.notify()
            await eventually(lambda: queue.depth() == 0, "drained after reconnecting")
        await front.close()
        return publisher

    with Recorder(mosquitto.port) as recorder:
        publisher = asyncio.run(scenario())
        wait_until(lambda: recorder.distinct_count() == 50, 10, "50 readings")
        assert check_delivery(recorder.readings(), counts) == 0
    assert front.v5_attempts == 1
    assert front.v311_connections == 2
    assert publisher.stats.protocol == "3.1.1"
    queue.close()


def test_protocol_5_does_not_fall_back(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    queue = open_queue(tmp_path)
    append_rounds(queue, {"m1": 0}, rounds=1, per_round=5)
    front = V311OnlyFront(mosquitto.port)

    async def scenario() -> Publisher:
        port = await front.start()
        publisher = make_publisher(queue, f"mqtt://127.0.0.1:{port}", protocol="5")
        async with running(publisher):
            await eventually(lambda: front.v5_attempts >= 3, "3 refused v5 attempts")
        await front.close()
        return publisher

    publisher = asyncio.run(scenario())
    assert front.v311_connections == 0
    assert publisher.stats.connect_failures >= 3
    assert publisher.stats.published_messages == 0
    assert queue.depth() == 5
    queue.close()


def _openssl(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=electrocloud-test-ca", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extra,
                 cwd=directory)  # fmt: skip
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key",
                                                "client.crt", "client.key")}  # fmt: skip


def test_mutual_tls_with_username_and_password(tmp_path: Path) -> None:
    from services import require_binary

    require_binary("openssl", "openssl")
    passwd_tool = require_binary("mosquitto_passwd", "mosquitto")
    certs = make_certificates(tmp_path / "certs")
    passwords = tmp_path / "passwords"
    import subprocess

    subprocess.run([passwd_tool, "-b", "-c", str(passwords), "edge", "s3cret"], check=True)
    tls_config = "\n".join(
        [
            f"cafile {certs['ca.crt']}",
            f"certfile {certs['server.crt']}",
            f"keyfile {certs['server.key']}",
            "require_certificate true",
            "allow_anonymous false",
            f"password_file {passwords}",
        ]
    )
    queue = open_queue(tmp_path)
    counts = {"m1": 0, "m2": 0}
    append_rounds(queue, counts, rounds=2, per_round=15)

    with MosquittoBroker(tmp_path / "mq", extra_config=tls_config) as broker:
        tls = {"ca_file": certs["ca.crt"], "cert_file": certs["client.crt"],
               "key_file": certs["client.key"]}  # fmt: skip
        publisher = make_publisher(
            queue,
            f"mqtts://127.0.0.1:{broker.port}",
            tls=tls,
            username="edge",
            password="s3cret",
        )

        async def scenario() -> None:
            async with running(publisher):
                await eventually(lambda: queue.depth() == 0, "drained over TLS")

        with Recorder(
            broker.port,
            tls=(certs["ca.crt"], certs["client.crt"], certs["client.key"]),
            username="edge",
            password="s3cret",
        ) as recorder:
            asyncio.run(scenario())
            wait_until(lambda: recorder.distinct_count() == 60, 10, "60 readings over TLS")
            assert check_delivery(recorder.readings(), counts) == 0

        # The same broker refuses a client without the password: nothing is deleted.
        queue2 = ReadingQueue(tmp_path / "q2.sqlite", QueueSettings(path=tmp_path / "q2.sqlite"))
        append_rounds(queue2, {"m9": 0}, rounds=1, per_round=3)
        wrong = make_publisher(
            queue2, f"mqtts://127.0.0.1:{broker.port}", tls=tls, username="edge", password="x"
        )

        async def refused() -> None:
            async with running(wrong):
                await eventually(lambda: wrong.stats.connect_failures >= 2, "2 failures")

        asyncio.run(refused())
        assert queue2.depth() == 3 and not wrong.stats.connected
        queue2.close()
    queue.close()
