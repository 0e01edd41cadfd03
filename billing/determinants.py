"""Billing determinants: register-exact 15-minute energy per meter, validated.

The store returns, per meter and register, only the reads around each interval
boundary (``ReadingStore.boundary_reads``: SQL on SQLite, Flux on InfluxDB).
Here they are validated (:mod:`billing.vee`) and the register is interpolated
at every boundary in whole µkWh. An interval's energy is the difference of the
register at its two boundaries, so any split of a period adds up exactly to
the register difference: a boundary shared by two invoices has one value.

Interpolation at boundary ``b`` between accepted reads ``(t0, v0)`` and
``(t1, v1)`` (corrected register): ``v0 + rint(float(v1 - v0) * float(b - t0) /
float(t1 - t0))`` -- the same float operations in numpy and in the reference,
rounded half to even, so both give identical integers. Before the first read
the register is the first read; after the last read it stays at the last read
(flagged estimated: that energy is billed when later reads arrive, as a new
revision).

:func:`reference_determinants` recomputes everything in plain Python from raw
readings; tests check that both agree.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray

from billing.model import RegisterRead, VeeEvent
from billing.vee import DEFAULT_GAP_MS, CleanRegister, Register, VeeRules, validate, validate_loop
from electrocloud.errors import ElectroCloudError
from electrocloud.storage import (
    BOUNDARY_CONTEXT_MS,
    BOUNDARY_CONTEXT_READS,
    BoundaryReads,
    ReadingStore,
    RegisterReads,
    StoredReading,
    kwh_to_ukwh,
)

INTERVAL_MS = 900_000


class DeterminantsError(ElectroCloudError):
    """Determinants cannot be computed (no reads, bad period)."""


@dataclass(frozen=True, eq=False)
class RegisterDeterminants:
    """One register over the period: values at boundaries and energy per interval (µkWh)."""

    reads: RegisterReads  # what the store returned
    clean: CleanRegister  # after VEE
    boundary_ukwh: NDArray[np.int64]  # corrected register at each boundary
    boundary_meter_ukwh: NDArray[np.int64]  # the same on the meter's own scale
    boundary_estimated: NDArray[np.bool_]
    interval_ukwh: NDArray[np.int64]  # energy per interval (total)
    interval_estimated_ukwh: NDArray[np.int64]  # its estimated part

    @property
    def total_ukwh(self) -> int:
        return int(self.boundary_ukwh[-1] - self.boundary_ukwh[0])

    @property
    def estimated_ukwh(self) -> int:
        return int(self.interval_estimated_ukwh.sum())


@dataclass(frozen=True, eq=False)
class Determinants:
    """Everything the pricing engine needs from the meter for ``[start_ms, end_ms)``."""

    meter_id: str
    start_ms: int
    end_ms: int
    interval_ms: int
    rules: VeeRules
    boundaries_ms: NDArray[np.int64]  # n + 1 boundaries; interval k = [b[k], b[k+1])
    import_register: RegisterDeterminants
    export_register: RegisterDeterminants
    vee_events: tuple[VeeEvent, ...]

    @property
    def interval_count(self) -> int:
        return len(self.boundaries_ms) - 1

    def register_read(self, index: int) -> RegisterRead:
        """The register reads at boundary ``index`` (0 = start, -1 = end), meter scale."""
        imp, exp = self.import_register, self.export_register
        return RegisterRead(
            at_ms=int(self.boundaries_ms[index]),
            import_kwh=ukwh_to_kwh(int(imp.boundary_meter_ukwh[index])),
            export_kwh=ukwh_to_kwh(int(exp.boundary_meter_ukwh[index])),
            estimated=bool(imp.boundary_estimated[index])
            or (len(exp.clean.ts_ms) > 0 and bool(exp.boundary_estimated[index])),
        )

    @property
    def register_start(self) -> RegisterRead:
        return self.register_read(0)

    @property
    def register_end(self) -> RegisterRead:
        return self.register_read(-1)


def ukwh_to_kwh(ukwh: int) -> Decimal:
    """Whole µkWh as an exact Decimal kWh."""
    return Decimal(int(ukwh)).scaleb(-6)


def boundaries(start_ms: int, end_ms: int, interval_ms: int = INTERVAL_MS) -> NDArray[np.int64]:
    """``start, start + i, ...`` and ``end`` (the last interval may be shorter)."""
    if interval_ms <= 0:
        raise DeterminantsError(f"interval must be positive, got {interval_ms} ms")
    if end_ms <= start_ms:
        raise DeterminantsError(f"period end {end_ms} must be after its start {start_ms}")
    inner = np.arange(start_ms, end_ms, interval_ms, dtype=np.int64)
    return np.append(inner, np.int64(end_ms))


# --- numpy path ----------------------------------------------------------------


def _at_boundaries(
    clean: CleanRegister, bounds: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """(corrected, estimated-part cumulative, meter-scale, estimated flag) at each boundary."""
    t, c, raw = clean.ts_ms, clean.ukwh, clean.raw_ukwh
    count = len(t)
    size = len(bounds)
    if count == 0:
        zeros = np.zeros(size, dtype=np.int64)
        return zeros, zeros, zeros, np.ones(size, dtype=np.bool_)
    est_delta = np.where(clean.estimated, np.diff(c), 0)
    est_cum = np.concatenate([[0], np.cumsum(est_delta)]).astype(np.int64)
    idx = np.searchsorted(t, bounds, side="right") - 1
    at = np.clip(idx, 0, count - 1)
    before_first = idx < 0
    on_read = ~before_first & (t[at] == bounds)
    interior = ~before_first & ~on_read & (idx < count - 1)
    after_last = ~before_first & ~on_read & (idx >= count - 1)
    value = c[at].copy()
    estimated_cum = est_cum[at].copy()
    flag = before_first | after_last
    if count > 1 and interior.any():
        pair = np.clip(idx, 0, count - 2)[interior]
        dt = (t[pair + 1] - t[pair]).astype(np.float64)
        delta = (c[pair + 1] - c[pair]).astype(np.float64)
        step = np.rint(delta * (bounds[interior] - t[pair]).astype(np.float64) / dt)
        step = step.astype(np.int64)
        value[interior] = c[pair] + step
        pair_est = clean.estimated[pair]
        estimated_cum[interior] = est_cum[pair] + np.where(pair_est, step, 0)
        flag[interior] = pair_est
    value[before_first] = c[0]
    estimated_cum[before_first] = 0
    meter = raw[at] + (value - c[at])
    meter[before_first] = raw[0]
    return value, estimated_cum, meter, flag


def _register(
    reads: RegisterReads, register: Register, rules: VeeRules, bounds: NDArray[np.int64]
) -> RegisterDeterminants:
    clean = validate(reads.ts_ms, reads.ukwh, register, rules)
    value, est_cum, meter, flag = _at_boundaries(clean, bounds)
    return RegisterDeterminants(
        reads=reads,
        clean=clean,
        boundary_ukwh=value,
        boundary_meter_ukwh=meter,
        boundary_estimated=flag,
        interval_ukwh=np.diff(value),
        interval_estimated_ukwh=np.diff(est_cum),
    )


def _edge_events(
    register: Register, clean: CleanRegister, start_ms: int, end_ms: int
) -> list[VeeEvent]:
    """Flags for a period edge without a read beyond it: no energy assumed there."""
    if len(clean.ts_ms) == 0:
        return []
    events = []
    first, last = int(clean.ts_ms[0]), int(clean.ts_ms[-1])
    if first > start_ms:
        events.append(
            VeeEvent(
                kind="gap_estimated",
                start_ms=start_ms,
                end_ms=first,
                register=register,
                kwh=Decimal(0),
                detail="no read before this time: no energy counted before the first read",
            )
        )
    if last < end_ms:
        events.append(
            VeeEvent(
                kind="gap_estimated",
                start_ms=last,
                end_ms=end_ms,
                register=register,
                kwh=Decimal(0),
                detail=(
                    "no read after this time yet: energy after the last read is billed "
                    "when reads arrive (a new revision)"
                ),
            )
        )
    return events


def _assemble(
    meter_id: str,
    start_ms: int,
    end_ms: int,
    interval_ms: int,
    rules: VeeRules,
    bounds: NDArray[np.int64],
    imp: RegisterDeterminants,
    exp: RegisterDeterminants,
) -> Determinants:
    events = [*imp.clean.events, *exp.clean.events]
    events += _edge_events("import", imp.clean, start_ms, end_ms)
    events += _edge_events("export", exp.clean, start_ms, end_ms)
    # Only what touches the period: context reads outside it are for validation.
    relevant = [e for e in events if e.end_ms > start_ms and e.start_ms < end_ms]
    relevant.sort(key=lambda e: (e.start_ms, e.register, e.kind, e.end_ms))
    return Determinants(
        meter_id=meter_id,
        start_ms=start_ms,
        end_ms=end_ms,
        interval_ms=interval_ms,
        rules=rules,
        boundaries_ms=bounds,
        import_register=imp,
        export_register=exp,
        vee_events=tuple(relevant),
    )


def _rule(value: float | Mapping[str, float | None] | None, meter_id: str) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.get(meter_id)


def rules_for(
    meter_id: str,
    rollover_kwh: float | Mapping[str, float | None] | None,
    max_power_kw: float | Mapping[str, float | None] | None,
    gap_ms: int = DEFAULT_GAP_MS,
) -> VeeRules:
    rollover = _rule(rollover_kwh, meter_id)
    return VeeRules(
        rollover_ukwh=None if rollover is None else kwh_to_ukwh(rollover),
        max_power_kw=_rule(max_power_kw, meter_id),
        gap_ms=gap_ms,
    )


def determinants_from_reads(
    reads: BoundaryReads,
    start_ms: int,
    end_ms: int,
    rules: VeeRules,
    interval_ms: int = INTERVAL_MS,
) -> Determinants:
    """Determinants of one meter from its boundary reads (numpy)."""
    bounds = boundaries(start_ms, end_ms, interval_ms)
    imp = _register(reads.import_register, "import", rules, bounds)
    exp = _register(reads.export_register, "export", rules, bounds)
    return _assemble(reads.meter_id, start_ms, end_ms, interval_ms, rules, bounds, imp, exp)


def compute_determinants_batch(
    store: ReadingStore,
    meter_ids: Collection[str] | None,
    start_ms: int,
    end_ms: int,
    *,
    rollover_kwh: float | Mapping[str, float | None] | None = None,
    max_power_kw: float | Mapping[str, float | None] | None = None,
    interval_ms: int = INTERVAL_MS,
    gap_ms: int = DEFAULT_GAP_MS,
) -> dict[str, Determinants]:
    """Determinants of many meters from one store query; meters without reads are absent.

    ``rollover_kwh``/``max_power_kw``: one value for every meter or a mapping by meter id.
    """
    boundaries(start_ms, end_ms, interval_ms)  # validates the period
    result = {}
    for reads in store.boundary_reads(meter_ids, start_ms, end_ms, interval_ms):
        rules = rules_for(reads.meter_id, rollover_kwh, max_power_kw, gap_ms)
        result[reads.meter_id] = determinants_from_reads(
            reads, start_ms, end_ms, rules, interval_ms
        )
    return result


def compute_determinants(
    store: ReadingStore,
    meter_id: str,
    start_ms: int,
    end_ms: int,
    *,
    rollover_kwh: float | None = None,
    max_power_kw: float | None = None,
    interval_ms: int = INTERVAL_MS,
    gap_ms: int = DEFAULT_GAP_MS,
) -> Determinants:
    """Determinants of one meter for ``[start_ms, end_ms)``; DeterminantsError without reads."""
    found = compute_determinants_batch(
        store,
        [meter_id],
        start_ms,
        end_ms,
        rollover_kwh=rollover_kwh,
        max_power_kw=max_power_kw,
        interval_ms=interval_ms,
        gap_ms=gap_ms,
    )
    if meter_id not in found:
        raise DeterminantsError(
            f"meter {meter_id} has no import or export register reads in or around "
            f"[{start_ms}, {end_ms})"
        )
    return found[meter_id]


# --- plain-Python reference ----------------------------------------------------------


def _reference_select(
    reads: Iterable[tuple[int, int]], start_ms: int, end_ms: int, interval_ms: int
) -> list[tuple[int, int]]:
    """The port's boundary-read selection, read by read."""
    by_ts = dict(reads)
    ordered = sorted(by_ts.items())
    before = [r for r in ordered if start_ms - BOUNDARY_CONTEXT_MS <= r[0] < start_ms]
    after = [r for r in ordered if end_ms <= r[0] < end_ms + BOUNDARY_CONTEXT_MS]
    inside = [r for r in ordered if start_ms <= r[0] < end_ms]
    kept = []
    for i, read in enumerate(inside):
        window = (read[0] - start_ms) // interval_ms
        first = i == 0 or (inside[i - 1][0] - start_ms) // interval_ms != window
        last = i == len(inside) - 1 or (inside[i + 1][0] - start_ms) // interval_ms != window
        if first or last:
            kept.append(read)
    return before[-BOUNDARY_CONTEXT_READS:] + kept + after[:BOUNDARY_CONTEXT_READS]


def _reference_register(
    selected: list[tuple[int, int]],
    register: Register,
    rules: VeeRules,
    bounds: list[int],
) -> RegisterDeterminants:
    clean = validate_loop([t for t, _ in selected], [v for _, v in selected], register, rules)
    t = clean.ts_ms.tolist()
    c = clean.ukwh.tolist()
    raw = clean.raw_ukwh.tolist()
    est = clean.estimated.tolist()
    est_cum = [0]
    for i, flagged in enumerate(est):
        est_cum.append(est_cum[-1] + (c[i + 1] - c[i] if flagged else 0))
    values, est_values, meter, flags = [], [], [], []
    for b in bounds:
        if not t:
            values.append(0)
            est_values.append(0)
            meter.append(0)
            flags.append(True)
            continue
        i = bisect.bisect_right(t, b) - 1
        if i < 0:
            values.append(c[0])
            est_values.append(0)
            meter.append(raw[0])
            flags.append(True)
        elif t[i] == b or i == len(t) - 1:
            values.append(c[i])
            est_values.append(est_cum[i])
            meter.append(raw[i])
            flags.append(t[i] != b)
        else:
            step = round(float(c[i + 1] - c[i]) * float(b - t[i]) / float(t[i + 1] - t[i]))
            values.append(c[i] + step)
            est_values.append(est_cum[i] + (step if est[i] else 0))
            meter.append(raw[i] + step)
            flags.append(est[i])
    return RegisterDeterminants(
        reads=RegisterReads(
            np.array([x for x, _ in selected], dtype=np.int64),
            np.array([v for _, v in selected], dtype=np.int64),
        ),
        clean=clean,
        boundary_ukwh=np.array(values, dtype=np.int64),
        boundary_meter_ukwh=np.array(meter, dtype=np.int64),
        boundary_estimated=np.array(flags, dtype=np.bool_),
        interval_ukwh=np.array([b - a for a, b in itertools.pairwise(values)]),
        interval_estimated_ukwh=np.array(
            [b - a for a, b in itertools.pairwise(est_values)], dtype=np.int64
        ),
    )


def reference_determinants(
    readings: Iterable[StoredReading],
    meter_id: str,
    start_ms: int,
    end_ms: int,
    *,
    rollover_kwh: float | None = None,
    max_power_kw: float | None = None,
    interval_ms: int = INTERVAL_MS,
    gap_ms: int = DEFAULT_GAP_MS,
) -> Determinants:
    """The determinants from raw readings in plain Python (the test oracle).

    Readings may come in any order and repeat; for one ``ts_ms`` the last wins,
    as in the store.
    """
    if end_ms <= start_ms or interval_ms <= 0:
        raise DeterminantsError("bad period or interval")
    bounds = [*list(range(start_ms, end_ms, interval_ms)), end_ms]
    mine = [r for r in readings if r.meter_id == meter_id]
    rules = rules_for(meter_id, rollover_kwh, max_power_kw, gap_ms)
    registers = []
    for register, name in (("import", "import_kwh"), ("export", "export_kwh")):
        values = []
        for reading in mine:
            kwh = getattr(reading, name)
            if kwh is not None and math.isfinite(kwh):
                values.append((reading.ts_ms, kwh_to_ukwh(kwh)))
        selected = _reference_select(values, start_ms, end_ms, interval_ms)
        registers.append(_reference_register(selected, register, rules, bounds))  # type: ignore[arg-type]
    return _assemble(
        meter_id,
        start_ms,
        end_ms,
        interval_ms,
        rules,
        np.array(bounds, dtype=np.int64),
        registers[0],
        registers[1],
    )
