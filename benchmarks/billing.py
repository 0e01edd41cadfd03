"""Billing throughput: 1,000 meters x one month of 15-minute reads from SQLite.

``python -m benchmarks.billing [--meters 1000] [--db PATH] [--repeat 3]``

Fills a SQLite file through :class:`SqliteStore` (not timed; reused when
``--db`` names an existing file with the same fleet), then bills July 2024 on
the example TOU + tiered + demand tariff (``billing/tariffs/commercial-tou-demand.yaml``):
one ``compute_determinants_batch`` (one store query for every meter) and one
``price`` per meter. Prints meters per second (best of ``--repeat`` runs,
every run in this process) and peak memory: the process's peak RSS
(``resource.getrusage``) and, from a separate run under ``tracemalloc``, the
peak Python heap of one billing run.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from billing.determinants import compute_determinants_batch
from billing.engine import period_bounds_ms, price
from billing.model import Customer
from billing.tariff import Tariff, load_tariff
from electrocloud.storage import StoredReading
from electrocloud.stores.sqlite import SqliteStore

TARIFF = (
    Path(__file__).resolve().parent.parent / "billing" / "tariffs" / "commercial-tou-demand.yaml"
)
PERIOD = (date(2024, 7, 1), date(2024, 8, 1))
QUARTER_MS = 900_000


def fill(store: SqliteStore, tariff: Tariff, meters: int, seed: int = 1) -> int:
    """Write ``meters`` meters with a 15-minute read at every boundary of the period (+1 h)."""
    start_ms, end_ms = period_bounds_ms(tariff, *PERIOD)
    times = np.arange(start_ms - QUARTER_MS, end_ms + 4 * QUARTER_MS, QUARTER_MS)
    hours = ((times - start_ms) // 3_600_000 + 20) % 24  # ~ local hour in New York
    shape = 0.6 + 0.8 * np.exp(-((hours - 14) ** 2) / 18)  # business-hours bump
    rng = np.random.default_rng(seed)
    written = 0
    for first in range(0, meters, 50):
        batch = []
        for index in range(first, min(first + 50, meters)):
            size = rng.uniform(2, 40)  # kW scale of this customer
            energy = size / 4 * shape * rng.uniform(0.7, 1.3, len(times))
            imports = np.round(1000 * index + np.cumsum(energy), 3)
            exports = np.round(np.cumsum(rng.uniform(0, 0.02, len(times))), 3)
            meter_id = f"m-{index + 1:04d}"
            batch += [
                StoredReading("gw-1", meter_id, int(t), seq, float(i), float(e))
                for seq, (t, i, e) in enumerate(zip(times, imports, exports, strict=True))
            ]
        store.write_batch(batch)
        written += len(batch)
    return written


def bill_all(store: SqliteStore, tariff: Tariff) -> tuple[int, Any]:
    start_ms, end_ms = period_bounds_ms(tariff, *PERIOD)
    determinants = compute_determinants_batch(store, None, start_ms, end_ms, max_power_kw=200.0)
    total = None
    for meter_id, d in determinants.items():
        customer = Customer(account_id=f"A-{meter_id}", name=meter_id)
        total = price(d, tariff, *PERIOD, customer).total
    return len(determinants), total


def run(meters: int, db: Path | None, repeat: int) -> dict[str, float]:
    tariff = load_tariff(TARIFF)
    with tempfile.TemporaryDirectory() as scratch:
        path = db or Path(scratch) / "billing-bench.db"
        store = SqliteStore(path)
        try:
            if len(store.meter_ids()) != meters:
                if store.meter_ids():
                    raise SystemExit(f"{path} holds another fleet; pass a new --db path")
                began = time.perf_counter()
                written = fill(store, tariff, meters)
                print(
                    f"filled {path}: {written:,} readings in {time.perf_counter() - began:.1f} s",
                    file=sys.stderr,
                )
            seconds = []
            for _ in range(repeat):
                gc.collect()
                began = time.perf_counter()
                billed, _ = bill_all(store, tariff)
                seconds.append(time.perf_counter() - began)
                if billed != meters:
                    raise SystemExit(f"billed {billed} of {meters} meters")
            rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            tracemalloc.start()
            bill_all(store, tariff)
            heap_mib = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        finally:
            store.close()
    best = min(seconds)
    return {
        "meters": meters,
        "best_s": best,
        "median_s": float(np.median(seconds)),
        "meters_per_s": meters / best,
        "peak_rss_mib": rss_mib,
        "peak_heap_mib": heap_mib,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument(
        "--db", type=Path, help="SQLite file to fill or reuse (default: a temp file)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.meters, args.db, args.repeat)
    print(
        f"billed {result['meters']} meters x 1 month of 15-minute data "
        f"(TOU + tiered + demand): best {result['best_s']:.2f} s, "
        f"median {result['median_s']:.2f} s -> {result['meters_per_s']:.0f} meters/s; "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB, "
        f"peak Python heap of one run {result['peak_heap_mib']:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
