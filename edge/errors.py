"""Exceptions the edge agent raises on purpose.

``EdgeError`` is the edge root (itself an :class:`ElectroCloudError`). Reading a
meter fails with a :class:`MeterReadError` subclass that says why; a poller
catches ``MeterReadError`` and retries with backoff. Invalid device profiles
raise the core :class:`~electrocloud.errors.ConfigError` instead.
"""

from __future__ import annotations

from electrocloud.errors import ElectroCloudError


class EdgeError(ElectroCloudError):
    """Root of the edge agent's exceptions."""


class MeterReadError(EdgeError):
    """A Modbus read did not return the registers asked for."""


class MeterConnectError(MeterReadError):
    """The connection (TCP socket or serial port) could not be opened or was lost."""


class MeterTimeoutError(MeterReadError):
    """The device did not answer within the connection's ``timeout_s``."""


class ModbusExceptionResponse(MeterReadError):
    """The device answered with a Modbus exception (e.g. 2 = illegal data address)."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


class BadResponseError(MeterReadError):
    """The device answered, but not with the registers asked for (e.g. wrong count)."""
