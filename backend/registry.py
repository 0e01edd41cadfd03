"""Meter registry: which gateway each meter belongs to.

A YAML file pins each meter to its gateway, so a gateway cannot write readings
for a meter it does not own (a misconfigured or impersonating gateway)::

    strict: false          # true: reject meters that are not listed
    meters:
      meter-001: {gateway_id: gw-01, site: "Building A"}
      meter-002: {gateway_id: gw-01}

Without a registry file every meter is accepted from any gateway.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from electrocloud.config import Section, read_yaml_with_lines, validation_problems
from electrocloud.contract import ID_PATTERN, Reason, check_id
from electrocloud.errors import ConfigError, ConfigProblem, ContractError


class MeterEntry(Section):
    gateway_id: str = Field(pattern=ID_PATTERN)
    site: str | None = None


class RegistryFile(Section):
    strict: bool = False
    meters: dict[str, MeterEntry] = Field(default_factory=dict)

    @field_validator("meters")
    @classmethod
    def _meter_ids_valid(cls, meters: dict[str, MeterEntry]) -> dict[str, MeterEntry]:
        for meter_id in meters:
            try:
                check_id(str(meter_id), "meter_id")
            except ContractError as exc:
                raise ValueError(exc.detail) from None
        return meters


class MeterRegistry:
    """Checks a message's (gateway, meter) pair against the registry."""

    def __init__(self, meters: dict[str, MeterEntry] | None = None, *, strict: bool = False):
        self.meters = dict(meters or {})
        self.strict = strict

    @classmethod
    def load(cls, path: str | Path) -> MeterRegistry:
        """Read a registry YAML file; ConfigError names the file, line and field."""
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            problem = ConfigProblem(source, "(file)", f"cannot read: {exc.strerror}")
            raise ConfigError(source, [problem]) from None
        data, lines = read_yaml_with_lines(text, source)
        if data is None:
            data = {}
        try:
            parsed = RegistryFile.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, RegistryFile, source=source, lines=lines)
            raise ConfigError(source, problems) from None
        return cls(parsed.meters, strict=parsed.strict)

    def check(self, gateway_id: str, meter_id: str) -> None:
        """Raise ContractError (wrong_gateway / unknown_meter) if the pair is not allowed."""
        entry = self.meters.get(meter_id)
        if entry is None:
            if self.strict:
                raise ContractError(
                    Reason.UNKNOWN_METER, f"meter {meter_id!r} is not in the meter registry"
                )
            return
        if entry.gateway_id != gateway_id:
            raise ContractError(
                Reason.WRONG_GATEWAY,
                f"meter {meter_id!r} belongs to gateway {entry.gateway_id!r}, not {gateway_id!r}",
            )

    def sites(self) -> dict[str, str]:
        """Site of every meter that has one."""
        return {meter_id: e.site for meter_id, e in self.meters.items() if e.site is not None}
