"""Pulse flow meter (YF-S201 class): pulses per litre, per-unit calibration.

The YF-S201 is specified as F(Hz) = 7.5 x Q(L/min), i.e. 450 pulses per litre, with +-10 %
between units: calibrate each one (``start_calibration`` / ``finish_calibration`` with the litres
collected in a measuring vessel). Its open-collector output needs a pull-up to 3.3 V (the
internal one is used by default); never feed its 5 V output straight into a GPIO.
"""
from __future__ import annotations

from meter_drivers.base import PulseReading
from meter_drivers.pulse import PulseMeter, rate_units_per_s

YF_S201_PULSES_PER_LITRE = 450.0


class PulseFlowMeter(PulseMeter):
    """Water flow meter counting pulses; quantities in litres."""

    unit = "L"

    @property
    def pulses_per_litre(self) -> float:
        return self.counts_per_unit

    @property
    def litres(self) -> float:
        return self.quantity


def litres_per_minute(prev: PulseReading, cur: PulseReading) -> float:
    """Flow rate between two readings."""
    return rate_units_per_s(prev, cur) * 60.0
