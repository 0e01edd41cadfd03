"""The shipped broker config (mosquitto/mosquitto.conf, mosquitto/acl) on a real mosquitto,
with a password file made by mosquitto/add-gateway.sh and certificates made by
mosquitto/make-certs.sh."""

from __future__ import annotations

import os
import queue
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from backend_support import (
    InProcessBackend,
    backend_config,
    base_ms,
    batch_payload,
    make_readings,
    wait_until,
)
from paho.mqtt.reasoncodes import ReasonCode
from production_support import (
    BACKEND_USER,
    MOSQUITTO_DIR,
    REPO,
    Probe,
    ShippedConfigBroker,
    probe,
    run_script,
)
from services import require_binary

from electrocloud.contract import readings_subscription, readings_topic, status_topic
from electrocloud.stores.sqlite import SqliteStore

ADD_GATEWAY = MOSQUITTO_DIR / "add-gateway.sh"
MAKE_CERTS = MOSQUITTO_DIR / "make-certs.sh"
PASSWORDS = {"gw-a": "pw-of-gateway-a", "gw-b": "pw-of-gateway-b", BACKEND_USER: "pw-backend"}


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A password file and certificates, made by the shipped scripts."""
    require_binary("mosquitto_passwd", "mosquitto")
    require_binary("openssl", "openssl")
    directory = tmp_path_factory.mktemp("broker-secrets")
    passwd = directory / "passwd"
    for gateway in ("gw-a", "gw-b"):
        run_script(ADD_GATEWAY, str(passwd), gateway, env={"GATEWAY_PASSWORD": PASSWORDS[gateway]})
    # The backend's account, as mosquitto/entrypoint.sh writes it at container start.
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), BACKEND_USER, PASSWORDS[BACKEND_USER]],
        check=True,
    )
    certs = directory / "certs"
    run_script(MAKE_CERTS, str(certs), "server", "localhost", "127.0.0.1")
    run_script(MAKE_CERTS, str(certs), "client", "gw-a")
    return directory


@pytest.fixture
def broker(tmp_path: Path, secrets_dir: Path) -> Iterator[ShippedConfigBroker]:
    running = ShippedConfigBroker(
        tmp_path / "broker", password_file=secrets_dir / "passwd", cert_dir=secrets_dir / "certs"
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def connected(port: int, user: str, **kwargs: object) -> Probe:
    client = probe(port, f"test-{user}", username=user, password=PASSWORDS[user], **kwargs)  # type: ignore[arg-type]
    reason = client.wait_connack()
    assert not reason.is_failure, f"{user} refused: {reason}"
    return client


def publish_once(port: int, user: str, topic: str, payload: bytes) -> ReasonCode:
    """Publish one retained QoS 1 message on a fresh connection; the PUBACK's reason code."""
    client = connected(port, user)
    try:
        return client.publish(topic, payload, retain=True)
    finally:
        client.close()


def test_anonymous_and_wrong_password_are_refused(broker: ShippedConfigBroker) -> None:
    anonymous = probe(broker.port, "anonymous")
    wrong = probe(broker.port, "wrong", username="gw-a", password="not-the-password")
    unknown = probe(broker.port, "unknown", username="gw-z", password="pw-of-gateway-a")
    try:
        for client in (anonymous, wrong, unknown):
            reason = client.wait_connack()
            assert reason.is_failure
            assert reason.getName() in ("Not authorized", "Bad user name or password")
    finally:
        for client in (anonymous, wrong, unknown):
            client.close()


def test_gateway_cannot_write_another_gateways_topics(
    broker: ShippedConfigBroker, tmp_path: Path
) -> None:
    """The real backend, on the shipped ACL, stores gw-a's readings and nothing forged."""
    config = backend_config(
        tmp_path,
        broker.port,
        name="acl",
        mqtt={"username": BACKEND_USER, "password": PASSWORDS[BACKEND_USER]},
    )
    base = base_ms()
    own = make_readings(1, 0, 3, base)
    forged = make_readings(2, 0, 3, base)
    with InProcessBackend(tmp_path, config):
        # Forged: gw-a writing as gw-b, readings and status. Published first, so they
        # would be stored before gw-a's own readings if the broker let them in. One
        # connection each: mosquitto 2.0.11 drops a client after refusing its publish.
        for topic, payload in (
            (readings_topic("gw-b", "m-b"), batch_payload("gw-b", "m-b", forged)),
            (status_topic("gw-b"), b'{"state": "forged"}'),
        ):
            reason = publish_once(broker.port, "gw-a", topic, payload)
            assert reason.getName() == "Not authorized", (topic, reason)
        for topic, payload in (
            (readings_topic("gw-a", "m-a"), batch_payload("gw-a", "m-a", own)),
            (status_topic("gw-a"), b"{}"),
        ):
            assert not publish_once(broker.port, "gw-a", topic, payload).is_failure
        store = SqliteStore(tmp_path / "readings.sqlite")
        try:
            wait_until(lambda: store.count() == 3, 30, "gw-a's readings in the store")
            assert store.meter_ids() == ["m-a"]
            assert [r.seq for r in store.readings(None, 0, 2**62)] == [0, 1, 2]
        finally:
            store.close()

    # The backend user reads statuses: gw-a's own retained status is there, the forged
    # one for gw-b is not.
    backend = connected(broker.port, BACKEND_USER)
    try:
        assert not any(r.is_failure for r in backend.subscribe("electrocloud/v1/+/status"))
        message = backend.next_message()
        assert message.topic == status_topic("gw-a")
        with pytest.raises(queue.Empty):
            backend.messages.get(timeout=0.5)  # no second retained status (gw-b's)
    finally:
        backend.close()


def test_only_the_backend_reads(broker: ShippedConfigBroker) -> None:
    """Gateways may subscribe (mosquitto checks read access per delivered message) but
    receive nothing: not other gateways' readings, not retained statuses."""
    assert not publish_once(broker.port, "gw-a", status_topic("gw-a"), b"{}").is_failure
    gateway_b = connected(broker.port, "gw-b")
    backend = connected(broker.port, BACKEND_USER)
    try:
        for topic in ("electrocloud/v1/#", readings_subscription(), status_topic("gw-a")):
            gateway_b.subscribe(topic)
        (reason,) = backend.subscribe(readings_subscription("electrocloud-backend"))
        assert not reason.is_failure, reason
        payload = batch_payload("gw-a", "m-a", make_readings(0, 0, 1, base_ms()))
        assert not publish_once(
            broker.port, "gw-a", readings_topic("gw-a", "m-a"), payload
        ).is_failure
        assert backend.next_message().payload == payload
        # A SUBACK is queued behind anything the broker sent gw-b before it, and paho
        # handles packets in order: after it, gw-b has seen all it will ever see.
        gateway_b.subscribe("electrocloud/v1/gw-b/fence")
        assert gateway_b.messages.empty(), gateway_b.messages.get().topic
    finally:
        gateway_b.close()
        backend.close()


def test_tls_listener_needs_the_private_ca_and_a_client_certificate(
    broker: ShippedConfigBroker, secrets_dir: Path
) -> None:
    certs = secrets_dir / "certs"
    ca = certs / "ca.crt"
    client_cert = (certs / "gw-a.crt", certs / "gw-a.key")

    # Trusting the test CA, with a client certificate and the password: accepted, and
    # what it publishes reaches the backend on the plain listener.
    backend = connected(broker.port, BACKEND_USER)
    gateway = connected(broker.tls_port, "gw-a", tls=True, ca_file=ca, cert=client_cert)
    try:
        backend.subscribe(readings_subscription())
        payload = batch_payload("gw-a", "m-tls", make_readings(0, 0, 1, base_ms()))
        gateway.publish(readings_topic("gw-a", "m-tls"), payload)
        assert backend.next_message().payload == payload
    finally:
        gateway.close()
        backend.close()

    # Without the test CA the client cannot verify the server: no connection.
    with pytest.raises(ssl.SSLCertVerificationError):
        probe(broker.tls_port, "no-ca", username="gw-a", password=PASSWORDS["gw-a"], tls=True)

    # Trusting the CA but without a client certificate: the broker refuses the handshake
    # (with TLS 1.3 the client learns it after its own side of the handshake).
    try:
        no_cert = probe(
            broker.tls_port,
            "no-cert",
            username="gw-a",
            password=PASSWORDS["gw-a"],
            tls=True,
            ca_file=ca,
        )
    except (ssl.SSLError, ConnectionError):
        return
    try:
        assert no_cert.disconnected.wait(10), "a client without a certificate stayed connected"
        assert no_cert.connack.empty(), "a client without a certificate got a CONNACK"
    finally:
        no_cert.close()


def test_add_gateway_refuses_bad_ids_and_generates_passwords(tmp_path: Path) -> None:
    require_binary("mosquitto_passwd", "mosquitto")
    passwd = tmp_path / "passwd"
    for bad_id, reason in (
        ("gw/01", "must match"),
        ("gw 01", "must match"),
        ("#", "must match"),
        (BACKEND_USER, "backend's user"),
    ):
        result = subprocess.run(
            ["sh", str(ADD_GATEWAY), str(passwd), bad_id], capture_output=True, text=True
        )
        assert result.returncode == 2 and reason in result.stderr, (bad_id, result.stderr)
    result = subprocess.run(
        ["sh", str(ADD_GATEWAY), str(passwd), "gw-x"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/sbin", "GATEWAY_PASSWORD": "CHANGE_ME"},
    )
    assert result.returncode == 2 and "placeholder" in result.stderr
    generated = run_script(ADD_GATEWAY, str(passwd), "gw-x").strip()
    assert len(generated) >= 24
    assert passwd.stat().st_mode & 0o077 == 0, "the password file must be private"
    lines = passwd.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["gw-x"]
    assert generated not in passwd.read_text(), "stored hashed, not in clear"


def test_entrypoint_refuses_placeholder_backend_password() -> None:
    for value in ("CHANGE_ME", "", "<backend-password>"):
        result = subprocess.run(
            ["sh", str(MOSQUITTO_DIR / "entrypoint.sh")],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "MQTT_BACKEND_PASSWORD": value},
        )
        assert result.returncode == 78, result.stderr
        assert "MQTT_BACKEND_PASSWORD" in result.stderr


def test_compose_healthcheck_logs_in_as_the_backend(broker: ShippedConfigBroker) -> None:
    """The mosquitto healthcheck of docker-compose.yml, run against the shipped config."""
    require_binary("mosquitto_sub", "mosquitto-clients")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    kind, command = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("$$", "$").replace("-p 1883", f"-p {broker.port}")
    for password, healthy in ((PASSWORDS[BACKEND_USER], True), ("wrong", False)):
        result = subprocess.run(
            ["sh", "-c", command],
            env={"PATH": os.environ["PATH"], "MQTT_BACKEND_PASSWORD": password},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (result.returncode == 0) is healthy, (password, result.stderr)
