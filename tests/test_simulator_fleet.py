"""Fleet composition, the generated edge config, and the simulated clock."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.config import EdgeSettings
from electrocloud.config import load_settings
from simulator.clock import SimClock, default_start_ms
from simulator.edgeconfig import edge_config_yaml
from simulator.fleet import FleetSpec, build_fleet, describe_fleet
from simulator.loadprofiles import LoadProfile
from simulator.model import MeterModel, Site

START = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)


def test_default_mix_is_realistic() -> None:
    meters = build_fleet(meters=100, seed=3, start_ms=START)
    by_profile = Counter(m.spec.load_profile for m in meters)
    assert by_profile == {LoadProfile.H0: 60, LoadProfile.G0: 25, LoadProfile.L0: 15}
    assert [m.meter_id for m in meters] == [f"m-{i:04d}" for i in range(1, 101)]
    assert [m.unit_id for m in meters] == list(range(1, 101))

    households = [m for m in meters if m.spec.load_profile is LoadProfile.H0]
    assert all(1500 <= m.spec.annual_kwh <= 5000 for m in households)
    with_pv = [m for m in households if m.spec.pv_kwp > 0]
    assert 10 <= len(with_pv) <= 35
    assert all(3 <= m.spec.pv_kwp <= 10 and m.model is MeterModel.SDM630 for m in with_pv)
    assert any(m.model is MeterModel.SDM120 for m in households)
    assert any(m.model is MeterModel.SDM630 and m.spec.pv_kwp == 0 for m in households)
    shops = [m for m in meters if m.spec.load_profile is LoadProfile.G0]
    assert all(10_000 <= m.spec.annual_kwh <= 60_000 for m in shops)
    assert all(m.model is MeterModel.SDM630 for m in shops)
    # Plausible, distinct register values at the start (meters are not new).
    starts = [m.state_at(START).import_kwh for m in meters]
    assert all(s > 0 for s in starts) and len(set(starts)) == len(starts)
    assert describe_fleet(meters).startswith("100 meters: 60 H0 households (")


def test_fleet_spec_is_deterministic_and_seed_sensitive() -> None:
    spec = FleetSpec(meters=20, seed=9, start_ms=START)
    assert spec.meter_specs() == FleetSpec(meters=20, seed=9, start_ms=START).meter_specs()
    assert spec.meter_specs() != FleetSpec(meters=20, seed=10, start_ms=START).meter_specs()


def test_large_fleets_spill_over_to_further_servers() -> None:
    specs = FleetSpec(meters=300, seed=1, start_ms=START).meter_specs()
    assert [s.unit_id for s in specs[:247]] == list(range(1, 248))
    assert {s.server_index for s in specs[:247]} == {0}
    assert [s.unit_id for s in specs[247:]] == list(range(1, 54))
    assert {s.server_index for s in specs[247:]} == {1}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"meters": 0}, "meters"),
        ({"seed": -1}, "seed"),
        ({"gateway_id": "gw sim"}, "gateway_id"),
        ({"site": {"country": "XX"}}, "site.country"),
    ],
)
def test_bad_fleet_specs_are_refused_naming_the_field(
    fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        FleetSpec(**{"meters": 3, "start_ms": START, **fields})  # type: ignore[arg-type]
    locations = [".".join(map(str, e["loc"])) for e in caught.value.errors()]
    assert locations == [field]


def test_edge_config_for_two_servers_loads_as_edge_settings(tmp_path: Path) -> None:
    meters = build_fleet(meters=250, seed=2, start_ms=START, site=Site(country="AT"))
    first, second = meters[:247], meters[247:]
    path = tmp_path / "edge.yaml"
    path.write_text(
        edge_config_yaml(
            gateway_id="gw-test",
            mqtt_url="mqtt://127.0.0.1:1999",
            queue_path=tmp_path / "queue.sqlite",
            host="127.0.0.1",
            servers=[(5020, first), (5021, second)],
            poll_interval_s=2.5,
        )
    )
    settings = load_settings(EdgeSettings, path)

    assert settings.gateway_id == "gw-test"
    assert settings.mqtt.url == "mqtt://127.0.0.1:1999"
    assert [(c.name, c.port) for c in settings.connections] == [("sim", 5020), ("sim-2", 5021)]
    assert len(settings.meters) == 250
    for meter, entry in zip(meters, settings.meters, strict=True):
        assert entry.meter_id == meter.meter_id
        assert entry.unit_id == meter.unit_id
        assert entry.connection == ("sim" if meter.spec.server_index == 0 else "sim-2")
        assert entry.profile == f"simulated-{meter.model.value}"
        assert entry.time_source == "device"
        assert entry.poll_interval_s == 2.5


def test_clock_runs_at_speed_from_its_start() -> None:
    clock = SimClock(START, speed=3600)
    first = clock.now_ms()
    time.sleep(0.05)
    second = clock.now_ms()
    assert START <= first < second
    assert second - START >= 0.05 * 3600 * 1000  # at least the real time slept, accelerated


def test_default_start_is_now_in_real_time_else_the_previous_month() -> None:
    now = int(datetime(2025, 1, 17, 13, 5, tzinfo=UTC).timestamp() * 1000)
    assert default_start_ms(1.0, now_ms=now) == now
    assert default_start_ms(8640, now_ms=now) == int(
        datetime(2024, 12, 1, tzinfo=UTC).timestamp() * 1000
    )
    later = int(datetime(2025, 7, 31, 23, 59, tzinfo=UTC).timestamp() * 1000)
    assert default_start_ms(60, now_ms=later) == int(
        datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000
    )
    with pytest.raises(ValueError, match="speed"):
        SimClock(START, speed=0)
