"""Durable store-and-forward queue of readings (SQLite, WAL).

Every reading is written here before it is published and deleted only after
the broker's PUBACK (:meth:`ReadingQueue.ack`). :meth:`ReadingQueue.append`
is the group commit: the agent calls it once per ``commit_interval_s`` with
everything read since, and it writes one transaction, so an SD card sees one
write burst per interval instead of one per reading. That transaction also
assigns each reading its per-meter sequence number, so ``seq`` survives restarts
exactly as far as the readings themselves do.

One process owns a queue file at a time (enforced with an advisory lock); the
counters kept in memory (depth, next seq per meter, rows handed out) rely on it.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from edge.config import QueueSettings
from edge.errors import EdgeError
from edge.sample import MeterSample
from electrocloud.contract import Reading

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    -- AUTOINCREMENT: row ids are never reused, so they order readings by enqueue time
    -- even after the newest rows were deleted.
    row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,  -- gateway wall clock at append: the age cap uses it
    reading     TEXT    NOT NULL   -- Reading JSON, exactly what is sent (re-sends are identical)
);
-- A meter's next unsent rows, in order, without scanning the other meters' rows.
CREATE INDEX IF NOT EXISTS outbox_meter ON outbox (meter_id, row_id);
CREATE TABLE IF NOT EXISTS meter_seq (
    meter_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
) WITHOUT ROWID;
"""


class QueueError(EdgeError):
    """The queue file cannot be opened or written (in use, corrupt, disk full...)."""


@dataclass(slots=True)
class QueueStats:
    """Counters since the queue was opened (read-only for callers)."""

    appended: int = 0  # readings accepted into the queue
    acked: int = 0  # rows deleted after the broker's PUBACK
    dropped_oldest: int = 0  # queued readings deleted by the cap (policy drop_oldest)
    dropped_newest: int = 0  # new readings refused by the cap (policy drop_newest)
    rejected_invalid: int = 0  # samples that do not make a valid Reading (poller bug)
    discarded_corrupt: int = 0  # stored rows that no longer parse (file damage)
    drop_episodes: int = 0  # times the queue started dropping
    dropping: bool = False  # in a drop episode now
    commits: int = 0  # write transactions (append, ack): what the SD card sees


@dataclass(frozen=True, slots=True)
class QueuedBatch:
    """Consecutive queued readings of one meter, in seq order: one MQTT message."""

    meter_id: str
    first_row_id: int
    row_ids: tuple[int, ...]
    readings: tuple[Reading, ...]


@dataclass(slots=True)
class _Row:
    row_id: int
    meter_id: str
    seq: int
    ts_ms: int
    reading_json: str


@dataclass(slots=True)
class _Cap:
    """What the cap decided for one append."""

    delete_through_row_id: int = 0  # drop_oldest: delete every row up to this id
    accept: int = 0  # how many of the new rows to insert (drop_newest may refuse some)
    reason: str = ""
    drop_new_oldest: int = 0  # drop_oldest and more new rows than max_rows: skip the first


@dataclass
class _Claims:
    """Rows handed out by next_batches and not acked yet, per meter (in memory)."""

    upto: dict[str, int] = field(default_factory=dict)  # meter -> highest row id handed out
    maybe_pending: set[str] = field(default_factory=set)  # meters that may have unsent rows


class ReadingQueue:
    """The on-disk outbox plus per-meter sequence numbers.

    Not thread-safe: use it from one thread (the agent's event loop).
    ``clock`` returns wall time in seconds (injectable for the age-cap tests).
    """

    def __init__(
        self,
        path: Path,
        settings: QueueSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self._clock = clock
        self._stats = QueueStats()
        self._claims = _Claims()
        self._episode_drops = 0
        self._lock_file = self._lock(self.path)
        try:
            self._conn = self._open(self.path)
            self._next_seq: dict[str, int] = dict(
                self._conn.execute("SELECT meter_id, next_seq FROM meter_seq").fetchall()
            )
            # Counted once; kept up to date from every insert's and delete's row count.
            self._depth: int = self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.Error as exc:
            self._release_lock()
            raise QueueError(f"cannot open queue {self.path}: {exc}") from exc
        except BaseException:
            self._release_lock()
            raise
        self._claims.maybe_pending.update(self._next_seq)

    # --- opening ----------------------------------------------------------------

    @staticmethod
    def _lock(path: Path) -> IO[bytes] | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return None
        lock_path = path.with_name(path.name + ".lock")
        lock_file = open(lock_path, "ab")  # noqa: SIM115 - held open for the queue's lifetime
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise QueueError(
                f"queue {path} is in use by another process (lock {lock_path}); "
                "run one edge agent per queue file"
            ) from None
        return lock_file

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"queue {path}: SQLite refused WAL mode (got {mode!r})")
            # WAL + synchronous=NORMAL: COMMIT appends the transaction to the -wal file
            # (in the OS page cache) without fsync; fsync happens at checkpoints. A process
            # crash (kill -9, OOM, segfault) therefore loses nothing committed: the kernel
            # still has the pages. A power cut or kernel panic can lose the transactions
            # committed since the OS last wrote the WAL back (typically the last few to
            # ~30 s of readings, and their seq numbers, which are then reused after the
            # reboot); the file itself stays consistent (WAL frames are checksummed). FULL
            # would fsync every commit: durable against power loss, at an SD-card write
            # per commit interval. See docs/store-and-forward.md.
            conn.execute("PRAGMA synchronous = NORMAL")
            # Bound the -wal file after a large backlog drained (bytes).
            conn.execute("PRAGMA journal_size_limit = 67108864")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise QueueError(
                    f"queue {path} has schema version {version}; this agent understands "
                    f"{SCHEMA_VERSION}. Drain it with the agent that wrote it, or move it away."
                )
            conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the database (checkpointing the WAL) and release the lock."""
        try:
            self._conn.close()
        finally:
            self._release_lock()

    def __enter__(self) -> ReadingQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # also after a failed COMMIT (disk full, I/O error)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise QueueError(f"queue {self.path}: {exc}") from exc
            raise
        self._stats.commits += 1

    def append(self, samples: Sequence[MeterSample]) -> int:
        """Give each sample the next seq of its meter and store all of them in ONE transaction.

        Returns how many readings were stored. Readings the cap refuses
        (``drop_newest``) and invalid samples still consume a seq number, so the
        backend sees the gap. Raises :class:`QueueError` if the write fails; then
        nothing is stored and no seq is consumed.
        """
        if not samples:
            return 0
        now_ms = int(self._clock() * 1000)
        next_seq = dict(self._next_seq)
        rows: list[tuple[str, int, int, int, str]] = []
        invalid: list[str] = []
        for sample in samples:
            seq = next_seq.get(sample.meter_id, 0)
            next_seq[sample.meter_id] = seq + 1
            try:
                reading = sample.to_reading(seq)
            except ValidationError as exc:
                invalid.append(f"{sample.meter_id} seq {seq}: {exc.errors()[0]['msg']}")
                continue
            reading_json = reading.model_dump_json(exclude_none=True)
            rows.append((sample.meter_id, seq, reading.ts_ms, now_ms, reading_json))

        with self._transaction() as conn:
            cap = self._cap(conn, len(rows), now_ms)
            deleted = 0
            if cap.delete_through_row_id:
                deleted = conn.execute(
                    "DELETE FROM outbox WHERE row_id <= ?", (cap.delete_through_row_id,)
                ).rowcount
            kept = rows[cap.drop_new_oldest : cap.drop_new_oldest + cap.accept]
            conn.executemany(
                "INSERT INTO outbox (meter_id, seq, ts_ms, enqueued_ms, reading) "
                "VALUES (?, ?, ?, ?, ?)",
                kept,
            )
            conn.executemany(
                "INSERT INTO meter_seq (meter_id, next_seq) VALUES (?, ?) "
                "ON CONFLICT (meter_id) DO UPDATE SET next_seq = excluded.next_seq",
                [(m, s) for m, s in next_seq.items() if self._next_seq.get(m) != s],
            )

        # Committed: now the in-memory mirrors may change.
        self._next_seq = next_seq
        self._depth += len(kept) - deleted
        self._stats.appended += len(kept)
        self._claims.maybe_pending.update(row[0] for row in kept)
        if invalid:
            self._stats.rejected_invalid += len(invalid)
            log.error(
                "%d samples do not make valid readings and were not queued (first: %s)",
                len(invalid),
                invalid[0],
            )
        dropped_oldest = deleted + cap.drop_new_oldest
        dropped_newest = len(rows) - cap.accept - cap.drop_new_oldest
        self._count_drops(dropped_oldest, dropped_newest, cap.reason)
        return len(kept)

    def _cap(self, conn: sqlite3.Connection, incoming: int, now_ms: int) -> _Cap:
        """Apply the row and age caps: which old rows to delete and how many new ones to keep.

        Age is measured from the gateway's wall clock at append time, not from the
        readings' ts_ms: device clocks and accelerated simulator clocks can be
        anywhere, the enqueue time is always the gateway's own. Rows are appended
        in time order, so the too-old rows are a prefix of the row-id order.
        """
        s = self.settings
        cutoff_ms = now_ms - int(s.max_age_s * 1000)
        oldest = conn.execute("SELECT row_id, enqueued_ms FROM outbox ORDER BY row_id LIMIT 1")
        first = oldest.fetchone()
        too_old = first is not None and first[1] < cutoff_ms
        overflow = self._depth + incoming - s.max_rows

        if s.when_full == "drop_newest":
            if too_old:
                return _Cap(accept=0, reason=f"a reading has waited longer than {s.max_age_s:g} s")
            if overflow > 0:
                room = max(0, s.max_rows - self._depth)
                return _Cap(accept=room, reason=f"the queue holds {s.max_rows} rows")
            return _Cap(accept=incoming)

        # drop_oldest: make room by deleting the oldest rows (too old, then over max_rows).
        cap = _Cap(accept=incoming)
        remaining = self._depth
        if too_old:
            fresh = conn.execute(
                "SELECT row_id FROM outbox WHERE enqueued_ms >= ? ORDER BY row_id LIMIT 1",
                (cutoff_ms,),
            ).fetchone()
            if fresh is None:
                cap.delete_through_row_id = self._max_row_id(conn)
                remaining = 0
            else:
                cap.delete_through_row_id = fresh[0] - 1
                # Counts only the expired prefix: cheap, unlike counting what remains.
                expired = conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE row_id <= ?", (cap.delete_through_row_id,)
                ).fetchone()[0]
                remaining = self._depth - expired
            cap.reason = f"readings have waited longer than {s.max_age_s:g} s"
        excess = remaining + incoming - s.max_rows
        if excess > 0:
            if excess >= remaining:
                cap.delete_through_row_id = self._max_row_id(conn)
                cap.drop_new_oldest = excess - remaining
                cap.accept = incoming - cap.drop_new_oldest
            else:
                last = conn.execute(
                    "SELECT row_id FROM outbox WHERE row_id > ? ORDER BY row_id LIMIT 1 OFFSET ?",
                    (cap.delete_through_row_id, excess - 1),
                ).fetchone()
                cap.delete_through_row_id = last[0]
            cap.reason = f"the queue holds {s.max_rows} rows"
        return cap

    @staticmethod
    def _max_row_id(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(row_id), 0) FROM outbox").fetchone()[0])

    def _count_drops(self, dropped_oldest: int, dropped_newest: int, reason: str) -> None:
        """Count drops; log once when an episode starts and once when it ends."""
        s = self._stats
        s.dropped_oldest += dropped_oldest
        s.dropped_newest += dropped_newest
        dropped = dropped_oldest + dropped_newest
        if dropped and not s.dropping:
            s.dropping = True
            s.drop_episodes += 1
            self._episode_drops = 0
            what = (
                "deleting the oldest queued readings"
                if self.settings.when_full == "drop_oldest"
                else "refusing new readings"
            )
            log.warning(
                "queue %s is full (%s): policy %s is %s until there is room again "
                "(counted in stats; logged once per episode)",
                self.path,
                reason,
                self.settings.when_full,
                what,
            )
        if s.dropping:
            self._episode_drops += dropped
            if not dropped:
                s.dropping = False
                log.warning(
                    "queue %s accepts every reading again; %d readings were dropped (%s)",
                    self.path,
                    self._episode_drops,
                    self.settings.when_full,
                )

    def ack(self, row_ids: Iterable[int]) -> int:
        """Delete rows the broker acknowledged, in one transaction; returns rows deleted."""
        ids = list(row_ids)
        if not ids:
            return 0
        with self._transaction() as conn:
            deleted = self._delete(conn, ids)
        self._depth -= deleted
        self._stats.acked += deleted
        return deleted

    @staticmethod
    def _delete(conn: sqlite3.Connection, row_ids: Iterable[int]) -> int:
        before = conn.total_changes
        conn.executemany("DELETE FROM outbox WHERE row_id = ?", [(r,) for r in row_ids])
        return conn.total_changes - before

    # --- reading ----------------------------------------------------------------

    def next_batches(
        self, *, max_readings: int, max_messages: int, max_bytes: int | None = None
    ) -> list[QueuedBatch]:
        """Hand out up to ``max_messages`` batches of rows not handed out yet, oldest first.

        Each batch holds consecutive queued readings of one meter (at most
        ``max_readings``, and at most about ``max_bytes`` of reading JSON), in seq
        order; a meter's later batches come after its earlier ones. Handed-out rows
        are skipped by later calls until :meth:`rewind` (after a lost connection) or
        :meth:`ack`. Cost: one index seek per meter with unsent rows, plus one per batch.
        """
        if max_readings < 1 or max_messages < 1:
            raise ValueError("max_readings and max_messages must be at least 1")
        # Heap of each meter's next unsent rows, keyed by their first (oldest) row id.
        heads: list[tuple[int, str, list[_Row]]] = []
        for meter_id in list(self._claims.maybe_pending):
            rows = self._fetch(meter_id, max_readings, max_bytes)
            if rows:
                heads.append((rows[0].row_id, meter_id, rows))
            else:
                self._claims.maybe_pending.discard(meter_id)
        heapq.heapify(heads)
        batches: list[QueuedBatch] = []
        while heads and len(batches) < max_messages:
            _, meter_id, rows = heapq.heappop(heads)
            batch = self._claim(meter_id, rows)
            if batch is not None:
                batches.append(batch)
            more = self._fetch(meter_id, max_readings, max_bytes)
            if more:
                heapq.heappush(heads, (more[0].row_id, meter_id, more))
        return batches

    def _fetch(self, meter_id: str, limit: int, max_bytes: int | None) -> list[_Row]:
        after = self._claims.upto.get(meter_id, 0)
        cursor = self._conn.execute(
            "SELECT row_id, meter_id, seq, ts_ms, reading FROM outbox "
            "WHERE meter_id = ? AND row_id > ? ORDER BY row_id LIMIT ?",
            (meter_id, after, limit),
        )
        rows = [_Row(*values) for values in cursor.fetchall()]
        if max_bytes is not None:
            size = 0
            for index, row in enumerate(rows):
                size += len(row.reading_json) + 1
                if size > max_bytes and index > 0:
                    return rows[:index]
        return rows

    def _claim(self, meter_id: str, rows: list[_Row]) -> QueuedBatch | None:
        self._claims.upto[meter_id] = rows[-1].row_id
        readings: list[Reading] = []
        row_ids: list[int] = []
        corrupt: list[int] = []
        for row in rows:
            try:
                readings.append(Reading.model_validate_json(row.reading_json))
                row_ids.append(row.row_id)
            except ValidationError:
                corrupt.append(row.row_id)
        if corrupt:
            # A row that no longer parses would block its meter forever: remove it, loudly.
            self._stats.discarded_corrupt += len(corrupt)
            log.error(
                "queue %s: %d stored readings of meter %s no longer parse; discarded",
                self.path,
                len(corrupt),
                meter_id,
            )
            with self._transaction() as conn:
                deleted = self._delete(conn, corrupt)
            self._depth -= deleted
        if not row_ids:
            return None
        return QueuedBatch(meter_id, row_ids[0], tuple(row_ids), tuple(readings))

    def rewind(self) -> None:
        """Forget what was handed out: unacked rows are handed out again, oldest first."""
        self._claims.maybe_pending.update(self._claims.upto)
        self._claims.upto.clear()

    def depth(self) -> int:
        """Readings waiting in the queue (including ones handed out and not acked yet)."""
        return self._depth

    def oldest_ts_ms(self) -> int | None:
        """``ts_ms`` of the oldest queued reading, or None if the queue is empty."""
        row = self._conn.execute("SELECT ts_ms FROM outbox ORDER BY row_id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def next_seq(self, meter_id: str) -> int:
        """The seq number the next reading of ``meter_id`` will get."""
        return self._next_seq.get(meter_id, 0)

    @property
    def stats(self) -> QueueStats:
        return self._stats
