"""Ground truth CSV: the exact (float64) values behind every snapshot the server latched."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

from simulator.errors import SimulatorError
from simulator.model import MeterState

HEADER = ("meter_id", "unit_id", "ts_ms", "import_kwh", "export_kwh", "power_w")


class GroundTruthWriter:
    """Appends one row per latched snapshot; ``flush()`` makes rows visible to readers.

    Floats are written with ``repr`` (shortest exact round trip), so a row parses
    back to the very float64 the model produced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise SimulatorError(f"cannot write ground truth {path}: {exc.strerror}") from None
        self._writer = csv.writer(self._file)
        self._writer.writerow(HEADER)
        self._file.flush()
        self._lock = threading.Lock()  # one writer may serve several servers' threads

    def write(self, meter_id: str, unit_id: int, state: MeterState) -> None:
        row = (
            meter_id,
            unit_id,
            state.ts_ms,
            repr(state.import_kwh),
            repr(state.export_kwh),
            repr(state.power_w),
        )
        with self._lock:
            self._writer.writerow(row)

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
