"""Reconciliation at the end of a demo: what the edge committed, what the store holds,
and what the simulator says was true."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

from electrocloud.storage import ReadingStore, StoredReading


@dataclass(frozen=True)
class MeterReport:
    meter_id: str
    committed: int  # readings the edge made durable (seq 0 .. committed-1)
    stored: int  # distinct readings in the store
    lost: int  # committed sequence numbers missing from the store
    first_ts_ms: int | None
    last_ts_ms: int | None
    stored_import_kwh: float  # last - first import register, as stored (float32 registers)
    true_import_kwh: float | None  # the simulator's exact value between the same instants
    stored_export_kwh: float
    true_export_kwh: float | None

    @property
    def import_error_kwh(self) -> float | None:
        if self.true_import_kwh is None:
            return None
        return self.stored_import_kwh - self.true_import_kwh


def load_ground_truth(path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """``{(meter_id, ts_ms): (import_kwh, export_kwh)}`` for every snapshot the simulator served."""
    truth: dict[tuple[str, int], tuple[float, float]] = {}
    if not path.exists():
        return truth
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["meter_id"], int(row["ts_ms"]))
            truth[key] = (float(row["import_kwh"]), float(row["export_kwh"]))
    return truth


def reconcile(
    store: ReadingStore,
    committed: dict[str, int],
    ground_truth: dict[tuple[str, int], tuple[float, float]],
) -> list[MeterReport]:
    reports = []
    for meter_id in sorted(set(committed) | set(store.meter_ids())):
        readings = store.readings([meter_id], 0, 2**62)
        seqs = {r.seq for r in readings}
        expected = committed.get(meter_id, 0)
        lost = sum(1 for seq in range(expected) if seq not in seqs)
        first, last = (readings[0], readings[-1]) if readings else (None, None)
        true_import = true_export = None
        if first is not None and last is not None:
            start = ground_truth.get((meter_id, first.ts_ms))
            end = ground_truth.get((meter_id, last.ts_ms))
            if start and end:
                true_import, true_export = end[0] - start[0], end[1] - start[1]

        reports.append(
            MeterReport(
                meter_id=meter_id,
                committed=expected,
                stored=len(seqs),
                lost=lost,
                first_ts_ms=first.ts_ms if first else None,
                last_ts_ms=last.ts_ms if last else None,
                stored_import_kwh=_delta(first, last, "import_kwh"),
                true_import_kwh=true_import,
                stored_export_kwh=_delta(first, last, "export_kwh"),
                true_export_kwh=true_export,
            )
        )
    return reports


def _delta(first: StoredReading | None, last: StoredReading | None, field: str) -> float:
    if first is None or last is None:
        return 0.0
    return float(getattr(last, field) or 0.0) - float(getattr(first, field) or 0.0)


def report_dict(report: MeterReport) -> dict[str, object]:
    return {**asdict(report), "import_error_kwh": report.import_error_kwh}
