"""Prometheus metrics of the edge agent, read from the components' stats at scrape time.

Nothing is counted twice: pollers, queue and publisher keep their own plain
counters (cheap on the hot path) and this collector only reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from edge.agent import EdgeAgent

PREFIX = "electrocloud_edge"


class EdgeCollector(Collector):
    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        gateway = agent.settings.gateway_id
        polls = CounterMetricFamily(
            f"{PREFIX}_polls", "Meter polls by result", labels=["gateway_id", "meter_id", "result"]
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_values_dropped",
            "Implausible values removed before publishing",
            labels=["gateway_id", "meter_id"],
        )
        failing = GaugeMetricFamily(
            f"{PREFIX}_meter_consecutive_failures",
            "Consecutive failed polls (0 = healthy)",
            labels=["gateway_id", "meter_id"],
        )
        last_ok = GaugeMetricFamily(
            f"{PREFIX}_meter_last_success_timestamp_seconds",
            "Meter time of the last good read",
            labels=["gateway_id", "meter_id"],
        )
        committed = CounterMetricFamily(
            f"{PREFIX}_readings_committed",
            "Readings made durable in the store-and-forward queue",
            labels=["gateway_id", "meter_id"],
        )
        for poller in agent.pollers:
            meter = poller.meter_id
            stats = poller.stats
            polls.add_metric([gateway, meter, "ok"], stats.polls_ok)
            polls.add_metric([gateway, meter, "failed"], stats.polls_failed)
            dropped.add_metric([gateway, meter], stats.values_dropped)
            failing.add_metric([gateway, meter], stats.consecutive_failures)
            if stats.last_success_ts_ms is not None:
                last_ok.add_metric([gateway, meter], stats.last_success_ts_ms / 1000)
            committed.add_metric([gateway, meter], agent.committed_by_meter.get(meter, 0))
        yield from (polls, dropped, failing, last_ok, committed)

        queue = agent.queue.stats
        labels = ["gateway_id"]
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Readings waiting", labels=labels)
        depth.add_metric([gateway], agent.queue.depth())
        yield depth
        oldest = agent.queue_oldest_ts_ms
        if oldest is not None:
            age = GaugeMetricFamily(
                f"{PREFIX}_queue_oldest_timestamp_seconds",
                "Meter time of the oldest waiting reading",
                labels=labels,
            )
            age.add_metric([gateway], oldest / 1000)
            yield age
        queue_drops = CounterMetricFamily(
            f"{PREFIX}_queue_dropped_readings",
            "Readings lost to the queue cap, by policy",
            labels=["gateway_id", "policy"],
        )
        queue_drops.add_metric([gateway, "drop_oldest"], queue.dropped_oldest)
        queue_drops.add_metric([gateway, "drop_newest"], queue.dropped_newest)
        yield queue_drops

        publisher = agent.publisher.stats
        published = CounterMetricFamily(
            f"{PREFIX}_published_readings", "Readings acknowledged by the broker", labels=labels
        )
        published.add_metric([gateway], publisher.published_readings)
        messages = CounterMetricFamily(
            f"{PREFIX}_published_messages", "Messages acknowledged by the broker", labels=labels
        )
        messages.add_metric([gateway], publisher.published_messages)
        connected = GaugeMetricFamily(
            f"{PREFIX}_broker_connected", "1 while connected to the broker", labels=labels
        )
        connected.add_metric([gateway], 1.0 if publisher.connected else 0.0)
        yield from (published, messages, connected)


def serve_metrics(agent: EdgeAgent, port: int, host: str = "0.0.0.0") -> None:
    """Expose ``/metrics`` on ``host:port`` from a daemon thread."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(EdgeCollector(agent))
    start_http_server(port, addr=host, registry=registry)
