"""Builds the configured ReadingStore adapter; heavy client libraries load only when used."""

from __future__ import annotations

from collections.abc import Mapping

from backend.config import StoreSettings
from electrocloud.storage import ReadingStore


def open_store(
    settings: StoreSettings, *, site_by_meter: Mapping[str, str] | None = None
) -> ReadingStore:
    """Open the store named by ``settings.type``; StoreUnavailable if it cannot be reached.

    ``site_by_meter`` (from the meter registry) tags InfluxDB points with their site.
    """
    if settings.type == "sqlite":
        from electrocloud.stores.sqlite import SqliteStore

        return SqliteStore(settings.sqlite.path, busy_timeout_ms=settings.sqlite.busy_timeout_ms)
    if settings.type == "influxdb":
        from electrocloud.stores.influx import InfluxStore

        influx = settings.influxdb
        if influx is None:  # the config validator already refuses this
            raise ValueError("store type influxdb needs an influxdb section")
        return InfluxStore(
            url=influx.url,
            org=influx.org,
            bucket=influx.bucket,
            token=influx.token.get_secret_value(),
            timeout_s=influx.timeout_s,
            site_by_meter=site_by_meter,
        )
    raise ValueError(f"unknown store type {settings.type!r}")
