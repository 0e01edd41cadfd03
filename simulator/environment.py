"""What all meters of a site share: the sun, the weather and the grid frequency."""

from __future__ import annotations

import math
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

from simulator.randomness import FloatArray, Stream, rng_for, smooth_noise
from simulator.timegrid import STEP_MS, STEPS_PER_DAY

#: kW per kWp with the sun at the zenith and a clear sky, after module, inverter and
#: orientation losses. With the weather below this gives ~920 kWh/kWp/yr at 51 °N.
PV_CLEAR_SKY_PEAK = 1.05
_EPOCH = date(1970, 1, 1)


def day_of_year(day: int) -> int:
    """1-based day of the year of UTC day ``day`` (days since epoch)."""
    return (_EPOCH + timedelta(days=day)).timetuple().tm_yday


@lru_cache(maxsize=128)
def clear_sky_pv_fraction(day: int, latitude_deg: float, longitude_deg: float) -> FloatArray:
    """Clear-sky PV output in kW per kWp at the middle of each step of a UTC day.

    A bell from solar geometry: ``sin(elevation) ** 1.25`` (the exponent stands
    in for air mass losses at low sun), zero while the sun is below the horizon.
    """
    doy = day_of_year(day)
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
    b = 2 * math.pi * (doy - 81) / 364
    equation_of_time_min = 9.87 * math.sin(2 * b) - 7.53 * math.cos(b) - 1.5 * math.sin(b)
    utc_hours = (np.arange(STEPS_PER_DAY) + 0.5) * STEP_MS / 3_600_000
    solar_hours = utc_hours + longitude_deg / 15 + equation_of_time_min / 60
    hour_angle = np.radians(15 * (solar_hours - 12))
    lat = math.radians(latitude_deg)
    sin_elevation = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(
        declination
    ) * np.cos(hour_angle)
    fraction = PV_CLEAR_SKY_PEAK * np.clip(sin_elevation, 0.0, None) ** 1.25
    fraction.flags.writeable = False
    return fraction


@lru_cache(maxsize=128)
def sky_clearness(seed: int, day: int) -> FloatArray:
    """Share of clear-sky PV output that gets through the clouds, per step (0.03..1).

    Each day draws a cloudiness (sunnier on average in summer) and passing clouds
    make it flicker, more on mixed days than on clear or overcast ones.
    """
    rng = rng_for(seed, Stream.WEATHER_DAY, day)
    season = math.cos(2 * math.pi * (day_of_year(day) - 172) / 365.25)  # +1 midsummer
    mean = 0.5 + 0.17 * season
    concentration = 3.0
    daily = rng.beta(mean * concentration, (1 - mean) * concentration)
    flicker = smooth_noise(rng, 1, STEPS_PER_DAY, corr_steps=12)[0]
    clearness: FloatArray = np.clip(
        daily + 0.7 * math.sqrt(daily * (1 - daily)) * flicker, 0.03, 1.0
    )
    clearness.flags.writeable = False
    return clearness


@lru_cache(maxsize=128)
def grid_frequency_hz(seed: int, day: int) -> FloatArray:
    """Grid frequency per step of a UTC day: 50 Hz, wandering within +-0.05 Hz."""
    rng = rng_for(seed, Stream.GRID_DAY, day)
    wander = smooth_noise(rng, 1, STEPS_PER_DAY, corr_steps=4)[0]
    frequency: FloatArray = 50.0 + np.clip(0.02 * wander, -0.05, 0.05)
    frequency.flags.writeable = False
    return frequency
