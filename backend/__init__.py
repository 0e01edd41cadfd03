"""ElectroCloud backend: MQTT ingestion into a time-series store."""
