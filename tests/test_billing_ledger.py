"""Invoice ledger and issuing: same inputs reuse a revision, changed inputs add one."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from billing_samples import sample_invoice

from billing.bill import BillingError
from billing.issue import file_stem, invoice_number, issue_invoice
from billing.ledger import Ledger, LedgerError
from billing.model import Customer, Invoice

NUMBER = "INV-ACC-1001-m-0001-202611"
ALL = ("json", "html", "pdf")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix != ".sqlite3"}


def _changed_inputs(invoice: Invoice) -> Invoice:
    """What the engine gives after a late read raised the last day's energy."""
    daily = list(invoice.daily)
    last = daily[-1]
    daily[-1] = last.model_copy(
        update={
            "import_kwh_by_period": {
                **last.import_kwh_by_period,
                "off_peak": last.import_kwh_by_period["off_peak"] + Decimal("1.250"),
            }
        }
    )
    return invoice.model_copy(update={"daily": daily, "content_hash": "sha256:" + "cd34" * 16})


def test_invoice_number_and_file_names() -> None:
    assert invoice_number("ACC-1001", "m-0001", date(2026, 11, 1)) == NUMBER
    assert file_stem(NUMBER, 1) == NUMBER
    assert file_stem(NUMBER, 2) == NUMBER + "-r2"
    with pytest.raises(ValueError, match="account id 'ACC/1'"):
        invoice_number("ACC/1", "m-0001", date(2026, 11, 1))


def test_same_inputs_reuse_the_revision_and_rewrite_identical_files(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        first = issue_invoice(sample_invoice(), ledger, out, ALL)
        before = _snapshot(out)
        second = issue_invoice(sample_invoice(), ledger, out, ALL)
        entries = ledger.entries()
    assert (first.entry.revision, first.reused) == (1, False)
    assert (second.entry.revision, second.reused) == (1, True)
    assert sorted(before) == [f"{NUMBER}.html", f"{NUMBER}.json", f"{NUMBER}.pdf"]
    assert _snapshot(out) == before
    assert len(entries) == 1
    assert entries[0].created_at == first.entry.created_at
    assert entries[0].total == sample_invoice().total
    assert entries[0].files == {fmt: (out / f"{NUMBER}.{fmt}").resolve() for fmt in ALL}


def test_changed_inputs_issue_revision_two_and_keep_the_old_files(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        issue_invoice(sample_invoice(), ledger, out, ALL)
        r1_files = _snapshot(out)
        r2 = issue_invoice(_changed_inputs(sample_invoice()), ledger, out, ALL)
        again = issue_invoice(_changed_inputs(sample_invoice()), ledger, out, ALL)
        entries = ledger.entries(NUMBER)
    assert (r2.entry.revision, r2.reused) == (2, False)
    assert (again.entry.revision, again.reused) == (2, True)
    files = _snapshot(out)
    for name, data in r1_files.items():
        assert files[name] == data  # revision 1 untouched
    assert {f"{NUMBER}-r2.{fmt}" for fmt in ALL} <= set(files)
    record = json.loads(files[f"{NUMBER}-r2.json"])
    assert record["revision"] == 2 and record["content_hash"] == "sha256:" + "cd34" * 16
    assert [(e.revision, e.content_hash[:11]) for e in entries] == [
        (1, "sha256:ab12"),
        (2, "sha256:cd34"),
    ]


def test_inputs_returning_to_an_old_state_get_a_new_revision(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        issue_invoice(sample_invoice(), ledger, out, ["json"])
        issue_invoice(_changed_inputs(sample_invoice()), ledger, out, ["json"])
        r3 = issue_invoice(sample_invoice(), ledger, out, ["json"])
    # Revision 2 superseded revision 1: going back is a new document, not a silent r1.
    assert r3.entry.revision == 3
    assert json.loads((out / f"{NUMBER}-r3.json").read_bytes())["revision"] == 3


def test_changed_customer_details_with_the_same_inputs_hash_are_a_new_revision(
    tmp_path: Path,
) -> None:
    out = tmp_path / "invoices"
    moved = sample_invoice().model_copy(
        update={"customer": Customer(account_id="ACC-1001", name="Erika Müller", address=["Neu 1"])}
    )
    with Ledger(out / "ledger.sqlite3") as ledger:
        issue_invoice(sample_invoice(), ledger, out, ["json"])
        r2 = issue_invoice(moved, ledger, out, ["json"])
    assert r2.entry.revision == 2
    assert r2.entry.content_hash == sample_invoice().content_hash


def test_more_formats_later_extend_the_same_revision(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        issue_invoice(sample_invoice(), ledger, out, ["json"])
        issued = issue_invoice(sample_invoice(), ledger, out, ["html"])
        (entry,) = ledger.entries()
    assert issued.entry.revision == 1
    assert set(entry.files) == {"json", "html"}  # JSON, the record, is always written
    assert sorted(p.name for p in out.glob("INV-*")) == [f"{NUMBER}.html", f"{NUMBER}.json"]


def test_files_without_a_ledger_record_are_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        issue_invoice(sample_invoice(), ledger, out, ["json"])
    (out / "ledger.sqlite3").unlink()
    with Ledger(out / "ledger.sqlite3") as fresh:
        # Same bytes as on disk: an interrupted run can be completed.
        assert issue_invoice(sample_invoice(), fresh, out, ["json"]).entry.revision == 1
    (out / "ledger.sqlite3").unlink()
    before = (out / f"{NUMBER}.json").read_bytes()
    with Ledger(out / "ledger.sqlite3") as fresh:
        with pytest.raises(LedgerError, match="refusing to overwrite"):
            issue_invoice(_changed_inputs(sample_invoice()), fresh, out, ["json"])
        assert fresh.entries() == []  # the failed issue left no ledger row
    assert (out / f"{NUMBER}.json").read_bytes() == before


def test_an_issued_revision_cannot_be_rewritten_with_other_content(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        issued = issue_invoice(sample_invoice(), ledger, out, ["json"])
        tampered = replace(issued.entry, record_sha256="0" * 64)
        with pytest.raises(LedgerError, match="already issued with different content"):
            ledger.record(tampered)


def test_ledger_table_and_relative_paths(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    with Ledger(out / "ledger.sqlite3") as ledger:
        issue_invoice(sample_invoice(), ledger, out, ["json", "html"])
    with sqlite3.connect(out / "ledger.sqlite3") as conn:
        row = conn.execute(
            "SELECT invoice_number, revision, json_path, html_path, pdf_path, total, currency "
            "FROM invoices"
        ).fetchone()
    total = str(sample_invoice().total)
    assert row == (NUMBER, 1, f"{NUMBER}.json", f"{NUMBER}.html", None, total, "EUR")
    # The folder moves as a whole: paths resolve against the ledger's new place.
    moved = tmp_path / "archive"
    out.rename(moved)
    with Ledger(moved / "ledger.sqlite3") as ledger:
        (entry,) = ledger.entries()
    assert entry.files["json"] == (moved / f"{NUMBER}.json").resolve()
    assert entry.files["json"].read_bytes() == (moved / f"{NUMBER}.json").read_bytes()


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger, pytest.raises(ValueError, match="docx"):
        issue_invoice(sample_invoice(), ledger, tmp_path, ["json", "docx"])


def test_a_conflicting_file_stops_the_issue_before_any_file_is_written(tmp_path: Path) -> None:
    out = tmp_path / "invoices"
    out.mkdir()
    (out / f"{NUMBER}.html").write_text("someone else's invoice", encoding="utf-8")
    with Ledger(out / "ledger.sqlite3") as ledger:
        with pytest.raises(LedgerError, match=rf"{NUMBER}\.html exists with other content"):
            issue_invoice(sample_invoice(), ledger, out, ["json", "html"])
        assert ledger.entries() == []
    assert not (out / f"{NUMBER}.json").exists()
    assert (out / f"{NUMBER}.html").read_text(encoding="utf-8") == "someone else's invoice"


def test_partial_periods_get_their_own_invoice_numbers() -> None:
    from billing.bill import parse_period

    assert parse_period("2026-11-03..2026-11-10") == (date(2026, 11, 3), date(2026, 11, 10))
    assert parse_period("2026-12") == (date(2026, 12, 1), date(2027, 1, 1))
    assert invoice_number("A1", "m-1", date(2026, 11, 1), date(2026, 12, 1)) == "INV-A1-m-1-202611"
    assert (
        invoice_number("A1", "m-1", date(2026, 11, 3), date(2026, 11, 10))
        == "INV-A1-m-1-20261103-20261110"
    )
    for bad in ("2026-11-10..2026-11-03", "2026-11-31..2026-12-02", "Nov"):
        with pytest.raises(BillingError):
            parse_period(bad)
