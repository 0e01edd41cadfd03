"""Backend configuration (``electrocloud backend --config backend.yaml``).

Environment variables override the file: ``ELECTROCLOUD_BACKEND_<FIELD>__<SUBFIELD>``,
e.g. ``ELECTROCLOUD_BACKEND_MQTT__PASSWORD`` or ``ELECTROCLOUD_BACKEND_STORE__INFLUXDB__TOKEN``.
``backend.example.yaml`` documents every field.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from electrocloud.config import Section, ServiceSettings
from electrocloud.contract import ID_PATTERN
from electrocloud.mqtt_settings import BrokerSettings
from electrocloud.secrets import check_not_placeholder

Id = Annotated[str, Field(pattern=ID_PATTERN)]
PositiveSeconds = Annotated[float, Field(gt=0)]

#: MQTT v5 Session Expiry Interval is a four-byte integer.
MAX_SESSION_EXPIRY_S = 2**32 - 1


class MqttSettings(BrokerSettings):
    # The broker keys the persistent session by client id: it must stay the same
    # across restarts of one process and differ between processes.
    client_id: str | None = None  # default: electrocloud-backend-<hostname>-<instance>
    instance: Id = "0"  # tells apart several backend processes on one host
    share_group: Id = "electrocloud-backend"  # processes in one group split the traffic
    # "3.1.1" only for brokers without MQTT v5 (e.g. an embedded amqtt): no shared
    # subscription, so exactly one backend process; no Receive Maximum either.
    protocol: Literal["5", "3.1.1"] = "5"
    # How long the broker keeps the session (and messages for it) while this process
    # is away. At least a minute: the guarantees rest on the session outliving a restart.
    session_expiry_s: int = Field(default=7 * 86400, ge=60, le=MAX_SESSION_EXPIRY_S)
    # Unacknowledged QoS 1 messages the broker may have in flight to this process.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 30.0

    def effective_client_id(self) -> str:
        if self.client_id:
            return self.client_id
        host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
        return f"electrocloud-backend-{host}-{self.instance}"


class SqliteSettings(Section):
    path: Path = Path("electrocloud.sqlite")
    busy_timeout_ms: int = Field(default=5000, ge=0)  # wait for another writer's lock


class InfluxSettings(Section):
    url: str  # e.g. http://localhost:8086
    org: str
    bucket: str
    token: SecretStr
    timeout_s: PositiveSeconds = 10.0

    @field_validator("token")
    @classmethod
    def _real_token(cls, value: SecretStr) -> SecretStr:
        check_not_placeholder(value.get_secret_value(), "token")
        return value


class StoreSettings(Section):
    type: Literal["sqlite", "influxdb"] = "sqlite"
    sqlite: SqliteSettings = SqliteSettings()
    influxdb: InfluxSettings | None = None
    # Backoff between retries while the store is unavailable (doubles up to the max).
    retry_min_s: PositiveSeconds = 0.5
    retry_max_s: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _influx_needs_settings(self) -> StoreSettings:
        if self.type == "influxdb" and self.influxdb is None:
            raise ValueError("type influxdb needs an influxdb section (url, org, bucket, token)")
        return self


class BatchSettings(Section):
    """Micro-batches: a write happens at max_readings or max_delay_ms, whichever comes first."""

    max_readings: int = Field(default=5000, ge=1)
    max_delay_ms: int = Field(default=200, ge=1)
    # Readings held in memory (received, not yet written). Past it messages are left
    # unacknowledged at the broker, which redelivers them later.
    backlog_max_readings: int = Field(default=100_000, ge=1)


class DeadLetterSettings(Section):
    path: Path = Path("dead-letters.sqlite")  # SQLite file, created if missing
    max_payload_bytes: int = Field(default=64 * 1024, ge=0)  # raw payload kept per letter


class HttpSettings(Section):
    host: str = "127.0.0.1"  # 0.0.0.0 to let a scraper or orchestrator from outside in
    port: int = Field(default=9180, ge=0, le=65535)  # 0 = no HTTP server


class BackendSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ELECTROCLOUD_BACKEND_")

    mqtt: MqttSettings = MqttSettings()
    store: StoreSettings = StoreSettings()
    batch: BatchSettings = BatchSettings()
    registry: Path | None = None  # meter registry YAML; none = accept every meter
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    http: HttpSettings = HttpSettings()
    max_future_s: float = Field(default=300.0, ge=0)  # reject readings dated further ahead
    shutdown_timeout_s: float = Field(default=10.0, ge=0)  # to flush the backlog on SIGTERM
