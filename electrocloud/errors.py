"""The exception hierarchy shared by every ElectroCloud service.

``ElectroCloudError`` is the one root: catch it to handle anything the project
raises on purpose. Each stage derives its own errors from it.

- ``ConfigError``: a configuration file or profile is invalid; raised at start-up.
- ``ContractError``: a wire-contract message is invalid; carries a machine-readable
  ``reason`` (see :class:`electrocloud.contract.Reason`).
"""

from __future__ import annotations

from dataclasses import dataclass


class ElectroCloudError(Exception):
    """Root of every exception ElectroCloud raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid field: where it is, which field, and what to do about it."""

    where: str  # "edge.yaml:14", or the environment variable that set the value
    field: str  # dotted path, e.g. "meters[1].poll_interval_s"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


class ConfigError(ElectroCloudError):
    """A configuration (or device profile) file is invalid."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        count = len(problems)
        lines = "\n".join(f"  {problem}" for problem in problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid configuration in {source} ({count} {noun}):\n{lines}")


class ContractError(ElectroCloudError):
    """A message does not satisfy the wire contract.

    ``reason`` is a stable, machine-readable code (a :class:`Reason` value) used
    for dead-letter records and metrics labels; ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        where = f" at {field}" if field else ""
        super().__init__(f"{reason}{where}: {detail}")
