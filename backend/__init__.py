"""ElectroCloud backend: MQTT ingestion into a time-series store.

Entry point ``electrocloud backend`` (:mod:`backend.cli`); the moving parts are
:mod:`backend.mqtt` (session, shared subscription, manual acks),
:mod:`backend.pipeline` (validation, micro-batches, durable write then ack) and
:mod:`backend.service` (wiring, health). See ``docs/backend.md``.
"""
