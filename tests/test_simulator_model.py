"""The meter model: determinism, exact energy registers, realistic energy, PV behaviour."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from simulator.fleet import build_fleet
from simulator.loadprofiles import LoadProfile
from simulator.model import MeterModel, MeterSpec, MeterState, SimulatedMeter
from simulator.timegrid import DAY_MS, MS_W_PER_KWH, STEP_MS

HOUR_MS = 3_600_000
START_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)


def at(month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0.0) -> int:
    moment = datetime(2025, month, day, hour, minute, tzinfo=UTC)
    return int(moment.timestamp() * 1000 + second * 1000)


def pv_household(
    seed: int = 7, *, model: MeterModel = MeterModel.SDM630, start_ms: int = START_2025
) -> SimulatedMeter:
    spec = MeterSpec(
        meter_id="m-pv",
        unit_id=1,
        index=3,
        load_profile=LoadProfile.H0,
        model=model,
        annual_kwh=3200,
        pv_kwp=8.0,
        initial_import_kwh=1234.5,
        initial_export_kwh=321.0,
    )
    return SimulatedMeter(spec, seed=seed, start_ms=start_ms)


def integrate_power(meter: SimulatedMeter, t1: int, t2: int) -> tuple[float, float]:
    """(import, export) kWh between t1 and t2 from power sampled once per step."""
    imported = exported = 0.0
    t = t1
    while t < t2:
        step_end = min((t // STEP_MS + 1) * STEP_MS, t2)
        power_w = meter.state_at(t).power_w
        energy = abs(power_w) * (step_end - t) / MS_W_PER_KWH
        if power_w > 0:
            imported += energy
        else:
            exported += energy
        t = step_end
    return imported, exported


def test_same_seed_gives_same_states_whatever_the_read_order() -> None:
    timestamps = [START_2025 + i * 7_919_311 for i in range(120)]  # ~92 days, odd offsets
    timestamps += [START_2025, START_2025 + 1, at(3, 31, 23, 59, 59.999), at(4, 1)]
    fleet_a = build_fleet(meters=6, seed=42, start_ms=START_2025)
    fleet_b = build_fleet(meters=6, seed=42, start_ms=START_2025)
    shuffled = timestamps[:]
    random.Random(1).shuffle(shuffled)

    in_order = {(m.meter_id, t): m.state_at(t) for m in fleet_a for t in sorted(timestamps)}
    shuffled_reads = {(m.meter_id, t): m.state_at(t) for t in shuffled for m in reversed(fleet_b)}

    assert [m.spec for m in fleet_a] == [m.spec for m in fleet_b]
    assert in_order == shuffled_reads
    other_seed = build_fleet(meters=6, seed=43, start_ms=START_2025)
    assert other_seed[0].state_at(timestamps[5]) != in_order[(fleet_a[0].meter_id, timestamps[5])]


def test_registers_are_exactly_the_integral_of_net_power() -> None:
    meter = pv_household()
    # Across midnight and through a sunny-day export period, starting mid-step.
    t1 = at(6, 20, 9, 30, 17.25)
    t2 = at(6, 21, 14, 2, 3.5)
    imported, exported = integrate_power(meter, t1, t2)
    first, last = meter.state_at(t1), meter.state_at(t2)

    assert exported > 1.0 and imported > 1.0  # the window really has both directions
    assert last.import_kwh - first.import_kwh == pytest.approx(imported, abs=1e-9)
    assert last.export_kwh - first.export_kwh == pytest.approx(exported, abs=1e-9)


def test_export_grows_only_while_net_power_is_negative() -> None:
    meter = pv_household()
    t = at(7, 2, 4)
    exporting_steps = importing_steps = 0
    for _ in range(16 * 60):  # 04:00..20:00 UTC, step by step
        now, later = meter.state_at(t), meter.state_at(t + STEP_MS)
        if now.power_w < 0:
            exporting_steps += 1
            assert later.export_kwh > now.export_kwh
            assert later.import_kwh == now.import_kwh
        else:
            importing_steps += 1
            assert later.export_kwh == now.export_kwh
        t += STEP_MS
    assert exporting_steps > 60 and importing_steps > 60


def test_registers_start_at_the_initial_values_and_never_decrease() -> None:
    start = at(4, 2, 10, 31, 17.3)  # mid-day, mid-step: a real-time run starts "now"
    meter = pv_household(start_ms=start)
    first = meter.state_at(start)
    assert (first.import_kwh, first.export_kwh) == (1234.5, 321.0)
    assert (first.load_kwh, first.pv_kwh) == (0.0, 0.0)
    previous = first
    for t in range(start, start + 10 * DAY_MS, 37 * 60_000 + 11):
        state = meter.state_at(t)
        assert state.import_kwh >= previous.import_kwh
        assert state.export_kwh >= previous.export_kwh
        previous = state
    assert previous.import_kwh > first.import_kwh and previous.export_kwh > first.export_kwh
    with pytest.raises(ValueError, match="before the meter's start"):
        meter.state_at(start - 1)


@pytest.mark.parametrize(
    ("profile", "model", "annual_kwh"),
    [
        (LoadProfile.H0, MeterModel.SDM120, 2500.0),
        (LoadProfile.G0, MeterModel.SDM630, 30_000.0),
        (LoadProfile.L0, MeterModel.SDM630, 20_000.0),
    ],
)
def test_a_simulated_year_consumes_the_annual_target(
    profile: LoadProfile, model: MeterModel, annual_kwh: float
) -> None:
    spec = MeterSpec(
        meter_id="m-year",
        unit_id=1,
        index=5,
        load_profile=profile,
        model=model,
        annual_kwh=annual_kwh,
    )
    meter = SimulatedMeter(spec, seed=11, start_ms=START_2025)
    year_end = meter.state_at(START_2025 + 365 * DAY_MS)
    assert year_end.load_kwh == pytest.approx(annual_kwh, rel=0.04)
    # Without PV, every kWh consumed went through the import register.
    assert year_end.import_kwh == pytest.approx(year_end.load_kwh, abs=1e-6)
    assert year_end.export_kwh == 0.0


def test_pv_household_year_balances_load_import_export_and_generation() -> None:
    meter = pv_household()
    start, end = meter.state_at(START_2025), meter.state_at(START_2025 + 365 * DAY_MS)
    imported = end.import_kwh - start.import_kwh
    exported = end.export_kwh - start.export_kwh
    generated = end.pv_kwh - start.pv_kwh
    consumed = end.load_kwh - start.load_kwh

    assert consumed == pytest.approx(imported - exported + generated, abs=1e-6)
    assert consumed == pytest.approx(3200, rel=0.04)
    assert 700 < generated / 8.0 < 1200  # kWh per kWp and year, Germany
    assert exported > 0.3 * generated  # an 8 kWp roof makes far more than the house uses


def test_pv_exports_at_summer_midday_and_never_at_night() -> None:
    meter = pv_household()
    summer_days = range(20)
    exporting_middays = 0
    for day in summer_days:
        noon = at(6, 10, 11, 20) + day * DAY_MS  # solar noon at 10 °E is ~11:20 UTC
        state = meter.state_at(noon)
        assert state.pv_w > 0
        exporting_middays += state.power_w < 0
        night_start = noon + 10 * HOUR_MS  # 21:20 .. 02:20 UTC: sun below the horizon
        night = [meter.state_at(night_start + i * 10 * 60_000) for i in range(30)]
        assert all(s.pv_w == 0.0 and s.power_w > 0 for s in night)
        assert night[-1].export_kwh == night[0].export_kwh
    assert exporting_middays >= 0.7 * len(summer_days)


def check_phase_physics(state: MeterState, phases: int) -> None:
    assert len(state.voltage_v) == len(state.current_a) == len(state.phase_power_w) == phases
    assert sum(state.phase_power_w) == pytest.approx(state.power_w, abs=1e-6)
    assert state.power_w == pytest.approx(state.load_w - state.pv_w, abs=1e-9)
    for voltage, current, power, pf in zip(
        state.voltage_v,
        state.current_a,
        state.phase_power_w,
        state.phase_power_factor,
        strict=True,
    ):
        assert 207 <= voltage <= 253
        assert 0.90 <= pf <= 0.99
        assert current == pytest.approx(abs(power) / (voltage * pf), rel=1e-12)
    assert 0.90 <= state.power_factor <= 0.99
    assert 49.95 <= state.frequency_hz <= 50.05


@pytest.mark.parametrize("model", list(MeterModel))
def test_per_phase_values_are_consistent(model: MeterModel) -> None:
    meter = pv_household(model=model)
    phase_shares = []
    for t in range(at(5, 3), at(5, 5), 47 * 60_000):
        state = meter.state_at(t)
        check_phase_physics(state, model.phases)
        if model is MeterModel.SDM630 and state.pv_w == 0:
            phase_shares.append(max(state.phase_power_w) / state.power_w)
    if model is MeterModel.SDM630:
        # Uneven split: on average the busiest phase carries well over a third.
        assert sum(phase_shares) / len(phase_shares) > 0.4
