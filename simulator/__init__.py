"""ElectroCloud meter simulator: realistic virtual meters served over real Modbus TCP.

- :mod:`simulator.model`: ``SimulatedMeter.state_at(ts_ms)``, load/PV physics, exact registers;
- :mod:`simulator.fleet`: ``FleetSpec`` / ``build_fleet``, the default meter mix;
- :mod:`simulator.clock`: ``SimClock``, accelerated simulated time;
- :mod:`simulator.registers`: the Eastron register map and the device clock extension;
- :mod:`simulator.server`: ``MeterServer``, Modbus TCP with snapshot latching and ground truth;
- :mod:`simulator.cli`: ``electrocloud simulate``.

See ``docs/simulator.md``. Nothing is imported here: ``electrocloud --help``
imports :mod:`simulator.cli` and must stay fast.
"""
