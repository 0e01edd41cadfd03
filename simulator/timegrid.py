"""The simulation's fixed time grid.

Net power is piecewise constant on steps of ``STEP_MS`` (60 s) aligned to the
UTC epoch; days are UTC days (``DAY_MS``). One minute resolves appliance
switching well enough and keeps a day at 1,440 values per quantity.
"""

from __future__ import annotations

STEP_MS = 60_000
DAY_MS = 86_400_000
STEPS_PER_DAY = DAY_MS // STEP_MS
SLOT_MS = 15 * 60_000  # BDEW profiles are 15-minute means
SLOTS_PER_DAY = DAY_MS // SLOT_MS
STEPS_PER_SLOT = SLOT_MS // STEP_MS
#: W * ms per kWh: energy_kwh = power_w * duration_ms / MS_W_PER_KWH
MS_W_PER_KWH = 3_600_000_000.0
