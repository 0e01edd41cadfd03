"""Tariff and accounts files: the shipped examples, errors with file:line, the CLI."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from billing_support import TARIFFS

from billing.accounts import Account, load_accounts, render_accounts_yaml
from billing.tariff import DynamicEnergy, TouEnergy, load_tariff, load_tariffs
from billing.tariff_cli import describe
from electrocloud.cli import main
from electrocloud.errors import ConfigError

EXAMPLES = Path(__file__).parent.parent / "billing"


def test_shipped_example_tariffs_load() -> None:
    tariffs = load_tariffs(TARIFFS)
    assert set(tariffs) == {
        "de-household-flat",
        "commercial-tou-demand",
        "dynamic-spot",
        "pv-net-metering",
    }
    household = tariffs["de-household-flat"]
    assert (household.currency, household.timezone) == ("EUR", "Europe/Berlin")
    assert household.versions[0].tax is not None and household.versions[0].tax.percent == 19
    assert household.versions[0].energy.price == Decimal("0.2895")  # type: ignore[union-attr]
    commercial = tariffs["commercial-tou-demand"].versions[0]
    assert isinstance(commercial.energy, TouEnergy) and len(commercial.demand) == 2
    dynamic = tariffs["dynamic-spot"]
    energy = dynamic.versions[0].energy
    assert isinstance(energy, DynamicEnergy)
    steps = dynamic.series(energy.series)
    assert min(price for _, price in steps) < Decimal("0.1650")  # negative spot prices exist
    assert steps[1][0] - steps[0][0] == 3_600_000


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


HEADER = """
id: t
name: T
currency: EUR
timezone: Europe/Berlin
"""


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        (
            "versions:\n  - valid_from: 2024-01-01\n    energy: {type: flat, prise: 0.3}\n",
            "t.yaml:7",
            "versions[0].energy.flat.prise: unknown field; remove it",
        ),
        (
            "versions:\n  - valid_from: 2024-01-01\n    energy: {type: flat, price: abc}\n",
            "t.yaml:7",
            "versions[0].energy.flat.price",
        ),
        (
            "versions:\n  - valid_from: 2024-01-01\n    tou:\n      periods: [peak]\n"
            "      seasons:\n        - name: s\n          months: '1-11'\n          default: peak\n"
            "          all: []\n",
            "t.yaml:7",
            "versions[0].tou: Value error, months [12] are in no season",
        ),
        (
            "versions:\n  - valid_from: 2024-01-01\n    tou:\n      periods: [peak, offp]\n"
            "      seasons:\n        - name: s\n          months: '1-12'\n          default: offp\n"
            "          all:\n            - {from: '08:00', to: '12:00', period: peak}\n"
            "            - {from: '11:00', to: '13:00', period: peak}\n",
            "t.yaml:10",  # the season
            "versions[0].tou.seasons[0]: Value error, all: range 11:00-13:00 overlaps another",
        ),
        (
            "versions:\n  - valid_from: 2024-01-01\n    tou:\n      periods: [peak]\n"
            "      seasons:\n        - name: s\n          months: '1-12'\n          default: peak\n"
            "          all: [{from: '08:10', to: '12:00', period: peak}]\n",
            "t.yaml:13",
            "'08:10' is not HH:MM on the 15-minute grid",
        ),
        (
            "versions:\n  - valid_from: 2024-01-01\n    energy:\n      type: tiered\n"
            "      tiers: {blocks: [{up_to_kwh: 100, price: 0.2}, {up_to_kwh: 50, price: 0.3}]}\n",
            "t.yaml:7",
            "the last block must have no up_to_kwh",
        ),
    ],
)
def test_invalid_tariff_names_file_line_and_field(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    path = write(tmp_path, HEADER + body)
    with pytest.raises(ConfigError) as caught:
        load_tariff(path)
    text = str(caught.value)
    assert f"{tmp_path / where}" in text, text
    assert message in text, text


def test_bad_time_zone_currency_and_holidays_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        id: t
        name: T
        currency: euro
        timezone: Europe/Berlinn
        holidays: {country: XX}
        versions: [{valid_from: 2024-01-01}]
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_tariff(path)
    text = str(caught.value)
    assert "3 problems" in text
    assert ":3: currency" in text and ":4: timezone" in text and "Europe/Berlinn" in text
    assert "holidays" in text and "XX" in text


def test_price_series_problems_name_the_file_and_row(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(
        "start,price\n2024-01-01T00:00:00+01:00,10\n2024-01-01T02:00:00+01:00,11\n"
    )
    path = write(
        tmp_path,
        HEADER + "versions:\n  - valid_from: 2024-01-01\n    energy:\n      type: dynamic\n"
        "      series: {file: p.csv}\n",
    )
    with pytest.raises(ConfigError, match="rows must be evenly 15 minutes or 1 hour apart"):
        load_tariff(path)
    (tmp_path / "p.csv").write_text("start,price\n2024-01-01T00:00:00,10\n")
    with pytest.raises(ConfigError, match=r"p\.csv:2: '2024-01-01T00:00:00' needs a UTC offset"):
        load_tariff(path)
    (tmp_path / "p.csv").unlink()
    with pytest.raises(ConfigError, match=r"t\.yaml:9: versions\[0\]\.energy\.series\.file"):
        load_tariff(path)


def test_accounts_example_maps_meters_to_customers_and_tariffs() -> None:
    accounts = load_accounts(EXAMPLES / "accounts.example.yaml")
    assert list(accounts) == ["m-0001", "m-0002", "m-0003", "m-0004"]
    assert accounts["m-0001"].customer.name == "Erika Mustermann"
    assert accounts["m-0001"].max_power_kw == 43.5
    assert accounts.tariff_for("m-0001").id == "de-household-flat"
    assert accounts.tariff_for("m-0004").id == "pv-net-metering"  # given as a path


def test_generated_accounts_round_trip(tmp_path: Path) -> None:
    generated = [
        Account(
            account_id=f"A-{n}",
            meter_id=f"m-{n:04d}",
            name=f"Customer {n}",
            tariff="de-household-flat",
        )
        for n in range(1, 4)
    ]
    path = tmp_path / "accounts.yaml"
    path.write_text(render_accounts_yaml(generated, tariffs_dir=str(TARIFFS)))
    accounts = load_accounts(path)
    assert list(accounts.values()) == generated
    assert accounts.tariff_for("m-0002").name == "Haushaltsstrom Basis"


def test_accounts_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        accounts:
          - {account_id: A, meter_id: m-1, name: X, tariff: nope}
          - {account_id: B, meter_id: "bad id", name: Y, tariff: nope}
        """,
        "accounts.yaml",
    )
    with pytest.raises(ConfigError, match=r"accounts\.yaml:3: accounts\[1\]\.meter_id"):
        load_accounts(path)
    path = write(
        tmp_path,
        f"tariffs_dir: {TARIFFS}\naccounts:\n  - {{account_id: A, meter_id: m-1, name: X, "
        "tariff: nope}\n",
        "accounts.yaml",
    )
    with pytest.raises(ConfigError, match="no tariff with id 'nope' \\(known: commercial"):
        load_accounts(path).tariff_for("m-1")


def test_cli_validate_and_explain(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["tariff", "validate", str(TARIFFS / "de-household-flat.yaml")]) == 0
    assert "ok: de-household-flat (EUR, Europe/Berlin" in capsys.readouterr().out

    assert main(["tariff", "explain", str(TARIFFS / "commercial-tou-demand.yaml")]) == 0
    out = capsys.readouterr().out
    assert "periods: PE = peak, SH = shoulder, OP = off_peak" in out
    summer_weekday = next(line for line in out.splitlines() if line.strip().startswith("weekday"))
    cells = summer_weekday.split()[1:]
    assert cells[6:8] == ["OP", "SH"] and cells[14] == "PE" and cells[22] == "OP"
    assert "season winter (months 10,11,12,1,2,3,4,5; default off_peak)" in out
    assert "demand on_peak: 6.4 per kW in peak" in out

    bad = write(tmp_path, HEADER + "versions: []\n")
    assert main(["tariff", "validate", str(bad)]) == 2
    assert "versions" in capsys.readouterr().err


def test_explain_marks_hours_with_mixed_periods(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "versions:\n  - valid_from: 2024-01-01\n    tou:\n      periods: [peak, off_peak]\n"
        "      seasons:\n        - name: s\n          months: '1-12'\n"
        "          default: off_peak\n"
        "          all: [{from: '07:30', to: '09:00', period: peak}]\n",
    )
    weekday = next(line for line in describe(str(path)).splitlines() if "weekday" in line)
    assert weekday.split()[8:11] == ["OP*", "PE", "OP"]  # hours 7, 8 and 9
