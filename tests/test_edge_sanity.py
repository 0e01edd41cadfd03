"""Sanity checks: decreasing energy registers are flagged, implausible values dropped."""

from __future__ import annotations

import logging
import math

import pytest

from edge.profile import load_profile
from edge.sample import MeterSample
from edge.sanity import SanityChecker, is_plausible
from electrocloud.contract import Flag


def _sample(**values: float) -> MeterSample:
    return MeterSample(
        meter_id="m1", ts_ms=1, values={k.replace("__", "."): v for k, v in values.items()}
    )


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_register_going_backwards_is_kept_and_flagged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checker = SanityChecker("m1", load_profile("sdm630"))
    caplog.set_level(logging.WARNING, logger="edge.sanity")
    first = checker.check(_sample(import_kwh=100.0, export_kwh=50.0))
    assert first.flags == []
    reset = checker.check(_sample(import_kwh=0.5, export_kwh=50.0))
    assert reset.values["import_kwh"] == 0.5  # kept: a reset or rollover is real data
    assert reset.flags == [Flag.IMPORT_KWH_DECREASED]
    after = checker.check(_sample(import_kwh=0.75, export_kwh=49.0))
    assert after.flags == [Flag.EXPORT_KWH_DECREASED]  # the reset is not flagged again
    assert checker.decreases == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.sanity"]
    assert len(messages) == 2
    assert "import_kwh went backwards from 100.0 to 0.5" in messages[0]
    assert "export_kwh went backwards from 50.0 to 49.0" in messages[1]


def test_equal_energy_is_not_a_decrease() -> None:
    checker = SanityChecker("m1", load_profile("sdm630"))
    checker.check(_sample(import_kwh=7.0))
    assert checker.check(_sample(import_kwh=7.0)).flags == []


def test_implausible_value_dropped_counted_listed(caplog: pytest.LogCaptureFixture) -> None:
    checker = SanityChecker("m1", load_profile("sdm630"))
    caplog.set_level(logging.WARNING, logger="edge.sanity")
    sample = checker.check(
        _sample(voltage_v__l1=230.0, voltage_v__l2=401.0, frequency_hz=50.0, power_factor=-1.5)
    )
    assert sample.values == {"voltage_v.l1": 230.0, "frequency_hz": 50.0}
    assert sample.dropped == ["voltage_v.l2", "power_factor"]
    assert sample.flags == [Flag.VALUE_DROPPED]  # once, however many values went
    assert checker.values_dropped == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.sanity"]
    assert any("dropped voltage_v.l2 = 401.0: outside [0.0, 400.0]" in m for m in messages)
    # The reading still satisfies the wire contract (pf out of [-1, 1] would be rejected).
    reading = sample.to_reading(seq=0)
    assert reading.power_factor is None and reading.dropped == ("voltage_v.l2", "power_factor")


def test_nan_and_infinity_are_implausible_even_without_a_range() -> None:
    checker = SanityChecker("m1", load_profile("simulated-sdm630"))
    sample = checker.check(_sample(power_w=math.nan, import_kwh=math.inf, export_kwh=1.0))
    assert sample.values == {"export_kwh": 1.0}
    assert sorted(sample.dropped) == ["import_kwh", "power_w"]
    assert not is_plausible(-math.inf, None) and is_plausible(1e30, None)


def test_dropped_energy_does_not_move_the_baseline() -> None:
    checker = SanityChecker("m1", load_profile("sdm630"))
    checker.check(_sample(import_kwh=100.0))
    assert checker.check(_sample(import_kwh=-5.0)).dropped == ["import_kwh"]
    assert checker.check(_sample(import_kwh=101.0)).flags == []  # compared with 100, not -5


def test_drop_warnings_are_rate_limited_but_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeMonotonic()
    checker = SanityChecker("m1", load_profile("sdm630"), log_interval_s=60, monotonic=clock)
    caplog.set_level(logging.WARNING, logger="edge.sanity")
    for second in range(0, 120, 10):  # 12 bad reads over two minutes
        clock.now = second
        checker.check(_sample(frequency_hz=0.0))
    assert checker.values_dropped == 12
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.sanity"]
    assert len(messages) == 2
    assert "(5 more dropped since the last message)" in messages[1]
