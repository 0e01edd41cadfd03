"""Invoice rendering: canonical JSON, its schema, HTML and PDF.

Golden files live in tests/golden/; after an intended change to the JSON form
or the template, regenerate them (and docs/invoice.schema.json) with
``UPDATE_GOLDEN=1 python -m pytest tests/test_billing_render.py`` and review the diff.
"""

from __future__ import annotations

import io
import json
import os
import re
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from billing_samples import assert_golden, sample_invoice
from pypdf import PdfReader

from billing.invoice_json import (
    InvoiceFormatError,
    decimal_text,
    invoice_json,
    invoice_json_schema_text,
    parse_invoice_json,
)
from billing.model import Customer, Invoice
from billing.render_html import invoice_html, money
from billing.render_pdf import PdfRenderError, html_to_pdf, invoice_pdf

SCHEMA_FILE = Path(__file__).parent.parent / "docs" / "invoice.schema.json"


def test_json_matches_golden_file() -> None:
    assert_golden("invoice-sample.json", invoice_json(sample_invoice()))


def test_html_matches_golden_file() -> None:
    assert_golden("invoice-sample.html", invoice_html(sample_invoice()).encode("utf-8"))


def test_schema_file_is_generated_from_the_model() -> None:
    text = invoice_json_schema_text()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        SCHEMA_FILE.write_text(text, encoding="utf-8")
    assert SCHEMA_FILE.read_text(encoding="utf-8") == text, (
        "docs/invoice.schema.json is stale: regenerate it with UPDATE_GOLDEN=1"
    )


def test_json_validates_against_the_published_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    document = json.loads(invoice_json(sample_invoice()))
    jsonschema.Draft202012Validator(schema).validate(document)
    # A float where a decimal string belongs is rejected: readers never get floats.
    document["total"] = 220.17
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(document)


def test_json_round_trips_exactly() -> None:
    invoice = sample_invoice()
    data = invoice_json(invoice)
    parsed = parse_invoice_json(data)
    assert parsed == invoice
    assert invoice_json(parsed) == data


def test_json_keeps_model_key_order_and_decimals_as_strings() -> None:
    document = json.loads(invoice_json(sample_invoice()))
    assert list(document) == list(Invoice.model_fields)
    line = document["lines"][1]
    assert list(line) == [
        "component",
        "rule_id",
        "description",
        "period_start",
        "period_end",
        "quantity",
        "unit",
        "unit_price",
        "amount",
        "tariff_version",
    ]
    assert all(isinstance(line[key], str) for key in ("quantity", "unit_price", "amount"))
    # TOU periods in the engine's (tariff's) order, not sorted.
    assert list(document["daily"][1]["import_kwh_by_period"]) == ["off_peak", "shoulder", "peak"]


def test_equal_decimals_print_identically_and_exactly() -> None:
    invoice = sample_invoice()
    longer = invoice.model_copy(
        update={"total": Decimal("220.170"), "subtotal": Decimal("185.0200")}
    )
    assert invoice_json(longer) == invoice_json(invoice)
    assert decimal_text(Decimal("1.5"), 3) == "1.500"
    assert decimal_text(Decimal("1.50"), 3) == "1.500"
    assert decimal_text(Decimal("-0.000"), 3) == "0.000"
    assert decimal_text(Decimal("1E+2"), 0) == "100"
    # More places than the minimum are kept, never rounded away.
    assert decimal_text(Decimal("0.123456789"), 4) == "0.123456789"


def test_money_has_one_precision_per_invoice_and_is_never_rounded() -> None:
    # A tariff may round to a finer unit than the currency's (minor_unit: 3).
    invoice = sample_invoice().model_copy(update={"total": Decimal("220.175")})
    document = json.loads(invoice_json(invoice))
    assert document["total"] == "220.175"
    assert document["subtotal"] == "185.020"
    assert {len(line["amount"].split(".")[1]) for line in document["lines"]} == {3}


def test_non_finite_numbers_are_refused_with_their_place() -> None:
    invoice = sample_invoice().model_copy(update={"tax": Decimal("NaN")})
    with pytest.raises(InvoiceFormatError, match=r"^tax: NaN is not a finite number"):
        invoice_json(invoice)


def test_zero_decimal_currency_prints_whole_amounts() -> None:
    invoice = sample_invoice()
    yen = invoice.model_copy(
        update={
            "currency": "JPY",
            "lines": [],
            "subtotal": Decimal(1234),
            "tax": Decimal(0),
            "total": Decimal(1234),
        }
    )
    document = json.loads(invoice_json(yen))
    assert (document["subtotal"], document["tax"], document["total"]) == ("1234", "0", "1234")


def test_html_shows_every_line_with_quantity_unit_price_amount_and_period() -> None:
    invoice = sample_invoice()
    html = invoice_html(invoice)
    rows = re.findall(r'<tr class="line[^"]*" data-rule="([^"]+)">(.*?)</tr>', html, re.S)
    assert [rule for rule, _ in rows] == [line.rule_id for line in invoice.lines]
    for (_, row), line in zip(rows, invoice.lines, strict=True):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        assert cells[0].startswith(line.description.replace("&", "&amp;"))
        assert cells[1] == "01-30 Nov 2026"
        assert Decimal(cells[2].replace(",", "")) == line.quantity
        assert cells[3] == line.unit
        assert Decimal(cells[4].replace(",", "")) == line.unit_price
        assert cells[5] == money(line.amount, 2)
    for css_class, value in (
        ("subtotal", invoice.subtotal),
        ("tax", invoice.tax),
        ("total", invoice.total),
    ):
        assert re.search(
            rf'<tr class="{css_class}">.*?<td class="num">{re.escape(money(value, 2))}</td>',
            html,
        )


def test_html_shows_reads_energy_split_peak_and_vee_notes() -> None:
    invoice = sample_invoice()
    html = invoice_html(invoice)
    assert "18,234.518" in html  # register at the start of the period
    assert "18,588.618" in html and "(estimated)" in html  # end read is estimated
    assert '<td class="num estimated">2.750</td>' in html  # estimated import kWh
    assert "351.350" in html  # actual import kWh
    assert "<strong>7.412 kW</strong>" in html and "18 Nov 2026 18:15 CET" in html
    assert "Gap estimated" in html and "Register reset" in html
    assert "09 Nov 2026 02:00 CET - 09 Nov 2026 05:30 CET" in html
    assert invoice.content_hash in html


def test_html_is_self_contained() -> None:
    html = invoice_html(sample_invoice())
    assert "<script" not in html.lower()
    assert not re.search(r"\b(src|href)\s*=", html)
    assert "url(" not in html and "@import" not in html
    # The only URL is the SVG namespace name, which is never fetched.
    assert re.findall(r"https?://[^\s\"'<>]+", html) == ["http://www.w3.org/2000/svg"]


def test_html_escapes_customer_and_tariff_text() -> None:
    invoice = sample_invoice().model_copy(
        update={
            "customer": Customer(account_id="ACC-1", name="<script>alert(1)</script>"),
            "tariff_name": 'Tariff "A" & <b>',
        }
    )
    html = invoice_html(invoice)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Tariff &#34;A&#34; &amp; &lt;b&gt;" in html


def test_revision_is_printed_on_later_revisions() -> None:
    html = invoice_html(sample_invoice(revision=3))
    assert "<title>Invoice INV-ACC-1001-m-0001-202611 (revision 3)</title>" in html
    assert "3 (replaces revision 2)" in html


def test_pdf_renders_the_same_invoice_with_its_total() -> None:
    invoice = sample_invoice()
    pdf = invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert f"{money(invoice.total, 2)} EUR" in text
    assert invoice.invoice_number in text
    assert "Erika Müller & Söhne GmbH" in text
    for line in invoice.lines:
        assert money(line.amount, 2) in text
    # No creation date, random id or font timestamp: rendering again gives the same bytes.
    assert invoice_pdf(invoice) == pdf


def test_pdf_refuses_external_resources() -> None:
    # The fetcher refuses before any connection is attempted (port 9 is discard).
    html = '<html><body><img src="http://127.0.0.1:9/logo.png"></body></html>'
    with pytest.raises(PdfRenderError, match="self-contained"):
        html_to_pdf(html)
