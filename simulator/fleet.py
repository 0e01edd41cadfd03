"""A fleet of simulated meters with a realistic default mix, deterministic for a seed.

Mix for N meters: ~60 % households (H0, 1,500-5,000 kWh/yr; ~35 % of them with
3-10 kWp rooftop PV), 25 % shops (G0, 10,000-60,000 kWh/yr), 15 % farms (L0,
15,000-50,000 kWh/yr; ~30 % with 10-30 kWp on the barn roof). Households without
PV get a single-phase SDM120 about half the time; everything else a three-phase
SDM630 (in Germany, PV above 4.6 kVA must feed three phases).

Ids: ``m-0001``..; unit ids 1..247 per Modbus server. Larger fleets spill over
to further servers: meter ``i`` (0-based) gets ``server_index = i // 247`` and
unit id ``i % 247 + 1``; the CLI serves server ``k`` on port ``--port + k``.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from electrocloud.contract import ID_PATTERN
from simulator.loadprofiles import LoadProfile
from simulator.model import MAX_UNIT_ID, MeterModel, MeterSpec, SimulatedMeter, Site
from simulator.randomness import Stream, rng_for

SHOP_SHARE = 0.25
FARM_SHARE = 0.15  # households: the rest (~60 %)
#: Typical PV yield used to back-date the export register of PV meters, kWh/kWp/yr.
PV_YIELD_KWH_PER_KWP = 920.0


class FleetSpec(BaseModel):
    """Everything that determines a fleet: same spec, same meters, same values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meters: int = Field(ge=1, le=100_000)
    seed: int = Field(default=0, ge=0)
    start_ms: int = Field(ge=0)  # simulated UTC start, ms since epoch
    gateway_id: Annotated[str, Field(pattern=ID_PATTERN)] = "gw-sim"
    site: Site = Site()

    def build(self) -> list[SimulatedMeter]:
        """The meters, in meter_id order."""
        return [
            SimulatedMeter(spec, seed=self.seed, start_ms=self.start_ms, site=self.site)
            for spec in self.meter_specs()
        ]

    def meter_specs(self) -> list[MeterSpec]:
        rng = rng_for(self.seed, Stream.FLEET)
        shops = int(self.meters * SHOP_SHARE + 0.5)
        farms = int(self.meters * FARM_SHARE + 0.5)
        if shops + farms > self.meters:  # tiny fleets: keep at least the shops
            farms = self.meters - shops
        households = self.meters - shops - farms
        profiles = (
            [LoadProfile.H0] * households + [LoadProfile.G0] * shops + [LoadProfile.L0] * farms
        )
        order = rng.permutation(len(profiles))
        return [
            _meter_spec(index, profiles[kind], rng) for index, kind in enumerate(order.tolist())
        ]


def _meter_spec(index: int, profile: LoadProfile, rng: np.random.Generator) -> MeterSpec:
    pv_kwp = 0.0
    model = MeterModel.SDM630
    if profile is LoadProfile.H0:
        annual_kwh = rng.uniform(1500, 5000)
        if rng.random() < 0.35:
            pv_kwp = rng.uniform(3, 10)
        elif rng.random() < 0.5:
            model = MeterModel.SDM120
    elif profile is LoadProfile.G0:
        annual_kwh = rng.uniform(10_000, 60_000)
    else:
        annual_kwh = rng.uniform(15_000, 50_000)
        if rng.random() < 0.3:
            pv_kwp = rng.uniform(10, 30)
    pv_kwp = round(pv_kwp, 1)
    meter_age_years = rng.uniform(0.5, 12)
    pv_age_years = rng.uniform(0.2, min(meter_age_years, 10)) if pv_kwp else 0.0
    weights = rng.dirichlet([4.0, 4.0, 4.0])
    return MeterSpec(
        meter_id=f"m-{index + 1:04d}",
        unit_id=index % MAX_UNIT_ID + 1,
        server_index=index // MAX_UNIT_ID,
        index=index,
        load_profile=profile,
        model=model,
        annual_kwh=round(float(annual_kwh)),
        pv_kwp=pv_kwp,
        pv_efficiency=float(rng.uniform(0.8, 1.0)),
        # Rough past: consumption net of self-used PV, ~60 % of the PV yield exported.
        initial_import_kwh=round(float(annual_kwh) * meter_age_years * (0.7 if pv_kwp else 1), 2),
        initial_export_kwh=round(pv_kwp * PV_YIELD_KWH_PER_KWP * 0.6 * pv_age_years, 2),
        phase_weights=(float(weights[0]), float(weights[1]), float(weights[2])),
    )


def build_fleet(
    *, meters: int, seed: int = 0, start_ms: int, site: Site | None = None
) -> list[SimulatedMeter]:
    """``FleetSpec(meters=..., seed=..., start_ms=...).build()``."""
    return FleetSpec(meters=meters, seed=seed, start_ms=start_ms, site=site or Site()).build()


def describe_fleet(meters: list[SimulatedMeter]) -> str:
    """One line: how many meters of which kind, e.g. for a start-up log."""
    by_profile = Counter(m.spec.load_profile for m in meters)
    names = {LoadProfile.H0: "households", LoadProfile.G0: "shops", LoadProfile.L0: "farms"}
    parts = []
    for profile in LoadProfile:
        group = [m for m in meters if m.spec.load_profile is profile]
        if not group:
            continue
        with_pv = sum(1 for m in group if m.spec.pv_kwp > 0)
        single = sum(1 for m in group if m.model is MeterModel.SDM120)
        extras = [f"{with_pv} with PV"] if with_pv else []
        if single:
            extras.append(f"{single} SDM120")
        detail = f" ({', '.join(extras)})" if extras else ""
        parts.append(f"{by_profile[profile]} {profile.value} {names[profile]}{detail}")
    return f"{len(meters)} meters: " + ", ".join(parts)
