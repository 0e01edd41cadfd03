"""Bill meters for one calendar month: determinants -> price -> issued invoice files.

:func:`bill_period` is what ``electrocloud bill`` and the demo call. It checks
everything before it writes anything: every meter must have an account, every
account a tariff that covers the period, and every meter reads in the period;
otherwise :class:`BillingError` (or the tariff's ``ConfigError``) names each
problem and no invoice is issued. The period is the calendar month in each
tariff's own time zone, so meters on different tariffs may have different UTC
bounds; the determinants of all meters that share bounds come from one store
query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from billing.accounts import Accounts
from billing.determinants import Determinants, compute_determinants_batch
from billing.engine import ExplainStep, period_bounds_ms, price
from billing.issue import check_formats, invoice_number, issue_invoice
from billing.ledger import FORMATS, LEDGER_FILENAME, Ledger
from billing.model import LineItem
from billing.tariff import Tariff
from electrocloud.errors import ElectroCloudError
from electrocloud.storage import ReadingStore

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


class BillingError(ElectroCloudError):
    """A bill cannot be issued: unknown meter, no data in the period, bad period."""


@dataclass(frozen=True)
class BillingOutcome:
    """One issued invoice, as the CLI and the demo report it."""

    meter_id: str
    account_id: str
    customer: str
    invoice_number: str
    revision: int
    reused: bool  # True: same inputs as the latest revision, files rewritten identically
    import_kwh: Decimal
    export_kwh: Decimal
    total: Decimal
    currency: str
    files: dict[str, Path]  # format -> path of this revision's file
    lines: tuple[LineItem, ...] = field(default=(), repr=False)
    explain: tuple[ExplainStep, ...] = field(default=(), repr=False)  # the engine's trace


def parse_period(text: str) -> tuple[date, date]:
    """``"2026-11"`` -> (2026-11-01, 2026-12-01): a calendar month, end exclusive;
    ``"2026-11-03..2026-11-10"`` -> a range of local days, end exclusive;
    ``"previous"`` -> the previous calendar month (for scheduled runs)."""
    if text.strip() == "previous":
        this_month = datetime.now(UTC).date().replace(day=1)
        last = this_month - timedelta(days=1)
        return last.replace(day=1), this_month
    ranged = _RANGE_RE.match(text.strip())
    if ranged:
        try:
            start, end = date.fromisoformat(ranged[1]), date.fromisoformat(ranged[2])
        except ValueError as exc:
            raise BillingError(f"period {text!r}: {exc}") from None
        if end <= start:
            raise BillingError(f"period {text!r}: the end (exclusive) must be after the start")
        return start, end
    match = _PERIOD_RE.match(text.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise BillingError(
            f"period {text!r} must be a calendar month like 2026-11 "
            "or a range of days like 2026-11-03..2026-11-10 (end exclusive)"
        )
    year, month = int(match[1]), int(match[2])
    return date(year, month, 1), date(year + month // 12, month % 12 + 1, 1)


def _with_tariffs_dir(accounts: Accounts, tariffs_dir: str | Path | None) -> Accounts:
    if tariffs_dir is None:
        return accounts
    directory = Path(tariffs_dir)
    if not directory.is_dir():
        raise BillingError(f"tariffs directory {directory} does not exist")
    return Accounts(dict(accounts), accounts.base_dir, directory)


def _select_meters(accounts: Accounts, meter_ids: Sequence[str] | None) -> list[str]:
    if meter_ids is None:
        return sorted(accounts)
    unknown = [m for m in meter_ids if m not in accounts]
    if unknown:
        known = ", ".join(sorted(accounts)) or "none"
        raise BillingError(
            f"unknown meter(s) {', '.join(unknown)}: no account for them (accounts: {known})"
        )
    return list(dict.fromkeys(meter_ids))  # keep order, drop repeats


def _has_reads_in(determinants: Determinants) -> bool:
    start, end = determinants.start_ms, determinants.end_ms
    return any(
        bool(np.any((reg.reads.ts_ms >= start) & (reg.reads.ts_ms < end)))
        for reg in (determinants.import_register, determinants.export_register)
    )


def _determinants(
    store: ReadingStore,
    accounts: Accounts,
    tariffs: dict[str, Tariff],
    period_start: date,
    period_end: date,
) -> dict[str, Determinants]:
    """Determinants of every meter, one store query per distinct set of UTC bounds."""
    by_bounds: dict[tuple[int, int], list[str]] = {}
    for meter, tariff in tariffs.items():
        by_bounds.setdefault(period_bounds_ms(tariff, period_start, period_end), []).append(meter)
    found: dict[str, Determinants] = {}
    for (start_ms, end_ms), meters in by_bounds.items():
        found |= compute_determinants_batch(
            store,
            meters,
            start_ms,
            end_ms,
            rollover_kwh={m: accounts[m].rollover_kwh for m in meters},
            max_power_kw={m: accounts[m].max_power_kw for m in meters},
        )
    return found


def bill_period(
    store: ReadingStore,
    accounts: Accounts,
    tariffs_dir: str | Path | None,
    period: str | tuple[date, date],
    out_dir: str | Path,
    meter_ids: Sequence[str] | None = None,
    formats: Collection[str] = FORMATS,
    *,
    ledger_path: str | Path | None = None,
    on_issued: Callable[[BillingOutcome], None] | None = None,
) -> list[BillingOutcome]:
    """Issue the invoices of ``meter_ids`` (all accounts when None) for one month.

    ``period``: ``"YYYY-MM"`` or ``(first day, first day of next month)``.
    ``tariffs_dir`` overrides the accounts file's ``tariffs_dir``. The ledger is
    ``out_dir/ledger.sqlite3`` unless ``ledger_path`` says otherwise. Outcomes are
    in meter order; ``on_issued`` is called after each invoice (progress bars).
    """
    period_start, period_end = parse_period(period) if isinstance(period, str) else period
    wanted = check_formats(formats)
    accounts = _with_tariffs_dir(accounts, tariffs_dir)
    meters = _select_meters(accounts, meter_ids)
    if not meters:
        raise BillingError("no meters to bill: the accounts file lists none")
    tariffs = {meter: accounts.tariff_for(meter) for meter in meters}
    numbers = {}
    for meter in meters:
        try:
            numbers[meter] = invoice_number(
                accounts[meter].account_id, meter, period_start, period_end
            )
        except ValueError as exc:
            raise BillingError(str(exc)) from None

    determinants = _determinants(store, accounts, tariffs, period_start, period_end)
    empty = [m for m in meters if m not in determinants or not _has_reads_in(determinants[m])]
    if empty:
        raise BillingError(
            f"no readings in {period_start:%Y-%m} for meter(s) {', '.join(empty)}; "
            "nothing to bill (check the meter ids and the store)"
        )
    # Price everything before issuing anything: a pricing error leaves no partial run.
    bills = {
        meter: price(
            determinants[meter],
            tariffs[meter],
            period_start,
            period_end,
            accounts[meter].customer,
        )
        for meter in meters
    }

    outcomes = []
    with Ledger(Path(ledger_path) if ledger_path else Path(out_dir) / LEDGER_FILENAME) as ledger:
        for meter in meters:
            bill = bills[meter]
            draft = bill.to_invoice(invoice_number=numbers[meter], revision=1)
            issued = issue_invoice(draft, ledger, out_dir, wanted)
            account = accounts[meter]
            outcome = BillingOutcome(
                meter_id=meter,
                account_id=account.account_id,
                customer=account.name,
                invoice_number=issued.entry.invoice_number,
                revision=issued.entry.revision,
                reused=issued.reused,
                import_kwh=bill.energy.import_kwh,
                export_kwh=bill.energy.export_kwh,
                total=bill.total,
                currency=bill.currency,
                files={fmt: issued.entry.files[fmt] for fmt in wanted},
                lines=tuple(bill.lines),
                explain=tuple(bill.explain),
            )
            outcomes.append(outcome)
            if on_issued is not None:
                on_issued(outcome)
    return outcomes
