"""What a poller hands on: one read of one meter, before it gets a sequence number."""

from __future__ import annotations

from dataclasses import dataclass, field

from electrocloud.contract import Flag, PhaseValues, Reading

#: Contract value paths a device profile may fill.
SCALAR_FIELDS = ("import_kwh", "export_kwh", "power_w", "frequency_hz", "power_factor")
PHASE_FIELDS = ("voltage_v", "current_a")
PHASES = ("l1", "l2", "l3")
CONTRACT_FIELDS: tuple[str, ...] = SCALAR_FIELDS + tuple(
    f"{name}.{phase}" for name in PHASE_FIELDS for phase in PHASES
)


@dataclass(slots=True)
class MeterSample:
    """Decoded values of one meter read, keyed by contract path (``"voltage_v.l1"``).

    ``ts_ms`` is the UTC time of the read in ms: the gateway clock when the
    response arrived, or the meter's own clock (``time_source: device``).
    """

    meter_id: str
    ts_ms: int
    values: dict[str, float]
    flags: list[Flag] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def to_reading(self, seq: int) -> Reading:
        fields: dict[str, object] = {
            name: self.values[name] for name in SCALAR_FIELDS if name in self.values
        }
        for name in PHASE_FIELDS:
            per_phase = {
                p: self.values[f"{name}.{p}"] for p in PHASES if f"{name}.{p}" in self.values
            }
            if per_phase:
                fields[name] = PhaseValues(**per_phase)
        return Reading.model_validate(
            {
                "ts_ms": self.ts_ms,
                "seq": seq,
                "flags": tuple(self.flags),
                "dropped": tuple(self.dropped),
                **fields,
            }
        )
