"""S0 pulse energy meter: impulses per kWh (typically 1000 or 2000, printed on the meter).

The S0 output is an opto-isolated open collector: S0+ to a GPIO with the pull-up, S0- to GND.
Each impulse is a fixed energy, so power is derived from the impulse rate.
"""
from __future__ import annotations

from meter_drivers.base import PulseReading
from meter_drivers.pulse import PulseMeter, rate_units_per_s


class S0EnergyMeter(PulseMeter):
    """Energy meter counting S0 impulses; quantities in kWh."""

    unit = "kWh"

    @property
    def impulses_per_kwh(self) -> float:
        return self.counts_per_unit

    @property
    def kwh(self) -> float:
        return self.quantity


def watts(prev: PulseReading, cur: PulseReading) -> float:
    """Mean power between two readings (kWh/s x 3.6e6 = W)."""
    return rate_units_per_s(prev, cur) * 3_600_000.0
