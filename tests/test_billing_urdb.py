"""URDB import: the real SCE GS-2 TOU B rate converted, validated and billed by hand."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from billing_support import amounts, bill, write_intervals

from billing.engine import period_bounds_ms
from billing.tariff import load_tariff, parse_tariff
from billing.urdb import UrdbError, convert_urdb
from electrocloud.cli import main
from electrocloud.stores.sqlite import SqliteStore

FIXTURE = Path(__file__).parent / "fixtures" / "urdb" / "sce-gs-2-tou-b.json"


@pytest.fixture
def sce() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "readings.db")
    yield s
    s.close()


def test_sce_rate_converts_every_charge(sce: dict[str, Any]) -> None:
    conversion = convert_urdb(sce, timezone="America/Los_Angeles")
    tariff = parse_tariff(conversion.yaml_text, "sce.yaml", Path("."))
    (version,) = tariff.versions
    assert tariff.id == "urdb-55fc81d7682bea28da64f9ae" and tariff.currency == "USD"
    assert str(version.valid_from) == "2015-06-01"  # startdate 1433116800
    # The older fixedmonthlycharge spelling.
    assert [(f.per, f.price) for f in version.fixed] == [("month", Decimal("259.2"))]
    assert version.tou is not None and version.tou.periods == [f"period_{i}" for i in range(5)]
    prices = {k: v.price for k, v in version.energy.prices.items()}  # type: ignore[union-attr]
    assert prices == {
        "period_0": Decimal("0.0712"),
        "period_1": Decimal("0.09368"),
        "period_2": Decimal("0.066"),
        "period_3": Decimal("0.08888"),
        "period_4": Decimal("0.1355"),
    }
    # Every month and hour of both 12 x 24 schedules maps back to the URDB period id.
    grid = version.tou.grid()
    seasons = version.tou.season_of_month()
    for month in range(12):
        for hour in range(24):
            season = grid[seasons[month]]
            weekday_period = season[0][hour * 4]
            weekend_period = season[1][hour * 4]
            assert weekday_period == sce["energyweekdayschedule"][month][hour]
            assert weekend_period == sce["energyweekendschedule"][month][hour]
    demand = [(d.id, d.price_per_kw, d.periods, d.months) for d in version.demand]
    assert demand == [
        ("flat_demand_0", Decimal("13.2"), None, None),
        ("tou_demand_1", Decimal("5.3"), ["demand_period_1"], None),
        ("tou_demand_2", Decimal("18.11"), ["demand_period_2"], None),
    ]  # demand period 0 has rate 0: no charge
    # Free-text attributes are warned about and listed in the file, not dropped silently.
    assert len(conversion.warnings) == 10
    assert "#   - energyattrs: California Climate credit: $-0.00669/kwh" in conversion.yaml_text
    assert "Facilties Voltage Discount >220 kV: $-9.96/KW" in conversion.yaml_text


def test_sce_rate_billed_for_july_by_hand(
    sce: dict[str, Any], store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "sce.yaml"
    path.write_text(convert_urdb(sce, timezone="America/Los_Angeles").yaml_text)
    tariff = load_tariff(path)
    july = (date(2015, 7, 1), date(2015, 8, 1))
    start_ms, _ = period_bounds_ms(tariff, *july)
    profile = [0.25] * (31 * 96)  # 1 kW all month

    def quarter(day: int, hour: int) -> int:
        return ((day - 1) * 24 + hour) * 4

    profile[quarter(15, 14)] = 5.0  # Wed 14:00, on-peak: 20 kW
    profile[quarter(16, 9)] = 4.0  # Thu 09:00, mid-peak: 16 kW
    profile[quarter(18, 3)] = 6.0  # Sat 03:00, off-peak: 24 kW
    write_intervals(store, "m-1", start_ms, profile)

    priced = bill(store, tariff, "m-1", *july)

    # July 2015: 23 weekdays, 8 weekend days, no DST change, no holidays in URDB.
    # Weekday hours: period 2 (off) 0-8 and 23 = 9 h, period 3 (mid) 8-12 and 18-23 = 9 h,
    # period 4 (on) 12-18 = 6 h; weekends all period 2.
    # off: 23 x 9 + 8 x 24 = 399 kWh + 5.75 (Sat spike) = 404.75 x 0.066 = 26.7135
    # mid: 23 x 9 = 207 kWh + 3.75 = 210.75 x 0.08888 = 18.73146
    # on: 23 x 6 = 138 kWh + 4.75 = 142.75 x 0.1355 = 19.342625
    assert amounts(priced) == {
        "fixed.fixed": "259.20",
        "energy.tou.period_0": "0.00",  # winter periods
        "energy.tou.period_1": "0.00",
        "energy.tou.period_2": "26.71",
        "energy.tou.period_3": "18.73",
        "energy.tou.period_4": "19.34",
        "demand.flat_demand_0": "316.80",  # 24 kW x 13.20
        "demand.tou_demand_1": "84.80",  # 16 kW x 5.30
        "demand.tou_demand_2": "362.20",  # 20 kW x 18.11
    }
    assert priced.total == Decimal("1087.78")
    assert priced.energy.import_kwh == Decimal("758.25")  # 744 + 14.25


def test_fixed_charge_first_meter_spelling_and_units(sce: dict[str, Any]) -> None:
    rate = copy.deepcopy(sce)
    del rate["fixedmonthlycharge"]
    rate.update(fixedchargefirstmeter=8.5, fixedchargeunits="$/day", fixedchargeeaaddl=3)
    conversion = convert_urdb(rate, timezone="America/Los_Angeles", tariff_id="sce")
    version = yaml.safe_load(conversion.yaml_text)["versions"][0]
    assert version["fixed"] == [
        {"id": "fixed", "description": "Fixed charge", "per": "day", "price": 8.5}
    ]
    assert any("fixedchargeeaaddl 3" in warning for warning in conversion.warnings)


def test_single_period_tiers_become_tiered_energy(sce: dict[str, Any]) -> None:
    rate = {
        key: value
        for key, value in sce.items()
        if not key.startswith(("energy", "demand", "flatdemand"))
    }
    rate["energyratestructure"] = [
        [{"rate": 0.1, "max": 500, "unit": "kWh daily"}, {"rate": 0.12, "adj": 0.01}]
    ]
    version = yaml.safe_load(convert_urdb(rate, timezone="UTC").yaml_text)["versions"][0]
    assert version["energy"] == {
        "type": "tiered",
        "tiers": {"basis": "daily", "blocks": [{"up_to_kwh": 500, "price": 0.1},
                                               {"price": 0.13}]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["energyratestructure"][1].append({"rate": 0.2}), "periods [1] have tiers"),
        (lambda r: r.update(demandwindow=30), "demandwindow 30 min"),
        (lambda r: r["energyratestructure"][0][0].update(sell=0.03), "sell rates"),
        (lambda r: r.update(annualmincharge=1200), "annualmincharge (an annual minimum charge)"),
        (lambda r: r.update(demandratchetpercentage=[0.8] * 12), "demand ratchet"),
        (lambda r: r["flatdemandstructure"][0].append({"rate": 2}), "demand tiers"),
        (lambda r: r["energyratestructure"][0][0].update(unit="kWh/kW"), "'kWh/kW'"),
        (lambda r: r["energyweekdayschedule"][3].__setitem__(5, 9), "[month 4][hour 5] = 9"),
        (lambda r: r.pop("startdate"), "startdate"),
    ],
)  # fmt: skip
def test_what_cannot_be_expressed_is_refused(
    sce: dict[str, Any], change: Any, message: str
) -> None:
    rate = copy.deepcopy(sce)
    change(rate)
    with pytest.raises(UrdbError) as caught:
        convert_urdb(rate, timezone="America/Los_Angeles")
    assert message in str(caught.value)


def test_cli_import_urdb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sce.yaml"
    args = ["tariff", "import-urdb", str(FIXTURE), "-o", str(out)]
    assert main([*args, "--timezone", "America/Los_Angeles"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "10 warnings" in captured.out
    assert "warning: energyattrs: Voltage Discount" in captured.err
    assert load_tariff(out).versions[0].fixed[0].price == Decimal("259.2")
    assert main(["tariff", "validate", str(out)]) == 0

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(FIXTURE.read_text()), "demandwindow": 60}))
    bad_args = ["tariff", "import-urdb", str(broken), "-o", str(tmp_path / "x.yaml")]
    assert main([*bad_args, "--timezone", "UTC"]) == 1
    assert "demandwindow 60 min" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()
