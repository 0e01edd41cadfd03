"""Edge agent configuration (``electrocloud edge --config edge.yaml``).

Environment variables override the file: ``ELECTROCLOUD_EDGE_<FIELD>__<SUBFIELD>``,
e.g. ``ELECTROCLOUD_EDGE_MQTT__PASSWORD`` or ``ELECTROCLOUD_EDGE_GATEWAY_ID``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from pydantic_settings import SettingsConfigDict

from electrocloud.config import Section, ServiceSettings
from electrocloud.contract import ID_PATTERN
from electrocloud.mqtt_settings import BrokerSettings

Id = Annotated[str, Field(pattern=ID_PATTERN)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class MqttSettings(BrokerSettings):
    client_id: str | None = None  # default: electrocloud-edge-<gateway_id>
    protocol: Literal["auto", "5", "3.1.1"] = "auto"  # auto: MQTT v5, else fall back to 3.1.1
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    max_batch_readings: int = Field(default=60, ge=1, le=1000)  # readings per message
    max_inflight: int = Field(default=20, ge=1, le=1000)  # QoS 1 messages awaiting PUBACK
    reconnect_min_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 60.0
    status_interval_s: float = Field(default=60.0, ge=1)  # retained status + backlog refresh


class QueueSettings(Section):
    """Store-and-forward queue: every reading is on disk before it is published."""

    path: Path = Path("edge-queue.sqlite")
    max_rows: int = Field(default=2_000_000, ge=1000)  # ~1 GB worst case
    max_age_s: float = Field(default=90 * 86400, gt=0)
    when_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    # Group commit: two SD-card writes a second, not one per reading; also the floor of
    # the end-to-end delay (docs/benchmarks.md, freshness).
    commit_interval_s: float = Field(default=0.5, ge=0, le=60)


class TcpConnection(Section):
    name: Id
    type: Literal["tcp"] = "tcp"
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: PositiveSeconds = 1.0
    pause_s: float = Field(default=0.0, ge=0, le=10)  # pause between requests (slow gateways)


class RtuConnection(Section):
    name: Id
    type: Literal["rtu"]
    port: str  # e.g. /dev/ttyUSB0
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: PositiveSeconds = 1.0
    pause_s: float = Field(default=0.05, ge=0, le=10)  # RS-485 turnaround headroom


def _connection_type(value: object) -> str:
    # ``type`` may be omitted for TCP, the common case.
    if isinstance(value, dict):
        return str(value.get("type", "tcp"))
    return str(getattr(value, "type", "tcp"))


Connection = Annotated[
    Annotated[TcpConnection, Tag("tcp")] | Annotated[RtuConnection, Tag("rtu")],
    Discriminator(_connection_type),
]


class MeterSettings(Section):
    meter_id: Id
    connection: Id  # name of an entry in ``connections``
    unit_id: int = Field(ge=0, le=247)
    profile: str  # a shipped profile name (``sdm630``) or a path to a profile YAML
    poll_interval_s: PositiveSeconds = 10.0
    time_source: Literal["gateway", "device"] = "gateway"  # device: profile's device_time_ms


class HealthSettings(Section):
    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # Prometheus /metrics
    host: str = "0.0.0.0"  # interface the metrics endpoint listens on


class EdgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ELECTROCLOUD_EDGE_")

    gateway_id: Id
    mqtt: MqttSettings = MqttSettings()
    queue: QueueSettings = QueueSettings()
    connections: list[Connection] = Field(min_length=1)
    meters: list[MeterSettings] = Field(min_length=1)
    health: HealthSettings = HealthSettings()
    backoff_max_s: PositiveSeconds = 300.0  # longest wait between retries of a failing meter

    @model_validator(mode="after")
    def _references(self) -> EdgeSettings:
        names = [c.name for c in self.connections]
        if len(set(names)) != len(names):
            raise ValueError("connection names must be unique")
        meter_ids = [m.meter_id for m in self.meters]
        if len(set(meter_ids)) != len(meter_ids):
            raise ValueError("meter_id values must be unique")
        seen: set[tuple[str, int]] = set()
        for meter in self.meters:
            if meter.connection not in names:
                raise ValueError(
                    f"meter {meter.meter_id!r} uses connection {meter.connection!r}; "
                    f"defined connections: {', '.join(names)}"
                )
            key = (meter.connection, meter.unit_id)
            if key in seen:
                raise ValueError(f"two meters share connection {key[0]!r} unit_id {key[1]}")
            seen.add(key)
        return self
