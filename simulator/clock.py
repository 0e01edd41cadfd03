"""Simulated time: a start instant plus real elapsed time multiplied by a speed."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime


def default_start_ms(speed: float, *, now_ms: int | None = None) -> int:
    """Where a run starts when no start is given.

    Real time (``speed == 1``) starts now; an accelerated run starts at 00:00 UTC
    on the first day of the previous month, so it produces past timestamps for
    a while instead of racing into the future.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if speed == 1:
        return now
    today = datetime.fromtimestamp(now / 1000, tz=UTC)
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


class SimClock:
    """``now_ms() = start_ms + real monotonic seconds since creation * speed * 1000``.

    Never goes backwards (monotonic source), whatever happens to the wall clock.
    """

    def __init__(self, start_ms: int | None = None, speed: float = 1.0) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive finite number, got {speed!r}")
        if start_ms is not None and start_ms < 0:
            raise ValueError(f"start_ms must be >= 0 (ms since 1970-01-01 UTC), got {start_ms}")
        self.speed = float(speed)
        self.start_ms = default_start_ms(speed) if start_ms is None else int(start_ms)
        self._started = time.monotonic()

    def now_ms(self) -> int:
        """The simulated UTC time in ms since the epoch."""
        return self.start_ms + int((time.monotonic() - self._started) * self.speed * 1000.0)

    def __repr__(self) -> str:
        start = datetime.fromtimestamp(self.start_ms / 1000, tz=UTC).isoformat()
        return f"SimClock(start={start}, speed={self.speed:g})"
