"""Per-meter sanity checks on decoded samples, before anything is queued.

- A value outside its profile's ``plausible`` range, or NaN/inf, is removed from
  the sample, named in ``sample.dropped`` and flagged ``value_dropped``: the
  backend sees that something was removed, and nothing implausible is stored.
- A cumulative register (``import_kwh``/``export_kwh``) lower than the previous
  read is kept (a meter reset or rollover is real data) but flagged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.profile import DeviceProfile
from edge.sample import MeterSample
from electrocloud.contract import Flag

log = logging.getLogger(__name__)

#: Cumulative registers and the flag raised when one goes backwards.
CUMULATIVE_FLAGS: dict[str, Flag] = {
    "import_kwh": Flag.IMPORT_KWH_DECREASED,
    "export_kwh": Flag.EXPORT_KWH_DECREASED,
}


def is_plausible(value: float, bounds: tuple[float, float] | None) -> bool:
    """False for NaN/inf, or for a value outside ``bounds`` when there are bounds."""
    if not math.isfinite(value):
        return False
    return bounds is None or bounds[0] <= value <= bounds[1]


@dataclass
class _DropLog:
    """Rate limit for 'value dropped' warnings: one per field per interval, with a count."""

    interval_s: float
    last_logged: dict[str, float] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)

    def should_log(self, field_name: str, now: float) -> tuple[bool, int]:
        last = self.last_logged.get(field_name)
        if last is not None and now - last < self.interval_s:
            self.suppressed[field_name] = self.suppressed.get(field_name, 0) + 1
            return False, 0
        self.last_logged[field_name] = now
        return True, self.suppressed.pop(field_name, 0)


class SanityChecker:
    """Checks the samples of one meter; keeps the state needed across reads."""

    def __init__(
        self,
        meter_id: str,
        profile: DeviceProfile,
        *,
        log_interval_s: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter_id = meter_id
        self.bounds = {r.field: r.plausible for r in profile.registers}
        self.values_dropped = 0  # total values removed from samples
        self.decreases = 0  # cumulative registers seen going backwards
        self._previous: dict[str, float] = {}
        self._drop_log = _DropLog(log_interval_s)
        self._monotonic = monotonic

    def check(self, sample: MeterSample) -> MeterSample:
        """Drop implausible values and flag decreasing energy registers (in place)."""
        for name, value in list(sample.values.items()):
            if not is_plausible(value, self.bounds.get(name)):
                del sample.values[name]
                self._dropped(sample, name, value)
        for name, flag in CUMULATIVE_FLAGS.items():
            current = sample.values.get(name)
            if current is None:
                continue
            previous = self._previous.get(name)
            if previous is not None and current < previous:
                sample.flags.append(flag)
                self.decreases += 1
                log.warning(
                    "meter %s: %s went backwards from %s to %s (meter reset or rollover?); "
                    "kept and flagged %s",
                    self.meter_id,
                    name,
                    previous,
                    current,
                    flag.value,
                )
            # The new value is the baseline: one reset is flagged once, not on every later read.
            self._previous[name] = current
        return sample

    def _dropped(self, sample: MeterSample, name: str, value: float) -> None:
        sample.dropped.append(name)
        if Flag.VALUE_DROPPED not in sample.flags:
            sample.flags.append(Flag.VALUE_DROPPED)
        self.values_dropped += 1
        should_log, suppressed = self._drop_log.should_log(name, self._monotonic())
        if should_log:
            bounds = self.bounds.get(name)
            why = (
                "not a finite number"
                if not math.isfinite(value)
                else f"outside {list(bounds or ())}"
            )
            more = f" ({suppressed} more dropped since the last message)" if suppressed else ""
            log.warning("meter %s: dropped %s = %r: %s%s", self.meter_id, name, value, why, more)
