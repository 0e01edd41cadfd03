"""MeterPoller against real Modbus servers: fixed rate, dead meters, backoff, logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from edge_modbus_server import BlackHoleServer, RegisterServer, encode, float32_words
from services import free_port

from edge.config import MeterSettings, TcpConnection
from edge.modbus import ModbusLink
from edge.poller import MeterPoller, backoff_delay, next_deadline
from edge.profile import load_profile
from edge.sample import MeterSample
from electrocloud.contract import Flag
from electrocloud.errors import ConfigError

SDM630_WORDS = float32_words(
    {
        0x00: 230.0,
        0x02: 231.0,
        0x04: 232.0,
        0x06: 1.0,
        0x34: 500.0,
        0x3E: 0.9,
        0x46: 50.0,
        0x48: 100.0,
    }
)


def _meter(meter_id: str, connection: str, interval: float, **kwargs: str) -> MeterSettings:
    return MeterSettings(
        meter_id=meter_id,
        connection=connection,
        unit_id=1,
        profile="sdm630",
        poll_interval_s=interval,
        **kwargs,  # type: ignore[arg-type]
    )


def _link(name: str, port: int, timeout_s: float = 1.0) -> ModbusLink:
    return ModbusLink(TcpConnection(name=name, host="127.0.0.1", port=port, timeout_s=timeout_s))


@contextlib.asynccontextmanager
async def _running(*pollers: MeterPoller) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for poller in pollers:
            poller.link.close()


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for ``condition`` (a generous safety timeout, not a timing assertion)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


# --- scheduling -------------------------------------------------------------


def test_next_deadline_is_fixed_rate_and_skips_missed_slots() -> None:
    assert next_deadline(10.0, 1.0, now=10.3) == (11.0, 0)  # no drift: previous + interval
    assert next_deadline(10.0, 1.0, now=11.0) == (12.0, 1)
    assert next_deadline(10.0, 1.0, now=13.5) == (14.0, 3)  # 11, 12, 13 skipped, no burst
    assert next_deadline(0.0, 0.25, now=0.1) == (0.25, 0)


def test_backoff_doubles_from_interval_up_to_max() -> None:
    assert [backoff_delay(2.0, n, 30.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10.0, 1, 5.0) == 10.0  # never faster than the poll interval
    assert backoff_delay(1.0, 10_000, 300.0) == 300.0


# --- polling --------------------------------------------------------------------


def test_polls_at_a_fixed_rate_without_bursting_after_a_slow_answer() -> None:
    samples: list[MeterSample] = []

    async def scenario() -> MeterPoller:
        async with RegisterServer(SDM630_WORDS) as server:
            poller = MeterPoller(
                _meter("m1", "bus", 0.1),
                load_profile("sdm630"),
                _link("bus", server.port),
                samples.append,
                backoff_max_s=1,
            )
            async with _running(poller):
                await _until(lambda: len(samples) >= 3)
                server.delay_next_s = 0.45  # one slow answer: >= 4 slots pass meanwhile
                loop = asyncio.get_running_loop()
                start, before = loop.time(), len(server.requests)
                await asyncio.sleep(1.2)
                window, polls = loop.time() - start, len(server.requests) - before
            # At most one poll per slot (fixed rate, missed slots are not caught up).
            assert polls <= window / 0.1 + 1
            return poller

    poller = asyncio.run(scenario())
    assert poller.stats.slots_skipped >= 3
    assert poller.stats.polls_ok == len(samples) >= 6  # generous: about 12 expected
    assert poller.stats.polls_failed == 0
    assert [s.values["voltage_v.l1"] for s in samples] == [230.0] * len(samples)
    timestamps = [s.ts_ms for s in samples]
    assert timestamps == sorted(timestamps)
    assert poller.stats.last_success_ts_ms == timestamps[-1]


def test_dead_meters_do_not_delay_live_ones() -> None:
    live_samples: dict[str, list[MeterSample]] = {"live1": [], "live2": []}

    async def scenario() -> list[MeterPoller]:
        async with (
            RegisterServer(SDM630_WORDS) as server1,
            RegisterServer(SDM630_WORDS) as server2,
            BlackHoleServer() as hole,
        ):
            profile = load_profile("sdm630")
            pollers = [
                MeterPoller(
                    _meter("live1", "a", 0.05),
                    profile,
                    _link("a", server1.port),
                    live_samples["live1"].append,
                    backoff_max_s=5,
                ),
                # Nothing listening: refused at once.
                MeterPoller(
                    _meter("refused", "b", 0.05),
                    profile,
                    _link("b", free_port()),
                    lambda s: None,
                    backoff_max_s=5,
                ),
                # Accepts, never answers: every attempt hangs for the 3 s timeout.
                MeterPoller(
                    _meter("hole", "c", 0.05),
                    profile,
                    _link("c", hole.port, timeout_s=3.0),
                    lambda s: None,
                    backoff_max_s=5,
                ),
                MeterPoller(
                    _meter("live2", "d", 0.05),
                    profile,
                    _link("d", server2.port),
                    live_samples["live2"].append,
                    backoff_max_s=5,
                ),
            ]
            async with _running(*pollers):
                await asyncio.sleep(1.5)
            assert hole.connections >= 1
            return pollers

    live1, refused, hole, live2 = asyncio.run(scenario())
    # About 30 polls each in 1.5 s; had they waited for the 3 s black hole, at most 1.
    for poller in (live1, live2):
        assert poller.stats.polls_ok >= 10
        assert poller.stats.polls_failed == 0
        assert len(live_samples[poller.meter_id]) == poller.stats.polls_ok
    assert refused.stats.polls_ok == 0 and refused.stats.polls_failed >= 2
    assert "cannot connect" in (refused.stats.last_error or "")
    assert hole.stats.polls_ok == 0 and hole.stats.polls_failed == 0  # first attempt still waiting
    # Backoff: with a fixed 0.05 s retry the refused meter would have made ~30 attempts.
    assert refused.stats.polls_failed <= 8


def test_failing_and_recovery_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.poller")
    samples: list[MeterSample] = []

    async def scenario() -> MeterPoller:
        port = free_port()
        poller = MeterPoller(
            _meter("m7", "bus", 0.05),
            load_profile("sdm630"),
            _link("bus", port),
            samples.append,
            backoff_max_s=0.1,
        )
        async with _running(poller):
            await _until(lambda: poller.stats.consecutive_failures >= 4)
            async with RegisterServer(SDM630_WORDS, port=port):
                await _until(lambda: poller.stats.polls_ok >= 3)
        return poller

    poller = asyncio.run(scenario())
    records = [r for r in caplog.records if r.name == "edge.poller" and r.levelno >= logging.INFO]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and len(infos) == 1, records
    assert (
        "m7" in warnings[0]
        and "stopped answering" in warnings[0]
        and "cannot connect" in warnings[0]
    )
    failed = poller.stats.polls_failed
    assert failed >= 4
    assert "m7 answering again after" in infos[0] and f"({failed} failed polls)" in infos[0]
    assert poller.stats.consecutive_failures == 0 and len(samples) == poller.stats.polls_ok


def test_device_time_source_uses_the_meter_clock() -> None:
    device_ms = 1_700_000_000_000
    words = {
        **SDM630_WORDS,
        **dict(zip(range(0x0F00, 0x0F04), encode(device_ms, "uint64", "ABCD"), strict=True)),
    }

    async def scenario() -> tuple[MeterSample, MeterSample]:
        async with RegisterServer(words) as server, _link("bus", server.port) as link:
            profile = load_profile("simulated-sdm630")
            by_device = MeterPoller(
                _meter("d", "bus", 1, time_source="device"), profile, link, print, backoff_max_s=1
            )
            by_gateway = MeterPoller(
                _meter("g", "bus", 1),
                profile,
                link,
                print,
                backoff_max_s=1,
                clock=lambda: 1234.5678,
            )
            return await by_device.poll_once(), await by_gateway.poll_once()

    device_sample, gateway_sample = asyncio.run(scenario())
    assert device_sample.ts_ms == device_ms
    assert gateway_sample.ts_ms == 1_234_567
    assert (
        "device_time_ms" not in device_sample.values
        and "device_time_ms" not in gateway_sample.values
    )


def test_device_time_source_without_a_clock_register_is_a_config_error() -> None:
    async def scenario() -> None:
        async with _link("bus", free_port()) as link:
            with pytest.raises(
                ConfigError, match="time_source: 'device' needs a device_time_ms register"
            ):
                MeterPoller(
                    _meter("m", "bus", 1, time_source="device"),
                    load_profile("sdm630"),
                    link,
                    print,
                    backoff_max_s=1,
                )

    asyncio.run(scenario())


def test_samples_pass_sanity_checks_and_stats_count_drops() -> None:
    samples: list[MeterSample] = []
    words = float32_words({0x00: 9999.0, 0x46: 50.0, 0x48: 100.0})  # voltage l1 implausible

    async def scenario() -> MeterPoller:
        async with RegisterServer(words) as server:
            poller = MeterPoller(
                _meter("m", "bus", 0.05),
                load_profile("sdm630"),
                _link("bus", server.port),
                samples.append,
                backoff_max_s=1,
            )
            async with _running(poller):
                await _until(lambda: len(samples) >= 2)
                server.set_words("input", 0x48, encode(90.0, "float32", "ABCD"))  # energy backwards
                await _until(lambda: any(Flag.IMPORT_KWH_DECREASED in s.flags for s in samples))
            return poller

    poller = asyncio.run(scenario())
    assert all("voltage_v.l1" not in s.values and s.dropped == ["voltage_v.l1"] for s in samples)
    assert all(Flag.VALUE_DROPPED in s.flags for s in samples)
    assert poller.stats.values_dropped == len(samples)
    decreased = [s for s in samples if Flag.IMPORT_KWH_DECREASED in s.flags]
    assert len(decreased) == 1 and decreased[0].values["import_kwh"] == 90.0
