"""``electrocloud bill`` end to end: a real SQLite store, the example tariffs, a subprocess.

Readings are written through ``SqliteStore`` exactly on the 15-minute grid, so
the energy of the month is known exactly: the register at the local midnight
that ends the month minus the one that starts it.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from billing.accounts import load_accounts
from billing.bill import BillingError, bill_period
from billing.tariff import load_tariff
from electrocloud.storage import StoredReading
from electrocloud.stores.sqlite import SqliteStore

REPO = Path(__file__).parent.parent
TARIFFS = REPO / "billing" / "tariffs"
QUARTER_MS = 900_000

ACCOUNTS_YAML = """\
tariffs_dir: {tariffs}
accounts:
  - account_id: A-1001
    meter_id: m-0001
    name: Erika Mustermann
    address: ["Hauptstraße 1", "10115 Berlin"]
    tariff: de-household-flat
  - account_id: C-2001
    meter_id: m-0003
    name: Hudson Valley Bakery LLC
    address: ["12 Main Street", "Kingston, NY 12401"]
    tariff: commercial-tou-demand
  - account_id: R-3001
    meter_id: m-0004
    name: Jordan Rivera
    tariff: pv-net-metering
"""


@dataclass
class Fleet:
    store_path: Path
    accounts_path: Path
    registers: dict[str, dict[int, tuple[Decimal, Decimal]]]  # meter -> ts -> (import, export)


def _local_midnight_ms(day: date, zone: str) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def _write_meter(
    store: SqliteStore, meter_id: str, zone: str, seed: int
) -> dict[int, tuple[Decimal, Decimal]]:
    """Reads every 15 minutes from 30 Oct to 2 Dec 2026 (local), a daily load shape with PV."""
    start = _local_midnight_ms(date(2026, 10, 30), zone)
    end = _local_midnight_ms(date(2026, 12, 2), zone)
    imp, exp = 5000.0 + seed, 100.0
    rows, registers = [], {}
    for k, ts in enumerate(range(start, end + 1, QUARTER_MS)):
        hour = (ts // 3_600_000) % 24
        imp += 0.05 + 0.15 * (1 + math.sin(hour / 24 * 2 * math.pi)) + 0.4 * (k % (89 + seed) == 0)
        exp += 0.06 * max(0.0, math.sin((hour - 6) / 12 * math.pi))
        imp, exp = round(imp, 3), round(exp, 3)
        rows.append(
            StoredReading(
                gateway_id="gw-1",
                meter_id=meter_id,
                ts_ms=ts,
                seq=k,
                import_kwh=imp,
                export_kwh=exp,
            )
        )
        registers[ts] = (Decimal(str(imp)), Decimal(str(exp)))
    store.write_batch(rows)
    return registers


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    store_path = tmp_path / "electrocloud.sqlite"
    store = SqliteStore(store_path)
    try:
        registers = {
            "m-0001": _write_meter(store, "m-0001", "Europe/Berlin", 1),
            "m-0003": _write_meter(store, "m-0003", "America/New_York", 7),
        }
    finally:
        store.close()
    accounts = tmp_path / "accounts.yaml"
    # tariffs_dir points at nothing useful: the runs pass --tariffs, which must win.
    accounts.write_text(ACCOUNTS_YAML.format(tariffs=tmp_path / "no-tariffs"), encoding="utf-8")
    return Fleet(store_path, accounts, registers)


def _bill(fleet: Fleet, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "electrocloud.cli",
        "bill",
        "--period",
        "2026-11",
        "--out",
        str(out),
        "--store",
        f"sqlite:{fleet.store_path}",
        "--accounts",
        str(fleet.accounts_path),
        "--tariffs",
        str(TARIFFS),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _month_import_kwh(fleet: Fleet, meter_id: str, zone: str) -> Decimal:
    registers = fleet.registers[meter_id]
    start = _local_midnight_ms(date(2026, 11, 1), zone)
    end = _local_midnight_ms(date(2026, 12, 1), zone)
    return registers[end][0] - registers[start][0]


def test_bill_writes_json_html_pdf_with_exact_energy_and_totals(
    fleet: Fleet, tmp_path: Path
) -> None:
    out = tmp_path / "invoices"
    result = _bill(fleet, out, "--meter", "m-0001", "--meter", "m-0003", "--explain", "m-0003")
    assert result.returncode == 0, result.stderr

    for meter, account, zone in (
        ("m-0001", "A-1001", "Europe/Berlin"),
        ("m-0003", "C-2001", "America/New_York"),
    ):
        stem = out / f"INV-{account}-{meter}-202611"
        record = json.loads(stem.with_suffix(".json").read_bytes())
        tariff = load_tariff(TARIFFS / f"{record['tariff_id']}.yaml")
        assert record["timezone"] == tariff.timezone == zone
        assert (record["period_start"], record["period_end"]) == ("2026-11-01", "2026-12-01")
        assert record["register_start"]["at_ms"] == _local_midnight_ms(date(2026, 11, 1), zone)
        assert Decimal(record["energy"]["import_kwh"]) == _month_import_kwh(fleet, meter, zone)
        assert Decimal(record["energy"]["import_estimated_kwh"]) == 0
        amounts = [Decimal(line["amount"]) for line in record["lines"]]
        assert Decimal(record["total"]) == sum(amounts) > 0
        assert len(record["daily"]) == 30
        daily_kwh = sum(
            Decimal(v) for d in record["daily"] for v in d["import_kwh_by_period"].values()
        )
        assert daily_kwh == Decimal(record["energy"]["import_kwh"])
        # The summary printed the same total; the files of both renderings exist.
        assert f"{Decimal(record['total']):,} {record['currency']}" in result.stdout
        html = stem.with_suffix(".html").read_text(encoding="utf-8")
        assert html.count('<g class="bar" data-day=') == 30
        pdf_text = "".join(
            page.extract_text()
            for page in PdfReader(io.BytesIO(stem.with_suffix(".pdf").read_bytes())).pages
        )
        assert f"{Decimal(record['total']):,} {record['currency']}" in pdf_text

    tou = json.loads((out / "INV-C-2001-m-0003-202611.json").read_bytes())
    assert list(tou["daily"][2]["import_kwh_by_period"]) == ["peak", "shoulder", "off_peak"]
    assert {line["component"] for line in tou["lines"]} >= {"fixed", "energy", "demand", "tax"}
    assert 'class="peak-marker"' in (out / "INV-C-2001-m-0003-202611.html").read_text()

    # --explain: the reads at the boundaries and the rule behind each priced line.
    assert "Explain INV-C-2001-m-0003-202611 revision 1" in result.stdout
    assert "register.import.start" in result.stdout
    for line in tou["lines"]:
        assert line["rule_id"] in result.stdout
    with sqlite3.connect(out / "ledger.sqlite3") as conn:
        rows = conn.execute("SELECT invoice_number, revision, total FROM invoices").fetchall()
    assert sorted(rows) == sorted(
        (
            f"INV-{a}-{m}-202611",
            1,
            json.loads((out / f"INV-{a}-{m}-202611.json").read_bytes())["total"],
        )
        for a, m in (("A-1001", "m-0001"), ("C-2001", "m-0003"))
    )


def test_rerun_is_byte_identical_and_corrected_reads_issue_revision_two(
    fleet: Fleet, tmp_path: Path
) -> None:
    out = tmp_path / "invoices"
    first = _bill(fleet, out, "--meter", "m-0001", "--format", "json,html")
    assert first.returncode == 0, first.stderr
    snapshot = {p.name: p.read_bytes() for p in out.glob("INV-*")}
    assert sorted(snapshot) == ["INV-A-1001-m-0001-202611.html", "INV-A-1001-m-0001-202611.json"]

    again = _bill(fleet, out, "--meter", "m-0001", "--format", "json,html")
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in out.glob("INV-*")} == snapshot

    # A corrected upload: from 20 Nov 12:00 the register reads 2.5 kWh higher.
    zone = "Europe/Berlin"
    since = int(datetime(2026, 11, 20, 12, tzinfo=ZoneInfo(zone)).timestamp() * 1000)
    registers = fleet.registers["m-0001"]
    store = SqliteStore(fleet.store_path)
    try:
        store.write_batch(
            [
                StoredReading(
                    gateway_id="gw-1",
                    meter_id="m-0001",
                    ts_ms=ts,
                    seq=0,
                    import_kwh=float(imp + Decimal("2.5")),
                    export_kwh=float(exp),
                )
                for ts, (imp, exp) in registers.items()
                if ts >= since
            ]
        )
    finally:
        store.close()
    third = _bill(fleet, out, "--meter", "m-0001", "--format", "json,html")
    assert third.returncode == 0, third.stderr
    files = {p.name: p.read_bytes() for p in out.glob("INV-*")}
    for name, data in snapshot.items():
        assert files[name] == data  # revision 1 kept as issued
    r1 = json.loads(snapshot["INV-A-1001-m-0001-202611.json"])
    r2 = json.loads(files["INV-A-1001-m-0001-202611-r2.json"])
    assert r2["revision"] == 2 and r2["content_hash"] != r1["content_hash"]
    assert Decimal(r2["energy"]["import_kwh"]) == Decimal(r1["energy"]["import_kwh"]) + Decimal(
        "2.5"
    )
    assert "INV-A-1001-m-0001-202611-r2.html" in files


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--meter", "m-9999"], 1, "unknown meter(s) m-9999: no account for them"),
        (["--meter", "m-0004"], 1, "no readings in 2026-11 for meter(s) m-0004"),
        (["--all"], 1, "no readings in 2026-11 for meter(s) m-0004"),
        (["--meter", "m-0001", "--format", "docx"], 1, "--format 'docx': choose from json"),
    ],
)
def test_bad_requests_exit_nonzero_with_a_clear_message_and_write_nothing(
    fleet: Fleet, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "invoices"
    result = _bill(fleet, out, *args)
    assert result.returncode == code
    assert message in result.stderr
    assert not list(out.glob("INV-*"))


def test_missing_tariff_and_missing_store_are_clear_errors(fleet: Fleet, tmp_path: Path) -> None:
    text = fleet.accounts_path.read_text(encoding="utf-8")
    fleet.accounts_path.write_text(
        text.replace("tariff: de-household-flat", "tariff: no-such-tariff"), encoding="utf-8"
    )
    out = tmp_path / "invoices"
    missing_tariff = _bill(fleet, out, "--meter", "m-0001")
    assert missing_tariff.returncode == 2
    assert "no tariff with id 'no-such-tariff'" in missing_tariff.stderr

    fleet.store_path = tmp_path / "absent.sqlite"
    missing_store = _bill(fleet, out, "--meter", "m-0003")
    assert missing_store.returncode == 1
    assert f"no SQLite store at {tmp_path / 'absent.sqlite'}" in missing_store.stderr
    assert not (tmp_path / "absent.sqlite").exists()  # billing never creates a store
    assert not list(out.glob("INV-*"))


def test_bill_period_api_reports_each_invoice(fleet: Fleet, tmp_path: Path) -> None:
    accounts = load_accounts(fleet.accounts_path)
    store = SqliteStore(fleet.store_path)
    seen: list[str] = []
    try:
        outcomes = bill_period(
            store,
            accounts,
            TARIFFS,
            "2026-11",
            tmp_path / "out",
            ["m-0003", "m-0001"],
            formats=["json"],
            on_issued=lambda outcome: seen.append(outcome.meter_id),
        )
        with pytest.raises(BillingError, match="period '2026-13'"):
            bill_period(store, accounts, TARIFFS, "2026-13", tmp_path / "out", ["m-0001"])
    finally:
        store.close()
    assert [o.meter_id for o in outcomes] == seen == ["m-0003", "m-0001"]
    for outcome, zone in zip(outcomes, ("America/New_York", "Europe/Berlin"), strict=True):
        record = json.loads(outcome.files["json"].read_bytes())
        assert set(outcome.files) == {"json"}
        assert outcome.import_kwh == _month_import_kwh(fleet, outcome.meter_id, zone)
        assert (outcome.total, outcome.currency) == (Decimal(record["total"]), record["currency"])
        assert outcome.customer == record["customer"]["name"]
        assert (outcome.revision, outcome.reused) == (1, False)
        assert [line.rule_id for line in outcome.lines] == [x["rule_id"] for x in record["lines"]]
        assert outcome.explain  # the engine's trace travels with the outcome


def test_influxdb_store_needs_org_bucket_and_a_real_token() -> None:
    from billing.bill import BillingError
    from billing.cli import INFLUX_ENV, open_store
    from electrocloud.errors import ConfigError
    from electrocloud.stores.influx import InfluxStore

    env = {INFLUX_ENV + "ORG": "electrocloud", INFLUX_ENV + "BUCKET": "readings"}
    with pytest.raises(BillingError, match=f"set {INFLUX_ENV}TOKEN"):
        open_store("influxdb:http://127.0.0.1:8086", env)
    with pytest.raises(ConfigError, match="placeholder"):
        open_store("influxdb:http://127.0.0.1:8086", {**env, INFLUX_ENV + "TOKEN": "CHANGE_ME"})
    store = open_store("influxdb:http://127.0.0.1:8086", {**env, INFLUX_ENV + "TOKEN": "t0k3n"})
    assert isinstance(store, InfluxStore)
    assert (store.url, store.org, store.bucket) == (
        "http://127.0.0.1:8086",
        "electrocloud",
        "readings",
    )
    store.close()
    with pytest.raises(BillingError, match="expected sqlite:PATH or influxdb:URL"):
        open_store("postgres:x", {})


def test_previous_period_is_last_calendar_month() -> None:
    from datetime import UTC, datetime

    from billing.bill import parse_period

    start, end = parse_period("previous")
    today = datetime.now(UTC).date()
    assert end == today.replace(day=1) and start.day == 1 and start < end
    assert (end - start).days in (28, 29, 30, 31)
