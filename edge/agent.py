"""The edge agent: pollers -> group commit into the on-disk queue -> MQTT publisher.

Data path of one reading: a :class:`~edge.poller.MeterPoller` reads and decodes a
meter and hands a :class:`~edge.sample.MeterSample` to the agent's buffer; every
``queue.commit_interval_s`` the buffer is appended to the SQLite queue in one
transaction (that is when the reading gets its sequence number and becomes
durable); the publisher is then woken and sends it at QoS 1, deleting it only
after the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack

from edge.config import EdgeSettings
from edge.metrics import serve_metrics
from edge.modbus import ModbusLink
from edge.poller import MeterPoller
from edge.profile import DeviceProfile, load_profile
from edge.publisher import Publisher
from edge.queue import ReadingQueue
from edge.sample import MeterSample
from electrocloud import __version__

log = logging.getLogger(__name__)


def load_profiles(settings: EdgeSettings) -> dict[str, DeviceProfile]:
    """Load and validate every profile the meters use, once, at start-up."""
    return {meter.profile: load_profile(meter.profile) for meter in settings.meters}


class EdgeAgent:
    """Runs every poller, the group committer and the publisher until stopped."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.profiles = load_profiles(settings)
        self.queue = ReadingQueue(settings.queue.path, settings.queue)
        self.publisher = Publisher(
            gateway_id=settings.gateway_id,
            mqtt=settings.mqtt,
            queue=self.queue,
            agent_version=__version__,
        )
        self.pollers: list[MeterPoller] = []
        self._buffer: list[MeterSample] = []
        self.samples_committed = 0
        self.committed_by_meter: dict[str, int] = {}
        # Read by the metrics thread; SQLite objects must stay on the event loop's thread.
        self.queue_oldest_ts_ms: int | None = None
        self.started_at = time.time()

    def _take(self, sample: MeterSample) -> None:
        self._buffer.append(sample)

    def commit(self) -> int:
        """Append buffered samples to the queue in one transaction; wake the publisher."""
        if not self._buffer:
            return 0
        # On QueueError (disk full...) append stores nothing and uses no seq numbers:
        # the samples stay buffered and the next commit tries again.
        self.queue.append(self._buffer)
        samples, self._buffer = self._buffer, []
        self.samples_committed += len(samples)
        for sample in samples:
            self.committed_by_meter[sample.meter_id] = (
                self.committed_by_meter.get(sample.meter_id, 0) + 1
            )
        self.publisher.notify()
        return len(samples)

    async def _commit_loop(self) -> None:
        interval = self.settings.queue.commit_interval_s
        while True:
            # commit_interval_s == 0 still yields to the pollers between commits.
            await asyncio.sleep(interval or 0.01)
            self.commit()
            self.queue_oldest_ts_ms = self.queue.oldest_ts_ms()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled); then shut down cleanly."""
        stop = stop or asyncio.Event()
        async with AsyncExitStack() as stack:
            links: dict[str, ModbusLink] = {}
            for connection in self.settings.connections:
                links[connection.name] = await stack.enter_async_context(ModbusLink(connection))
            self.pollers = [
                MeterPoller(
                    meter,
                    self.profiles[meter.profile],
                    links[meter.connection],
                    self._take,
                    backoff_max_s=self.settings.backoff_max_s,
                )
                for meter in self.settings.meters
            ]
            if self.settings.health.metrics_port is not None:
                serve_metrics(self, self.settings.health.metrics_port, self.settings.health.host)
            tasks = [asyncio.create_task(p.run(), name=f"poll-{p.meter_id}") for p in self.pollers]
            tasks.append(asyncio.create_task(self._commit_loop(), name="commit"))
            publisher_task = asyncio.create_task(self.publisher.run(), name="publish")
            log.info(
                "edge agent %s: %d meters on %d connections, queue %s (%d waiting)",
                self.settings.gateway_id,
                len(self.pollers),
                len(links),
                self.settings.queue.path,
                self.queue.depth(),
            )
            try:
                stop_wait = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait(
                    [stop_wait, publisher_task, *tasks], return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is not stop_wait and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # Whatever was read is made durable; it is published on the next start.
                self.commit()
                await self.publisher.close()
                publisher_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher_task
                waiting = self.queue.depth()
                self.queue.close()
                log.info("edge agent stopped; %d readings wait in the queue", waiting)
