"""One poller per meter: read at a fixed rate, decode, check, hand the sample on.

Like a Home Assistant update coordinator, a :class:`MeterPoller` owns one
meter's schedule and failure state. Polls start on a fixed grid (``previous
deadline + poll_interval_s``); a poll that overruns skips the missed slots
instead of bursting to catch up. A meter that stops answering is retried with
exponential backoff (from the poll interval up to ``backoff_max_s``), logged
once at WARNING when it starts failing and once at INFO when it recovers. Each
poller only ever waits on its own link, so a dead meter never delays meters on
other connections.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.config import MeterSettings
from edge.errors import MeterReadError
from edge.modbus import ModbusLink
from edge.plan import ReadRequest, plan_reads
from edge.profile import DEVICE_TIME_FIELD, DeviceProfile
from edge.sample import MeterSample
from edge.sanity import SanityChecker
from electrocloud.errors import ConfigError, ConfigProblem

log = logging.getLogger(__name__)


@dataclass
class PollerStats:
    """Counters of one meter, for health metrics."""

    polls_ok: int = 0
    polls_failed: int = 0
    consecutive_failures: int = 0
    last_success_ts_ms: int | None = None  # ts_ms of the last good sample
    values_dropped: int = 0  # implausible values removed (see edge.sanity)
    slots_skipped: int = 0  # poll slots skipped because a poll overran its interval
    last_error: str | None = None


def next_deadline(previous: float, interval: float, now: float) -> tuple[float, int]:
    """The next slot on the grid ``previous + k * interval`` that is after ``now``.

    Returns ``(deadline, slots skipped)``: slots already in the past are skipped, not
    run back to back.
    """
    deadline = previous + interval
    if deadline > now:
        return deadline, 0
    missed = math.floor((now - deadline) / interval) + 1
    return deadline + missed * interval, missed


def backoff_delay(interval: float, consecutive_failures: int, backoff_max_s: float) -> float:
    """Wait before retry number ``consecutive_failures``: interval, 2x, 4x, ... up to the max."""
    exponent = min(consecutive_failures - 1, 60)  # 2**60 x interval is past any max
    return max(interval, min(backoff_max_s, interval * 2.0**exponent))


class MeterPoller:
    """Polls one meter over its :class:`ModbusLink` and passes samples to ``sink``.

    ``sink`` is called from the event loop with each checked sample; an exception
    from it ends :meth:`run` (a sample must never be dropped silently).
    """

    def __init__(
        self,
        meter: MeterSettings,
        profile: DeviceProfile,
        link: ModbusLink,
        sink: Callable[[MeterSample], None],
        *,
        backoff_max_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if meter.time_source == "device" and not profile.has_device_clock:
            raise ConfigError(
                profile.source,
                [
                    ConfigProblem(
                        f"meter {meter.meter_id}",
                        "time_source",
                        f"'device' needs a {DEVICE_TIME_FIELD} register, and profile "
                        f"{profile.name!r} has none; use time_source: gateway or a profile "
                        "with a device clock",
                    )
                ],
            )
        self.meter = meter
        self.profile = profile
        self.link = link
        self.sink = sink
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.requests: list[ReadRequest] = plan_reads(profile)
        self.sanity = SanityChecker(meter.meter_id, profile)
        self.stats = PollerStats()
        self._failing_since: float | None = None  # loop time of the first failure in a row

    @property
    def meter_id(self) -> str:
        return self.meter.meter_id

    async def poll_once(self) -> MeterSample:
        """Read every planned request, decode and check; raises MeterReadError on failure."""
        values: dict[str, int | float] = {}
        response_ts_ms: int | None = None
        responses: list[list[int]] = []
        async with self.link.held():  # the requests of one read go out back to back
            for request in self.requests:
                responses.append(await self.link.execute(self.meter.unit_id, request))
                if response_ts_ms is None:
                    # The first response: with a device clock, the one that latched the snapshot.
                    response_ts_ms = int(self.clock() * 1000)
        for request, words in zip(self.requests, responses, strict=True):
            values.update(request.decode(words))
        device_time = values.pop(DEVICE_TIME_FIELD, None)
        if self.meter.time_source == "device":
            if device_time is None or not math.isfinite(device_time) or device_time < 0:
                raise MeterReadError(
                    f"meter {self.meter_id}: device clock {DEVICE_TIME_FIELD}={device_time!r} "
                    "is not a valid time"
                )
            ts_ms = int(device_time)
        else:
            ts_ms = response_ts_ms if response_ts_ms is not None else int(self.clock() * 1000)
        sample = MeterSample(
            meter_id=self.meter_id, ts_ms=ts_ms, values={k: float(v) for k, v in values.items()}
        )
        return self.sanity.check(sample)

    async def run(self) -> None:
        """Poll until cancelled."""
        loop = asyncio.get_running_loop()
        interval = self.meter.poll_interval_s
        deadline = loop.time()
        while True:
            wait = deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                sample = await self.poll_once()
            except MeterReadError as exc:
                self._failed(exc, loop.time())
                delay = backoff_delay(interval, self.stats.consecutive_failures, self.backoff_max_s)
                deadline = loop.time() + delay  # the grid restarts from the retry
                continue
            self._succeeded(sample, loop.time())
            self.sink(sample)
            deadline, skipped = next_deadline(deadline, interval, loop.time())
            self.stats.slots_skipped += skipped

    def _failed(self, exc: MeterReadError, now: float) -> None:
        stats = self.stats
        stats.polls_failed += 1
        stats.consecutive_failures += 1
        stats.last_error = str(exc)
        if stats.consecutive_failures == 1:
            self._failing_since = now
            log.warning(
                "meter %s stopped answering: %s; retrying with backoff up to %s s",
                self.meter_id,
                exc,
                self.backoff_max_s,
            )
        else:
            log.debug("meter %s still failing: %s", self.meter_id, exc)

    def _succeeded(self, sample: MeterSample, now: float) -> None:
        stats = self.stats
        if stats.consecutive_failures:
            down_s = now - (self._failing_since if self._failing_since is not None else now)
            log.info(
                "meter %s answering again after %.1f s down (%d failed polls)",
                self.meter_id,
                down_s,
                stats.consecutive_failures,
            )
        stats.polls_ok += 1
        stats.consecutive_failures = 0
        stats.last_success_ts_ms = sample.ts_ms
        stats.values_dropped = self.sanity.values_dropped
        self._failing_since = None
