"""Holds a SQLite write lock from a separate process, as another writer would.

Usage: python sqlite_lock_holder.py DB_PATH. Prints ``locked`` once it holds the
write transaction, releases (rolls back) when a line arrives on stdin or stdin
closes, then prints ``released``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def main(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")  # the write lock: other writers get SQLITE_BUSY
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
    print("released", flush=True)


class LockHolder:
    """Runs this script as a subprocess; ``release()`` ends the transaction."""

    def __init__(self, db_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(db_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "locked":
            self.process.kill()
            raise AssertionError(f"lock holder failed to lock {db_path}: {line!r}")

    def release(self) -> None:
        if self.process.poll() is not None:
            return
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("release\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        self.process.wait(10)

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    main(sys.argv[1])
