"""BDEW standard load profiles (via demandlib), per UTC day, in kW per kWh of annual demand.

BDEW profiles are 15-minute mean powers over a calendar year in local standard
time (no daylight saving), with weekday, Saturday, Sunday/holiday and season
variants. Public holidays come from the ``holidays`` package. The household
profile is the dynamised H0 (``h0_dyn``: the BDEW day-of-year smoothing that
H0 requires), renormalised so each profile sums to exactly one year of demand.
"""

from __future__ import annotations

import threading
import warnings
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from simulator.timegrid import DAY_MS, SLOTS_PER_DAY

FloatArray = npt.NDArray[np.float64]


class LoadProfile(StrEnum):
    """BDEW standard load profile of a customer group."""

    H0 = "H0"  # household
    G0 = "G0"  # commerce / shops, general
    L0 = "L0"  # agriculture / farm, general


_DEMANDLIB_COLUMN = {LoadProfile.H0: "h0_dyn", LoadProfile.G0: "g0", LoadProfile.L0: "l0"}
_EPOCH = datetime(1970, 1, 1)
_year_lock = threading.Lock()
_year_cache: dict[tuple[int, str], dict[LoadProfile, FloatArray]] = {}


def check_country(country: str) -> str:
    """``country`` if the ``holidays`` package knows it, else ValueError naming the problem."""
    import holidays

    if country not in holidays.list_supported_countries():
        raise ValueError(f"unknown country code {country!r} for public holidays (e.g. 'DE', 'AT')")
    return country


def year_profiles(year: int, country: str) -> dict[LoadProfile, FloatArray]:
    """Per 15-minute slot of ``year``: mean power in kW for 1 kWh of annual demand."""
    key = (year, country)
    with _year_lock:  # building a year takes ~0.3 s: build it once
        if key not in _year_cache:
            _year_cache[key] = _build_year(year, country)
        return _year_cache[key]


def _build_year(year: int, country: str) -> dict[LoadProfile, FloatArray]:
    import holidays
    from demandlib import bdew

    public_holidays = dict(holidays.country_holidays(country, years=year))
    # demandlib calls warnings.simplefilter("error") globally; keep that contained.
    with warnings.catch_warnings():
        frame = bdew.ElecSlp(year, holidays=public_holidays).get_profiles(
            *_DEMANDLIB_COLUMN.values()
        )
    profiles = {}
    for profile, column in _DEMANDLIB_COLUMN.items():
        share = frame[column].to_numpy(dtype=np.float64)
        kw = share / share.sum() * 4.0  # share of a year per 15 min -> kW per kWh/yr
        kw.flags.writeable = False
        profiles[profile] = kw
    return profiles


@lru_cache(maxsize=512)
def day_profile_kw(profile: LoadProfile, day: int, country: str, utc_offset_h: int) -> FloatArray:
    """Mean power (kW per kWh/yr) of the 96 quarter hours of UTC day ``day`` (days since epoch).

    The profile's local standard time is UTC + ``utc_offset_h``; a UTC day may
    therefore reach into the next (or previous) local year.
    """
    local_start = _EPOCH + timedelta(milliseconds=day * DAY_MS, hours=utc_offset_h)
    out = np.empty(SLOTS_PER_DAY, dtype=np.float64)
    filled = 0
    cursor = local_start
    while filled < SLOTS_PER_DAY:
        year_kw = year_profiles(cursor.year, country)[profile]
        slot = int((cursor - datetime(cursor.year, 1, 1)).total_seconds()) // 900
        take = min(SLOTS_PER_DAY - filled, len(year_kw) - slot)
        out[filled : filled + take] = year_kw[slot : slot + take]
        filled += take
        cursor = datetime(cursor.year + 1, 1, 1)
    out.flags.writeable = False
    return out
