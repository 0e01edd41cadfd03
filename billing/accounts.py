"""Customer accounts: which customer and tariff each meter bills to.

File format (``billing/accounts.example.yaml``)::

    tariffs_dir: tariffs          # where tariff ids are looked up (relative to this file)
    accounts:
      - account_id: A-1001
        meter_id: m-0001
        name: Erika Mustermann
        address: [Hauptstr. 1, 10115 Berlin]
        tariff: de-household-flat # a tariff id, or a path to a tariff YAML file
        max_power_kw: 43.5        # optional, VEE: the meter's rating
        rollover_kwh: 1000000     # optional, VEE: where the register wraps

:func:`render_accounts_yaml` writes such a file, e.g. for a simulated fleet.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from billing.model import Customer
from billing.tariff import Tariff, load_tariff, load_tariffs
from electrocloud.config import read_config_text, read_yaml_with_lines, validation_problems
from electrocloud.contract import ID_PATTERN
from electrocloud.errors import ConfigError, ConfigProblem


class Account(BaseModel):
    """One meter's billing account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Annotated[str, Field(min_length=1, max_length=64)]
    meter_id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: Annotated[str, Field(min_length=1)]
    address: list[str] = Field(default_factory=list)
    tariff: Annotated[str, Field(min_length=1)]
    max_power_kw: Annotated[float, Field(gt=0)] | None = None
    rollover_kwh: Annotated[float, Field(gt=0)] | None = None

    @property
    def customer(self) -> Customer:
        return Customer(account_id=self.account_id, name=self.name, address=list(self.address))

    @property
    def tariff_is_path(self) -> bool:
        return self.tariff.endswith((".yaml", ".yml")) or "/" in self.tariff


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tariffs_dir: str | None = None
    accounts: list[Account]

    @model_validator(mode="after")
    def _unique(self) -> AccountsFile:
        meters = [a.meter_id for a in self.accounts]
        repeated = sorted({m for m in meters if meters.count(m) > 1})
        if repeated:
            raise ValueError(f"meters with more than one account: {repeated}")
        return self


class Accounts(dict[str, Account]):
    """Accounts by meter id, remembering where tariffs are found."""

    def __init__(self, accounts: dict[str, Account], base_dir: Path, tariffs_dir: Path | None):
        super().__init__(accounts)
        self.base_dir = base_dir
        self.tariffs_dir = tariffs_dir
        self._catalog: dict[str, Tariff] | None = None

    def tariff_for(self, meter_id: str) -> Tariff:
        """The tariff of a meter's account (ConfigError if it cannot be found or is invalid)."""
        account = self[meter_id]
        if account.tariff_is_path:
            return load_tariff(self.base_dir / account.tariff)
        if self._catalog is None:
            directory = self.tariffs_dir or self.base_dir
            self._catalog = load_tariffs(directory)
        try:
            return self._catalog[account.tariff]
        except KeyError:
            known = ", ".join(sorted(self._catalog)) or "none"
            raise ConfigError(
                str(self.tariffs_dir or self.base_dir),
                [
                    ConfigProblem(
                        f"account {account.account_id}",
                        "tariff",
                        f"no tariff with id {account.tariff!r} (known: {known})",
                    )
                ],
            ) from None


def load_accounts(path: str | Path) -> Accounts:
    """Load an accounts file: meter id -> :class:`Account` (ConfigError with file:line)."""
    source = str(path)
    text = read_config_text(path)
    data, lines = read_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [ConfigProblem(f"{source}:1", "(top level)", "expected a mapping with 'accounts:'")],
        )
    try:
        parsed = AccountsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            source, validation_problems(exc, AccountsFile, source=source, lines=lines)
        ) from None
    base = Path(path).parent
    tariffs_dir = base / parsed.tariffs_dir if parsed.tariffs_dir else None
    return Accounts({a.meter_id: a for a in parsed.accounts}, base, tariffs_dir)


def render_accounts_yaml(accounts: Iterable[Account], tariffs_dir: str | None = None) -> str:
    """An accounts file for ``accounts`` (e.g. generated for simulated meters m-0001..)."""
    data: dict[str, object] = {}
    if tariffs_dir is not None:
        data["tariffs_dir"] = tariffs_dir
    data["accounts"] = [a.model_dump(exclude_none=True) for a in accounts]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
