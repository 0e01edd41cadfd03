"""Adapters of the storage port (electrocloud.storage): SQLite and InfluxDB 2."""
