"""Errors the simulator raises on purpose."""

from __future__ import annotations

from electrocloud.errors import ElectroCloudError


class SimulatorError(ElectroCloudError):
    """The simulator cannot do what was asked (bad fleet, port unavailable, ...)."""
