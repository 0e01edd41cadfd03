"""Issuing an invoice: pick its revision from the ledger, write its files, record it.

Rules (docs/invoice-schema.md, "Numbers, revisions and files"):

- The invoice number is deterministic: ``INV-<account>-<meter>-<YYYYMM>``.
- A priced invoice whose canonical JSON (with the latest revision number) equals
  the latest issued revision *is* that revision: the revision is reused and its
  files are rewritten with identical bytes.
- Anything else (new reads, another tariff or engine version, changed customer
  details) is a new revision: ``revision + 1``, files suffixed ``-r<revision>``,
  earlier files left untouched. Comparing against the latest revision only means
  inputs that return to an older state still get a new revision: a superseded
  document is never silently re-issued.
- A file that would be written for a new revision but already exists with other
  bytes (e.g. the ledger was deleted) is an error, never an overwrite.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

from billing.invoice_json import invoice_json
from billing.ledger import FORMATS, Ledger, LedgerEntry, LedgerError
from billing.model import Invoice
from electrocloud.contract import ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)


def invoice_number(
    account_id: str, meter_id: str, period_start: date, period_end: date | None = None
) -> str:
    """``INV-<account>-<meter>-<YYYYMM>`` for a calendar month (``period_end`` None or
    the next month's first day), else ``INV-<account>-<meter>-<YYYYMMDD>-<YYYYMMDD>``
    (end exclusive). The same for every revision of one bill."""
    for what, value in (("account id", account_id), ("meter id", meter_id)):
        if not _ID_RE.match(value):
            raise ValueError(f"{what} {value!r} must match {ID_PATTERN} to name an invoice file")
    month_end = date(period_start.year + period_start.month // 12, period_start.month % 12 + 1, 1)
    if period_end is None or (period_start.day == 1 and period_end == month_end):
        return f"INV-{account_id}-{meter_id}-{period_start:%Y%m}"
    return f"INV-{account_id}-{meter_id}-{period_start:%Y%m%d}-{period_end:%Y%m%d}"


def file_stem(number: str, revision: int) -> str:
    """File name without extension: the number, plus ``-r<revision>`` from revision 2 on."""
    return number if revision == 1 else f"{number}-r{revision}"


def check_formats(formats: Collection[str]) -> tuple[str, ...]:
    """The requested formats in canonical order, JSON always included (it is the record)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown invoice format(s) {', '.join(unknown)}; choose from {FORMATS}")
    return tuple(fmt for fmt in FORMATS if fmt == "json" or fmt in formats)


@dataclass(frozen=True)
class IssuedInvoice:
    invoice: Invoice  # with its final revision
    entry: LedgerEntry
    reused: bool  # True: identical to the latest issued revision, files rewritten as they were


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _documents(invoice: Invoice, formats: tuple[str, ...], json_bytes: bytes) -> dict[str, bytes]:
    documents = {"json": json_bytes}
    if "html" in formats or "pdf" in formats:
        # Imported on demand: JSON-only runs need neither Jinja2 nor WeasyPrint.
        from billing.render_html import invoice_html

        html = invoice_html(invoice)
        if "html" in formats:
            documents["html"] = html.encode("utf-8")
        if "pdf" in formats:
            from billing.render_pdf import html_to_pdf

            documents["pdf"] = html_to_pdf(html)
    return documents


def issue_invoice(
    draft: Invoice,
    ledger: Ledger,
    out_dir: str | Path,
    formats: Collection[str] = FORMATS,
) -> IssuedInvoice:
    """Give ``draft`` (any revision) its revision, write its files, record it in the ledger."""
    wanted = check_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    number = draft.invoice_number
    with ledger.transaction():
        latest = ledger.latest(number)
        reused = False
        if latest is not None:
            candidate = draft.model_copy(update={"revision": latest.revision})
            json_bytes = invoice_json(candidate)
            reused = _sha256(json_bytes) == latest.record_sha256
        if not reused:
            revision = 1 if latest is None else latest.revision + 1
            candidate = draft.model_copy(update={"revision": revision})
            json_bytes = invoice_json(candidate)
        stem = file_stem(number, candidate.revision)
        # Render everything and check every target before writing anything.
        documents = {
            out / f"{stem}.{fmt}": data
            for fmt, data in _documents(candidate, wanted, json_bytes).items()
        }
        for path, data in documents.items():
            if not reused and path.exists() and path.read_bytes() != data:
                raise LedgerError(
                    f"{path} exists with other content but the ledger {ledger.path} has no "
                    f"record of {number} revision {candidate.revision}; refusing to overwrite it "
                    "(restore the ledger or move the file away)"
                )
        files: dict[str, Path] = {}
        for path, data in documents.items():
            _write_atomic(path, data)
            files[path.suffix.lstrip(".")] = path.resolve()
        entry = LedgerEntry(
            invoice_number=number,
            revision=candidate.revision,
            content_hash=candidate.content_hash,
            record_sha256=_sha256(json_bytes),
            created_at=latest.created_at
            if reused and latest is not None
            else datetime.now(UTC).isoformat(timespec="seconds"),
            meter_id=candidate.meter_id,
            account_id=candidate.customer.account_id,
            period_start=candidate.period_start.isoformat(),
            total=candidate.total,
            currency=candidate.currency,
            files=files,
        )
        ledger.record(entry)
    if reused and latest is not None:
        entry = replace(entry, files={**latest.files, **files})
    return IssuedInvoice(invoice=candidate, entry=entry, reused=reused)
