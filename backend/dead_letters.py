"""Dead-letter store: messages the backend could not accept, kept for inspection.

One SQLite table. A letter is durable (``synchronous=FULL``) before the MQTT
message is acknowledged. The same bad message delivered again (a redelivery
after a crash, or a device resending it) is recorded once, with ``repeats``
counting the extra deliveries.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from electrocloud.storage import StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,      -- first receipt, backend clock, UTC ms
    reason TEXT NOT NULL,              -- electrocloud.contract.Reason value or store_rejected
    detail TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,             -- the first max_payload_bytes of the raw payload
    payload_size INTEGER NOT NULL,     -- the original size, bytes
    payload_sha256 TEXT NOT NULL,      -- of the whole original payload
    repeats INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, received_ms);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    topic: str
    received_ms: int
    payload: bytes  # possibly truncated; see payload_size
    payload_size: int
    payload_sha256: str

    @classmethod
    def of(
        cls,
        *,
        reason: str,
        detail: str,
        topic: str,
        received_ms: int,
        payload: bytes,
        max_payload_bytes: int,
    ) -> DeadLetter:
        return cls(
            reason=reason,
            detail=detail,
            topic=topic,
            received_ms=received_ms,
            payload=payload[:max_payload_bytes],
            payload_size=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
        )


class DeadLetterStore:
    """The ``dead_letters`` table of a SQLite file; thread-safe (one connection, a lock)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"dead-letter store {self.path}: {exc}") from exc

    def write(self, letters: Sequence[DeadLetter]) -> None:
        """Store ``letters`` in one transaction; StoreUnavailable if that fails."""
        if not letters:
            return
        rows = [
            (
                letter.received_ms,
                letter.reason,
                letter.detail,
                letter.topic,
                letter.payload,
                letter.payload_size,
                letter.payload_sha256,
            )
            for letter in letters
        ]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO dead_letters (received_ms, reason, detail, topic, payload, "
                    "payload_size, payload_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (topic, payload_sha256) DO UPDATE SET repeats = repeats + 1",
                    rows,
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"dead-letter store {self.path}: {exc}") from exc

    def letters(self) -> list[DeadLetter]:
        """Every letter, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reason, detail, topic, received_ms, payload, payload_size, payload_sha256 "
                "FROM dead_letters ORDER BY id"
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
