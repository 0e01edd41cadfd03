"""``electrocloud demo``: the whole pipeline on one machine, with embedded defaults.

Simulator (Modbus TCP) -> edge agent -> MQTT broker -> backend -> SQLite, run as
separate processes exactly as a user would run them, for an accelerated period;
ends with a per-meter reconciliation against the simulator's ground truth.
"""
