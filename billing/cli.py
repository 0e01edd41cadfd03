"""``electrocloud bill``: issue JSON, HTML and PDF invoices for one calendar month.

Examples::

    electrocloud bill --period 2026-11 --all --out invoices/ --store sqlite:electrocloud.sqlite
    electrocloud bill --period 2026-11 --meter m-0003 --explain m-0003 --format json,html

Re-running a month with the same inputs rewrites identical files under the same
revision; changed inputs issue a new revision (``-r2`` ...) next to the old files
(see docs/invoice-schema.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real imports live in run(): ``electrocloud --help`` stays light
    from rich.console import Console

    from billing.bill import BillingOutcome
    from electrocloud.storage import ReadingStore

#: The packaged example accounts (simulated meters m-0001..m-0004 on the example tariffs).
EXAMPLE_ACCOUNTS = Path(__file__).with_name("accounts.example.yaml")
DEFAULT_STORE = "sqlite:electrocloud.sqlite"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--period",
        required=True,
        metavar="YYYY-MM",
        help="calendar month in each tariff's zone, local days FROM..TO (TO exclusive), "
        "or 'previous' (last month, for scheduled runs)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--meter",
        action="append",
        dest="meters",
        metavar="ID",
        help="bill this meter (repeat for several)",
    )
    which.add_argument("--all", action="store_true", help="bill every meter in the accounts file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for invoice files")
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="STORE",
        help=f"reading store: sqlite:PATH or influxdb:URL (default: {DEFAULT_STORE}); "
        "InfluxDB takes org, bucket and a read token from ELECTROCLOUD_BILLING_STORE__"
        "INFLUXDB__ORG / __BUCKET / __TOKEN",
    )
    parser.add_argument(
        "--accounts",
        default=str(EXAMPLE_ACCOUNTS),
        metavar="FILE",
        help="accounts YAML: meter -> customer and tariff (default: the packaged example)",
    )
    parser.add_argument(
        "--tariffs",
        metavar="DIR",
        help="tariff folder (default: the accounts file's tariffs_dir)",
    )
    parser.add_argument(
        "--format",
        default="json,html,pdf",
        metavar="LIST",
        help="comma-separated json,html,pdf (default: all; JSON, the record, is always written)",
    )
    parser.add_argument(
        "--ledger", metavar="PATH", help="invoice ledger (default: OUT/ledger.sqlite3)"
    )
    parser.add_argument(
        "--explain",
        metavar="METER",
        help="print which reads and tariff rules produced each line of this meter's invoice",
    )


INFLUX_ENV = "ELECTROCLOUD_BILLING_STORE__INFLUXDB__"


def open_store(spec: str, environ: Mapping[str, str] = os.environ) -> ReadingStore:
    """The store named by ``sqlite:PATH`` (the file must exist: billing never creates one)
    or ``influxdb:URL`` (org, bucket and token from the environment, see INFLUX_ENV)."""
    from billing.bill import BillingError

    kind, sep, location = spec.partition(":")
    if kind == "influxdb" and location:
        return _open_influx(spec, location, environ)
    if kind != "sqlite" or not sep or not location:
        raise BillingError(f"--store {spec!r}: expected sqlite:PATH or influxdb:URL")
    path = Path(location)
    if not path.is_file():
        raise BillingError(f"--store {spec!r}: no SQLite store at {path}")
    from electrocloud.stores.sqlite import SqliteStore

    return SqliteStore(path)


def _open_influx(spec: str, url: str, environ: Mapping[str, str]) -> ReadingStore:
    from electrocloud.secrets import refuse_placeholder
    from electrocloud.stores.influx import InfluxStore

    values = {}
    for name in ("ORG", "BUCKET", "TOKEN"):
        value = environ.get(INFLUX_ENV + name, "").strip()
        if not value:
            from billing.bill import BillingError

            raise BillingError(f"--store {spec!r}: set {INFLUX_ENV}{name} in the environment")
        values[name] = value
    refuse_placeholder(INFLUX_ENV + "TOKEN", values["TOKEN"])
    return InfluxStore(url=url, org=values["ORG"], bucket=values["BUCKET"], token=values["TOKEN"])


def _formats(text: str) -> list[str]:
    from billing.bill import BillingError
    from billing.ledger import FORMATS

    formats = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise BillingError(f"--format {text!r}: choose from {', '.join(FORMATS)}")
    return formats


def print_summary(console: Console, outcomes: list[BillingOutcome], out_dir: str) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Invoices in {out_dir}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("Meter", no_wrap=True)
    table.add_column("Customer", overflow="fold")
    table.add_column("File", no_wrap=True)
    table.add_column("Rev", justify="right", no_wrap=True)
    table.add_column("Import kWh", justify="right", no_wrap=True)
    table.add_column("Total", justify="right", no_wrap=True)
    for o in outcomes:
        paths = list(o.files.values())
        stem = paths[0].stem if paths else o.invoice_number
        suffixes = ",".join(path.suffix.lstrip(".") for path in paths)
        table.add_row(
            o.meter_id,
            o.customer,
            f"{stem}.{{{suffixes}}}",
            f"{o.revision}{' =' if o.reused else ''}",
            f"{o.import_kwh:,.3f}",
            f"{o.total:,} {o.currency}",
        )
    console.print(table)
    if any(o.reused for o in outcomes):
        console.print("= same inputs as the issued revision: files rewritten unchanged")


def print_explain(console: Console, outcome: BillingOutcome) -> None:
    """The engine's trace for one invoice: reads, VEE, then each rule and its arithmetic."""
    from rich.table import Table
    from rich.text import Text

    from billing.invoice_json import decimal_text, quantity_places

    line_rules = {line.rule_id for line in outcome.lines}
    trace = Table(
        title=f"Explain {outcome.invoice_number} revision {outcome.revision} "
        f"(meter {outcome.meter_id}, {outcome.customer})",
        title_justify="left",
    )
    trace.add_column("#", justify="right", style="dim")
    trace.add_column("Rule", style="cyan", overflow="fold")
    trace.add_column("Reads, rules and arithmetic")
    for number, step in enumerate(outcome.explain, start=1):
        # Steps that priced an invoice line in bold; reads, VEE and sums plain.
        style = "bold" if step.rule_id in line_rules else ""
        trace.add_row(str(number), step.rule_id, Text(step.text, style=style))
    console.print(trace)

    lines = Table(title="Lines", title_justify="left")
    lines.add_column("Rule", style="cyan")
    lines.add_column("Description")
    for column in ("Quantity", "Unit price", "Amount"):
        lines.add_column(column, justify="right")
    for line in outcome.lines:
        lines.add_row(
            line.rule_id,
            f"{line.description} [{line.period_start} to {line.period_end}]",
            f"{decimal_text(line.quantity, quantity_places(line.unit))} {line.unit}",
            decimal_text(line.unit_price, 4),
            f"{line.amount} {outcome.currency}",
        )
    lines.add_row("", "Total", "", "", f"{outcome.total} {outcome.currency}", style="bold")
    console.print(lines)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from billing.accounts import load_accounts
    from billing.bill import BillingError, bill_period, parse_period

    # Not a terminal (pipe, CI log): rich would wrap at 80 columns; invoice names are long.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    period = parse_period(args.period)
    formats = _formats(args.format)
    accounts = load_accounts(args.accounts)
    if args.meters:
        meters: list[str] | None = list(args.meters)
    elif args.all:
        meters = None
    elif args.explain:
        meters = [args.explain]
    else:
        raise BillingError("say which meters to bill: --meter ID (repeatable) or --all")
    if args.explain and args.explain not in (accounts if meters is None else meters):
        raise BillingError(f"--explain {args.explain}: that meter is not being billed")
    count = len(meters) if meters is not None else len(accounts)

    store = open_store(args.store)
    try:
        with Progress(
            TextColumn("[bold]billing[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=False,
        ) as progress:
            task = progress.add_task(f"{args.period}", total=count)

            def issued(outcome: BillingOutcome) -> None:
                progress.update(task, advance=1, description=f"{args.period} {outcome.meter_id}")

            outcomes = bill_period(
                store,
                accounts,
                args.tariffs,
                period,
                args.out,
                meters,
                formats,
                ledger_path=args.ledger,
                on_issued=issued,
            )
    finally:
        store.close()

    print_summary(console, outcomes, args.out)
    if args.explain:
        (chosen,) = [o for o in outcomes if o.meter_id == args.explain]
        print_explain(console, chosen)
    return 0
