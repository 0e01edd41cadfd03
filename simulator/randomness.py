"""Deterministic random streams: one independent generator per (seed, purpose, ids...).

Every random quantity comes from a generator seeded by its coordinates (never
by call order), so any day of any meter can be regenerated alone, in any
order, with identical results.
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Stream(IntEnum):
    """Purpose tag that keeps the random streams apart."""

    FLEET = 1  # the fleet mix and each meter's fixed parameters
    METER_DAY = 2  # one meter's load and electrical detail of one UTC day
    METER_CONST = 3  # one meter's constant quirks (voltage offset, pf level)
    WEATHER_DAY = 4  # the site's sky clearness of one UTC day (shared by all meters)
    GRID_DAY = 5  # the grid frequency of one UTC day (shared by all meters)


def rng_for(seed: int, stream: Stream, *ids: int) -> np.random.Generator:
    """The generator for ``(seed, stream, *ids)``; all values must be >= 0."""
    return np.random.default_rng([seed, int(stream), *ids])


@lru_cache(maxsize=32)
def _unit_energy_kernel(corr_steps: float) -> FloatArray:
    kernel = np.exp(-np.arange(int(4 * corr_steps) + 1) / corr_steps)
    kernel /= np.sqrt(np.sum(kernel**2))
    kernel.flags.writeable = False
    return kernel


def smooth_noise(rng: np.random.Generator, rows: int, length: int, corr_steps: float) -> FloatArray:
    """``rows`` x ``length`` noise, each value N(0, 1), correlated over ~``corr_steps`` samples.

    White noise filtered by a unit-energy exponential kernel keeps unit variance,
    so multiplicative factors ``exp(s * x - s**2 / 2)`` have mean exactly one.
    """
    kernel = _unit_energy_kernel(corr_steps)
    white = rng.standard_normal((rows, length + len(kernel) - 1))
    return np.stack([np.convolve(row, kernel, mode="valid") for row in white])
