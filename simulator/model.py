"""One simulated meter: realistic load (and PV) on a 60 s grid, with exact energy registers.

Per UTC day and meter, a generator seeded by ``(seed, meter index, day)`` draws
the day's steps:

- load: the BDEW profile (15-minute means) scaled to ``annual_kwh``, times a
  day level factor and smooth per-step noise (both mean one), plus appliance
  spikes placed where the profile is high; spikes take a fixed share of the
  expected energy, so the long-run mean stays on the annual target;
- PV: kWp x clear-sky bell x the site's sky clearness (shared weather);
- per phase: an uneven, drifting split of the load (single-phase appliances
  land on one phase), PV spread evenly, voltage 230 V +- a few volts (dropping
  with import, rising with export), power factor 0.90-0.99, the site's grid
  frequency.

Net power (load - PV) is constant within a step, so the registers are exact
integrals: ``import_kwh`` sums the positive part, ``export_kwh`` the negative
part. Per-day cumulative sums make ``state_at`` random access; day totals are
kept, full days are cached for the few most recent days used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from electrocloud.contract import ID_PATTERN
from simulator.environment import clear_sky_pv_fraction, grid_frequency_hz, sky_clearness
from simulator.loadprofiles import FloatArray, LoadProfile, check_country, day_profile_kw
from simulator.randomness import Stream, rng_for, smooth_noise
from simulator.timegrid import DAY_MS, MS_W_PER_KWH, STEP_MS, STEPS_PER_DAY, STEPS_PER_SLOT

#: Days kept fully in memory per meter (the current one and its neighbour).
CACHED_DAYS = 3
MAX_UNIT_ID = 247

_IMPORT, _EXPORT, _LOAD, _PV = range(4)


class MeterModel(StrEnum):
    """The Eastron meter type served for a simulated meter."""

    SDM630 = "sdm630"  # three-phase
    SDM120 = "sdm120"  # single-phase

    @property
    def phases(self) -> int:
        return 3 if self is MeterModel.SDM630 else 1


class Site(BaseModel):
    """Where the fleet is: public holidays, sun position and profile time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    country: str = "DE"  # public holidays (``holidays`` package country code)
    latitude_deg: float = Field(default=51.0, ge=-66, le=66)
    longitude_deg: float = Field(default=10.0, ge=-180, le=180)
    #: BDEW profiles are in local standard time (no DST): UTC + this offset.
    utc_offset_h: int = Field(default=1, ge=-12, le=14)

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        return check_country(value)


@dataclass(frozen=True)
class LoadBehaviour:
    """How a customer group's load scatters around its standard profile."""

    day_sigma: float  # log-sd of the day's level factor
    step_sigma: float  # log-sd of the per-step noise
    step_corr_steps: float  # how many steps the per-step noise stays correlated
    spike_share: float  # share of the expected energy drawn by appliance spikes
    spike_w: tuple[float, float]  # spike power range, W
    spike_steps: tuple[int, int]  # spike duration range, steps (minutes)

    @property
    def mean_spike_kwh(self) -> float:
        mean_w = sum(self.spike_w) / 2
        mean_ms = sum(self.spike_steps) / 2 * STEP_MS
        return mean_w * mean_ms / MS_W_PER_KWH


BEHAVIOUR = {
    # kettles, hobs, ovens, washing machines, hair dryers
    LoadProfile.H0: LoadBehaviour(0.12, 0.18, 8, 0.25, (800.0, 3000.0), (2, 30)),
    # cooling compressors, air conditioning, coffee machines
    LoadProfile.G0: LoadBehaviour(0.08, 0.08, 15, 0.12, (1500.0, 6000.0), (5, 40)),
    # milking machines, feed mixers, pumps
    LoadProfile.L0: LoadBehaviour(0.10, 0.12, 10, 0.20, (2000.0, 8000.0), (10, 60)),
}


class MeterSpec(BaseModel):
    """What a simulated meter is; its random streams follow from ``index`` and the seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter_id: Annotated[str, Field(pattern=ID_PATTERN)]
    unit_id: int = Field(ge=1, le=MAX_UNIT_ID)
    index: int = Field(ge=0)  # position in the fleet: selects the meter's random streams
    load_profile: LoadProfile
    model: MeterModel
    annual_kwh: float = Field(gt=0)  # consumption target per year (load, before PV)
    pv_kwp: float = Field(default=0.0, ge=0)
    pv_efficiency: float = Field(default=0.9, gt=0, le=1.2)  # orientation/shading vs. ideal
    #: Register values at the meter's start (its age), kWh.
    initial_import_kwh: float = Field(default=0.0, ge=0)
    initial_export_kwh: float = Field(default=0.0, ge=0)
    #: Mean split of the (non-spike) load over L1..L3; ignored for single-phase meters.
    phase_weights: tuple[float, float, float] = (0.4, 0.35, 0.25)
    server_index: int = Field(default=0, ge=0)  # which Modbus server (port) serves it

    @field_validator("phase_weights")
    @classmethod
    def _positive_weights(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("phase weights must all be > 0")
        return value


@dataclass(frozen=True, slots=True)
class MeterState:
    """Everything a meter shows at one instant, plus the ground truth behind it.

    Per-phase tuples have one entry per phase the meter has (3 or 1).
    ``load_kwh`` / ``pv_kwh`` count from the meter's start: consumption and PV
    generation, so ``Δimport - Δexport == Δload - Δpv`` over any interval.
    """

    ts_ms: int
    import_kwh: float
    export_kwh: float
    power_w: float  # net, signed: negative = export
    load_w: float  # consumption, >= 0
    pv_w: float  # PV generation, >= 0
    load_kwh: float
    pv_kwh: float
    voltage_v: tuple[float, ...]
    current_a: tuple[float, ...]
    phase_power_w: tuple[float, ...]  # signed, sums to power_w (up to rounding)
    phase_power_factor: tuple[float, ...]
    power_factor: float
    frequency_hz: float

    @property
    def total_kwh(self) -> float:
        """Eastron "total kWh": import + export."""
        return self.import_kwh + self.export_kwh


@dataclass(frozen=True, slots=True)
class _Day:
    rate_w: FloatArray  # (4, steps): import, export, load, pv power
    cum_kwh: FloatArray  # (4, steps + 1): energies since 00:00 UTC at step starts
    phase_power_w: FloatArray  # (phases, steps)
    voltage_v: FloatArray  # (phases, steps)
    power_factor: FloatArray  # (phases, steps)
    frequency_hz: FloatArray  # (steps,)


class SimulatedMeter:
    """A virtual meter whose state can be read at any time >= its start, in any order.

    Thread-safe: ``state_at`` may be called from several threads.
    """

    def __init__(self, spec: MeterSpec, *, seed: int, start_ms: int, site: Site | None = None):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if start_ms < 0:
            raise ValueError(f"start_ms must be >= 0, got {start_ms}")
        self.spec = spec
        self.seed = seed
        self.start_ms = start_ms
        self.site = site or Site()
        self._behaviour = BEHAVIOUR[spec.load_profile]
        const = rng_for(seed, Stream.METER_CONST, spec.index)
        phases = spec.model.phases
        self._voltage_offset_v = const.uniform(-3.0, 3.0, phases)
        self._pf_level = const.uniform(0.93, 0.975, phases)
        weights = np.array(spec.phase_weights if phases == 3 else (1.0,), dtype=np.float64)
        self._phase_weights = weights / weights.sum()
        self._lock = threading.Lock()
        self._start_day = start_ms // DAY_MS
        # _midnight_kwh[k]: energies (import, export, load, pv) from 00:00 UTC of the
        # start day to 00:00 UTC of start day + k. Grows as later days are needed.
        self._midnight_kwh: list[FloatArray] = [np.zeros(4)]
        self._days: OrderedDict[int, _Day] = OrderedDict()
        self._start_kwh: FloatArray | None = None

    @property
    def meter_id(self) -> str:
        return self.spec.meter_id

    @property
    def unit_id(self) -> int:
        return self.spec.unit_id

    @property
    def model(self) -> MeterModel:
        return self.spec.model

    def __repr__(self) -> str:
        spec = self.spec
        pv = f", {spec.pv_kwp:g} kWp PV" if spec.pv_kwp else ""
        return (
            f"SimulatedMeter({spec.meter_id}, unit {spec.unit_id}, {spec.model.value}, "
            f"{spec.load_profile.value} {spec.annual_kwh:.0f} kWh/yr{pv})"
        )

    def state_at(self, ts_ms: int) -> MeterState:
        """The meter's state at simulated UTC time ``ts_ms`` (ms since epoch, >= start)."""
        ts_ms = int(ts_ms)
        if ts_ms < self.start_ms:
            raise ValueError(
                f"{self.meter_id}: ts_ms {ts_ms} is before the meter's start {self.start_ms}"
            )
        with self._lock:
            if self._start_kwh is None:
                self._start_kwh = self._energy_since_start_day(self.start_ms)[0]
            energy, day, step = self._energy_since_start_day(ts_ms)
            registers = energy - self._start_kwh
        spec = self.spec
        power = day.phase_power_w[:, step]
        voltage = day.voltage_v[:, step]
        pf = day.power_factor[:, step]
        apparent_va = np.abs(power) / pf
        current = apparent_va / voltage
        total_apparent = float(apparent_va.sum())
        # System pf = active / apparent power summed over phases (mean pf when idle).
        active = float(np.abs(power).sum())
        total_pf = active / total_apparent if total_apparent else float(pf.mean())
        return MeterState(
            ts_ms=ts_ms,
            import_kwh=spec.initial_import_kwh + float(registers[_IMPORT]),
            export_kwh=spec.initial_export_kwh + float(registers[_EXPORT]),
            power_w=float(day.rate_w[_IMPORT, step] - day.rate_w[_EXPORT, step]),
            load_w=float(day.rate_w[_LOAD, step]),
            pv_w=float(day.rate_w[_PV, step]),
            load_kwh=float(registers[_LOAD]),
            pv_kwh=float(registers[_PV]),
            voltage_v=tuple(voltage.tolist()),
            current_a=tuple(current.tolist()),
            phase_power_w=tuple(power.tolist()),
            phase_power_factor=tuple(pf.tolist()),
            power_factor=total_pf,
            frequency_hz=float(day.frequency_hz[step]),
        )

    def _energy_since_start_day(self, ts_ms: int) -> tuple[FloatArray, _Day, int]:
        """Energies from 00:00 UTC of the start day to ``ts_ms``; the day and step holding it."""
        day_index = ts_ms // DAY_MS
        ms_in_day = ts_ms - day_index * DAY_MS
        step = ms_in_day // STEP_MS
        ms_in_step = ms_in_day - step * STEP_MS
        midnight = self._midnight(day_index)
        day = self._day(day_index)
        energy = midnight + day.cum_kwh[:, step] + day.rate_w[:, step] * (ms_in_step / MS_W_PER_KWH)
        return energy, day, step

    def _midnight(self, day_index: int) -> FloatArray:
        k = day_index - self._start_day
        while len(self._midnight_kwh) <= k:
            previous = self._start_day + len(self._midnight_kwh) - 1
            totals = self._day(previous).cum_kwh[:, -1]
            self._midnight_kwh.append(self._midnight_kwh[-1] + totals)
        return self._midnight_kwh[k]

    def _day(self, day_index: int) -> _Day:
        day = self._days.get(day_index)
        if day is None:
            day = self._generate_day(day_index)
            self._days[day_index] = day
            while len(self._days) > CACHED_DAYS:
                self._days.popitem(last=False)
        else:
            self._days.move_to_end(day_index)
        return day

    def _generate_day(self, day_index: int) -> _Day:
        spec, site, behaviour = self.spec, self.site, self._behaviour
        phases = spec.model.phases
        rng = rng_for(self.seed, Stream.METER_DAY, spec.index, day_index)
        steps = STEPS_PER_DAY

        slot_kw = day_profile_kw(spec.load_profile, day_index, site.country, site.utc_offset_h)
        profile_w = np.repeat(slot_kw, STEPS_PER_SLOT) * (spec.annual_kwh * 1000.0)
        expected_day_kwh = float(slot_kw.sum()) / 4.0 * spec.annual_kwh

        s = behaviour.day_sigma
        day_factor = float(np.exp(s * rng.standard_normal() - s * s / 2))
        s = behaviour.step_sigma
        noise = smooth_noise(rng, 1, steps, behaviour.step_corr_steps)[0]
        level = (1 - behaviour.spike_share) * day_factor
        base_w = profile_w * level * np.exp(s * noise - s * s / 2)

        if phases == 3:
            drift = np.exp(0.2 * smooth_noise(rng, 3, steps, corr_steps=30))
            split = self._phase_weights[:, None] * drift
            phase_load_w = base_w * (split / split.sum(axis=0))
        else:
            phase_load_w = base_w[None, :].copy()

        # Appliance spikes: count scaled to their energy share, placed by the profile.
        spike_kwh = behaviour.spike_share * expected_day_kwh * day_factor
        mean_count = spike_kwh / behaviour.mean_spike_kwh
        count = int(rng.poisson(mean_count))
        starts = rng.choice(steps, size=count, p=profile_w / profile_w.sum())
        # Whole watts: +w and -w then cancel exactly in the cumulative sum below.
        watts = np.round(rng.uniform(*behaviour.spike_w, size=count))
        lengths = rng.integers(behaviour.spike_steps[0], behaviour.spike_steps[1] + 1, size=count)
        on_phase = rng.integers(0, phases, size=count)
        edges = np.zeros((phases, steps + 1))
        np.add.at(edges, (on_phase, starts), watts)
        np.add.at(edges, (on_phase, np.minimum(starts + lengths, steps)), -watts)
        phase_load_w += np.cumsum(edges[:, :steps], axis=1)
        np.maximum(phase_load_w, 0.0, out=phase_load_w)

        if spec.pv_kwp > 0:
            pv_w = (spec.pv_kwp * 1000.0 * spec.pv_efficiency) * (
                clear_sky_pv_fraction(day_index, site.latitude_deg, site.longitude_deg)
                * sky_clearness(self.seed, day_index)
            )
        else:
            pv_w = np.zeros(steps)
        phase_power_w = phase_load_w - pv_w / phases  # inverter feeds all phases evenly
        load_w = phase_load_w.sum(axis=0)
        net_w = load_w - pv_w

        rate_w = np.stack([np.maximum(net_w, 0.0), np.maximum(-net_w, 0.0), load_w, pv_w])
        cum_kwh = np.zeros((4, steps + 1))
        np.cumsum(rate_w * (STEP_MS / MS_W_PER_KWH), axis=1, out=cum_kwh[:, 1:])

        voltage_v = np.clip(
            230.0
            + self._voltage_offset_v[:, None]
            + 1.5 * smooth_noise(rng, phases, steps, corr_steps=20)
            - 0.002 * phase_power_w,  # ~2 V per kW: drop on import, rise on export
            207.0,
            253.0,
        )
        power_factor = np.clip(
            self._pf_level[:, None] + 0.015 * smooth_noise(rng, phases, steps, corr_steps=30),
            0.90,
            0.99,
        )
        return _Day(
            rate_w=rate_w,
            cum_kwh=cum_kwh,
            phase_power_w=phase_power_w,
            voltage_v=voltage_v,
            power_factor=power_factor,
            frequency_hz=grid_frequency_hz(self.seed, day_index),
        )
