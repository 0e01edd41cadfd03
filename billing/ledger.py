"""The invoice ledger: which revision of which invoice was issued, from which inputs.

One SQLite table, one row per (invoice_number, revision), with the engine's
``content_hash`` (reads, tariff, engine version), the SHA-256 of the canonical
JSON record, when it was first issued, the files written and the total. The
ledger is what makes re-billing safe: :func:`billing.issue.issue_invoice` asks
it whether a freshly priced invoice equals the latest issued revision (then the
revision is reused and its files rewritten identically) or not (then a new
revision is issued next to the old files, which stay).

File paths are stored relative to the ledger's directory, so an output folder
that holds its own ledger can be moved as a whole.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from electrocloud.errors import ElectroCloudError

LEDGER_FILENAME = "ledger.sqlite3"
FORMATS = ("json", "html", "pdf")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    invoice_number TEXT NOT NULL,
    revision INTEGER NOT NULL CHECK (revision >= 1),
    content_hash TEXT NOT NULL,
    record_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    period_start TEXT NOT NULL,
    json_path TEXT,
    html_path TEXT,
    pdf_path TEXT,
    total TEXT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (invoice_number, revision)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

_COLUMNS = (
    "invoice_number",
    "revision",
    "content_hash",
    "record_sha256",
    "created_at",
    "meter_id",
    "account_id",
    "period_start",
    "json_path",
    "html_path",
    "pdf_path",
    "total",
    "currency",
)


class LedgerError(ElectroCloudError):
    """The ledger cannot be read or written, or disagrees with the files on disk."""


@dataclass(frozen=True)
class LedgerEntry:
    """One issued revision of one invoice."""

    invoice_number: str
    revision: int
    content_hash: str  # the engine's inputs fingerprint
    record_sha256: str  # sha256 hex of the canonical JSON bytes of this revision
    created_at: str  # ISO 8601 UTC, when this revision was first issued
    meter_id: str
    account_id: str
    period_start: str  # ISO date, local to the tariff
    total: Decimal
    currency: str
    files: dict[str, Path] = field(default_factory=dict)  # format -> absolute path


class Ledger:
    """The SQLite invoice ledger at ``path`` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
            self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open invoice ledger {self.path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the write lock: decide a revision, write its files, record it, atomically.

        A second billing run on the same ledger waits instead of issuing the same
        revision twice.
        """
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot lock invoice ledger {self.path}: {exc}") from exc
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _to_stored(self, path: Path) -> str:
        return os.path.relpath(path.resolve(), self.path.resolve().parent)

    def _from_stored(self, stored: str) -> Path:
        return (self.path.resolve().parent / stored).resolve()

    def _entry(self, row: tuple[object, ...]) -> LedgerEntry:
        values = dict(zip(_COLUMNS, row, strict=True))
        files = {
            fmt: self._from_stored(str(values[f"{fmt}_path"]))
            for fmt in FORMATS
            if values[f"{fmt}_path"] is not None
        }
        return LedgerEntry(
            invoice_number=str(values["invoice_number"]),
            revision=int(str(values["revision"])),
            content_hash=str(values["content_hash"]),
            record_sha256=str(values["record_sha256"]),
            created_at=str(values["created_at"]),
            meter_id=str(values["meter_id"]),
            account_id=str(values["account_id"]),
            period_start=str(values["period_start"]),
            total=Decimal(str(values["total"])),
            currency=str(values["currency"]),
            files=files,
        )

    def latest(self, invoice_number: str) -> LedgerEntry | None:
        """The highest revision issued under ``invoice_number``, if any."""
        row = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM invoices WHERE invoice_number = ? "
            "ORDER BY revision DESC LIMIT 1",
            (invoice_number,),
        ).fetchone()
        return None if row is None else self._entry(row)

    def entries(self, invoice_number: str | None = None) -> list[LedgerEntry]:
        """All revisions (of one invoice, or of all), by invoice number then revision."""
        where, params = (
            ("WHERE invoice_number = ?", (invoice_number,)) if invoice_number else ("", ())
        )
        rows = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM invoices {where} ORDER BY invoice_number, revision",
            params,
        ).fetchall()
        return [self._entry(row) for row in rows]

    def record(self, entry: LedgerEntry) -> None:
        """Insert a new revision, or update the files of an existing identical one.

        An existing row keeps its ``created_at`` and its hashes: a revision's record
        never changes once issued.
        """
        unknown = set(entry.files) - set(FORMATS)
        if unknown:
            raise LedgerError(f"unknown invoice formats {sorted(unknown)}; known: {FORMATS}")
        stored = {fmt: self._to_stored(path) for fmt, path in entry.files.items()}
        existing = self._conn.execute(
            "SELECT record_sha256 FROM invoices WHERE invoice_number = ? AND revision = ?",
            (entry.invoice_number, entry.revision),
        ).fetchone()
        if existing is not None:
            if existing[0] != entry.record_sha256:
                raise LedgerError(
                    f"{entry.invoice_number} revision {entry.revision} is already issued with "
                    "different content; a changed invoice needs a new revision"
                )
            for fmt, path in stored.items():
                self._conn.execute(
                    f"UPDATE invoices SET {fmt}_path = ? WHERE invoice_number = ? AND revision = ?",
                    (path, entry.invoice_number, entry.revision),
                )
            return
        values = {
            "invoice_number": entry.invoice_number,
            "revision": entry.revision,
            "content_hash": entry.content_hash,
            "record_sha256": entry.record_sha256,
            "created_at": entry.created_at,
            "meter_id": entry.meter_id,
            "account_id": entry.account_id,
            "period_start": entry.period_start,
            **{f"{fmt}_path": stored.get(fmt) for fmt in FORMATS},
            "total": str(entry.total),
            "currency": entry.currency,
        }
        self._conn.execute(
            f"INSERT INTO invoices ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
            tuple(values[column] for column in _COLUMNS),
        )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
