"""Validation, estimation and editing (VEE) of one cumulative register.

Input: a register's reads, ascending unique times (ms) and values in whole µkWh,
as the storage port's ``boundary_reads`` returns them. Output: a *corrected*
register at the same read times that never goes backwards, a flag per pair of
consecutive accepted reads telling whether the energy between them is
estimated, and the events. Rules (docs/billing.md, "VEE"):

- a pair is *bad* when the register falls, or rises faster than the meter's
  rating (``max_power_kw``);
- spike: a read whose removal makes its neighbours a good pair, while it forms
  a bad pair with one of them, is rejected; the register between the neighbours
  is then interpolated (estimated);
- a fall between accepted reads is a rollover when a rollover value is
  configured, the register was in its upper half and is now in its lower half,
  and the wrapped energy is within the rating; otherwise a reset (the meter
  restarted from zero right after the earlier read). Either way the register is
  carried on, so no energy is lost;
- a rise above the rating that is not an isolated spike is rejected and its
  energy estimated from the average power of the neighbouring good pairs;
- gap: reads further apart than ``gap_ms``: the energy between them is linearly
  interpolated, so it is estimated.

Two implementations share these rules: :func:`validate_loop` (plain Python, the
reference) and :func:`validate` (numpy; clean registers never enter a Python
loop, others fall back to the loop).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from billing.model import VeeEvent

Register = Literal["import", "export"]

#: Reads further apart than this are a gap: 15-minute reads with clock jitter are not.
DEFAULT_GAP_MS = 20 * 60_000


@dataclass(frozen=True, slots=True)
class VeeRules:
    """Meter-specific validation parameters."""

    rollover_ukwh: int | None = None  # register wraps to 0 at this value
    max_power_kw: float | None = None  # the meter's rating
    gap_ms: int = DEFAULT_GAP_MS


@dataclass(frozen=True, eq=False)
class CleanRegister:
    """A validated register: corrected values at the accepted reads."""

    ts_ms: NDArray[np.int64]  # accepted read times
    raw_ukwh: NDArray[np.int64]  # the meter's values there
    ukwh: NDArray[np.int64]  # corrected, never decreasing (same offset as raw at the first)
    estimated: NDArray[np.bool_]  # per pair (len - 1): energy between the reads is estimated
    events: tuple[VeeEvent, ...]


def _kwh(ukwh: int) -> Decimal:
    return Decimal(ukwh).scaleb(-6)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _power_kw(delta_ukwh: int, dt_ms: int) -> float:
    # Same float operations as the numpy path, so both judge identically.
    return float(delta_ukwh) * 3.6 / float(dt_ms)


def _bad(t0: int, v0: int, t1: int, v1: int, rules: VeeRules) -> bool:
    delta = v1 - v0
    if delta < 0:
        return True
    return rules.max_power_kw is not None and _power_kw(delta, t1 - t0) > rules.max_power_kw


def validate_loop(
    ts_ms: Sequence[int], ukwh: Sequence[int], register: Register, rules: VeeRules
) -> CleanRegister:
    """The reference: the rules above, read by read, in plain Python."""
    ts = [int(t) for t in ts_ms]
    vs = [int(v) for v in ukwh]
    events: list[VeeEvent] = []
    count = len(ts)

    # 1. Spikes: isolated reads that break an otherwise consistent neighbourhood.
    accepted = [0] if count else []
    after_spike: set[int] = set()  # accepted reads that follow a rejected one
    for i in range(1, count - 1):
        p, n = accepted[-1], i + 1
        around_bad = _bad(ts[p], vs[p], ts[i], vs[i], rules) or _bad(
            ts[i], vs[i], ts[n], vs[n], rules
        )
        if around_bad and not _bad(ts[p], vs[p], ts[n], vs[n], rules):
            events.append(
                VeeEvent(
                    kind="spike_rejected",
                    start_ms=ts[p],
                    end_ms=ts[n],
                    register=register,
                    kwh=_kwh(vs[n] - vs[p]),
                    detail=(
                        f"read {_kwh(vs[i])} kWh at {_when(ts[i])} rejected (neighbours "
                        f"{_kwh(vs[p])} and {_kwh(vs[n])} kWh); energy between them interpolated"
                    ),
                )
            )
            after_spike.add(n)
            continue
        accepted.append(i)
    if count > 1:
        accepted.append(count - 1)

    # 2. Pairs of accepted reads: falls, over-rating rises, gaps.
    deltas: list[int] = []
    estimated: list[bool] = []
    pairs = list(itertools.pairwise(accepted))
    for index, (a, b) in enumerate(pairs):
        dt = ts[b] - ts[a]
        delta = vs[b] - vs[a]
        is_estimated = False
        if delta < 0:
            wrapped = None
            if rules.rollover_ukwh is not None:
                half = rules.rollover_ukwh / 2
                candidate = rules.rollover_ukwh - vs[a] + vs[b]
                plausible = (
                    rules.max_power_kw is None or _power_kw(candidate, dt) <= rules.max_power_kw
                )
                if vs[a] >= half > vs[b] and candidate >= 0 and plausible:
                    wrapped = candidate
            if wrapped is not None:
                delta = wrapped
                events.append(
                    VeeEvent(
                        kind="rollover",
                        start_ms=ts[a],
                        end_ms=ts[b],
                        register=register,
                        kwh=_kwh(rules.rollover_ukwh or 0),
                        detail=(
                            f"register rolled over from {_kwh(vs[a])} to {_kwh(vs[b])} kWh "
                            f"at {_kwh(rules.rollover_ukwh or 0)} kWh; {_kwh(delta)} kWh between"
                        ),
                    )
                )
            else:
                delta = vs[b]
                events.append(
                    VeeEvent(
                        kind="register_reset",
                        start_ms=ts[a],
                        end_ms=ts[b],
                        register=register,
                        kwh=_kwh(vs[a]),
                        detail=(
                            f"register fell from {_kwh(vs[a])} to {_kwh(vs[b])} kWh: reset, "
                            f"counted from zero; {_kwh(vs[a])} kWh carried on"
                        ),
                    )
                )
        elif rules.max_power_kw is not None and _power_kw(delta, dt) > rules.max_power_kw:
            rates = []
            for neighbour in (index - 1, index + 1):
                if 0 <= neighbour < len(pairs):
                    c, d = pairs[neighbour]
                    if not _bad(ts[c], vs[c], ts[d], vs[d], rules):
                        rates.append((vs[d] - vs[c]) / (ts[d] - ts[c]))
            rate = sum(rates) / len(rates) if rates else 0.0
            estimate = round(rate * dt)
            events.append(
                VeeEvent(
                    kind="spike_rejected",
                    start_ms=ts[a],
                    end_ms=ts[b],
                    register=register,
                    kwh=_kwh(estimate),
                    detail=(
                        f"rise of {_kwh(delta)} kWh in {dt / 60_000:g} min exceeds the meter "
                        f"rating of {rules.max_power_kw:g} kW; estimated {_kwh(estimate)} kWh "
                        "from the neighbouring intervals"
                    ),
                )
            )
            delta = estimate
            is_estimated = True
        elif b in after_spike:
            is_estimated = True  # interpolated over the rejected read: its event says so
        elif dt > rules.gap_ms:
            is_estimated = True
            events.append(
                VeeEvent(
                    kind="gap_estimated",
                    start_ms=ts[a],
                    end_ms=ts[b],
                    register=register,
                    kwh=_kwh(delta),
                    detail=(
                        f"no reads for {dt / 60_000:g} min; {_kwh(delta)} kWh interpolated "
                        "linearly between the reads around the gap"
                    ),
                )
            )
        deltas.append(delta)
        estimated.append(is_estimated)

    corrected = [vs[accepted[0]]] if accepted else []
    for delta in deltas:
        corrected.append(corrected[-1] + delta)
    return CleanRegister(
        ts_ms=np.array([ts[i] for i in accepted], dtype=np.int64),
        raw_ukwh=np.array([vs[i] for i in accepted], dtype=np.int64),
        ukwh=np.array(corrected, dtype=np.int64),
        estimated=np.array(estimated, dtype=np.bool_),
        events=tuple(sorted(events, key=lambda e: (e.start_ms, e.end_ms, e.kind))),
    )


def validate(
    ts_ms: NDArray[np.int64], ukwh: NDArray[np.int64], register: Register, rules: VeeRules
) -> CleanRegister:
    """Same result as :func:`validate_loop`; registers without a bad pair stay in numpy."""
    dt = np.diff(ts_ms)
    delta = np.diff(ukwh)
    bad = delta < 0
    if rules.max_power_kw is not None and len(dt):
        bad |= delta.astype(np.float64) * 3.6 / dt.astype(np.float64) > rules.max_power_kw
    if bad.any():
        return validate_loop(ts_ms.tolist(), ukwh.tolist(), register, rules)
    gaps = dt > rules.gap_ms
    events = tuple(
        VeeEvent(
            kind="gap_estimated",
            start_ms=int(ts_ms[i]),
            end_ms=int(ts_ms[i + 1]),
            register=register,
            kwh=_kwh(int(delta[i])),
            detail=(
                f"no reads for {int(dt[i]) / 60_000:g} min; {_kwh(int(delta[i]))} kWh "
                "interpolated linearly between the reads around the gap"
            ),
        )
        for i in np.flatnonzero(gaps)
    )
    return CleanRegister(ts_ms=ts_ms, raw_ukwh=ukwh, ukwh=ukwh, estimated=gaps, events=events)
