"""Broker connection settings shared by every MQTT client of the project.

The edge agent and the backend each extend :class:`BrokerSettings` with what is
their own (batching, sessions...); where and how to connect is the same for both.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator, model_validator

from electrocloud.config import Section
from electrocloud.secrets import check_not_placeholder


class TlsSettings(Section):
    ca_file: Path | None = None  # CA bundle that signed the broker's certificate
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file
    key_file: Path | None = None
    insecure: bool = False  # skip hostname verification: test setups only

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class BrokerSettings(Section):
    url: str = "mqtt://localhost:1883"  # mqtt://host:port, or mqtts:// for TLS
    username: str | None = None
    password: SecretStr | None = None  # set it through the environment, not the file
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        return value

    @field_validator("password")
    @classmethod
    def _real_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_not_placeholder(value.get_secret_value(), "password")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or self.tls is not None
