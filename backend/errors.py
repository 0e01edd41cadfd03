"""Errors the backend raises on purpose."""

from __future__ import annotations

from electrocloud.errors import ElectroCloudError


class BackendError(ElectroCloudError):
    """The backend cannot start or run as configured (e.g. its HTTP port is taken)."""
