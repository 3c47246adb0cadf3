"""Pulse counting shared by the flow and S0 drivers.

Rules:
- One edge = one pulse. Open-collector outputs (YF-S201, S0) pull the line low through the meter,
  so the default is the falling edge with the internal pull-up. No debouncing: a YF-S201 at
  30 L/min pulses every 4.4 ms and debouncing would eat pulses.
- The edge callback only increments an integer (it runs in lgpio's callback thread on a Pi, or
  in the driving thread on the mock); everything else (units, rates, journal) happens when a
  reader asks. One writer thread plus readers keeps the count consistent under the GIL.
- ``base`` is the last committed journal total: the cumulative count resumes from it after a
  restart, so a crash loses the uncommitted pulses but never counts one twice.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eschaton.core.metering.totals import calibrate, counts_to_units
from hw.factory import Hardware
from meter_drivers.base import PulseReading


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    """A calibration in progress: the count when it started."""

    meter: str
    start_pulses: int
    started_at: float


class PulseMeter:
    """A GPIO pulse counter with a calibration factor (counts per unit)."""

    unit = "units"

    def __init__(self, name: str, pin: int | str, *, hw: Hardware, counts_per_unit: float,
                 base: int = 0, pull_up: bool = True, edge: str = "falling",
                 clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        if counts_per_unit <= 0:
            raise ValueError("counts_per_unit must be positive")
        self.name = name
        self.counts_per_unit = counts_per_unit
        self.base = base
        self.count = 0  # pulses since this process started counting
        self._clock = clock
        self._wall_ns = wall_ns
        self._input = hw.pulse_input(pin, owner=name, callback=self._edge, pull_up=pull_up, edge=edge)
        self.gpio = self._input.gpio

    def _edge(self, ticks: Any, state: bool) -> None:
        self.count += 1

    @property
    def total(self) -> int:
        """Cumulative pulses."""
        return self.base + self.count

    @property
    def quantity(self) -> float:
        return counts_to_units(self.total, self.counts_per_unit)

    def read(self) -> PulseReading:
        total = self.base + self.count
        return PulseReading(
            meter=self.name, pulses=total, quantity=counts_to_units(total, self.counts_per_unit),
            unit=self.unit, counts_per_unit=self.counts_per_unit, at=self._clock(),
            wall_ns=self._wall_ns())

    # -- calibration --------------------------------------------------------------------------
    def start_calibration(self) -> CalibrationRun:
        """Begin a run: note the count, then pass a known quantity through the meter."""
        return CalibrationRun(self.name, self.total, self._clock())

    def finish_calibration(self, run: CalibrationRun, measured: float, *,
                           tolerance: float = 0.5) -> float:
        """End a run with the measured quantity; sets and returns the new counts per unit."""
        # The configured factor (datasheet or previous calibration) is the plausibility anchor.
        factor = calibrate(self.total - run.start_pulses, measured,
                           nominal=self.counts_per_unit, tolerance=tolerance)
        self.counts_per_unit = factor
        return factor

    def close(self) -> None:
        self._input.close()


def rate_units_per_s(prev: PulseReading, cur: PulseReading) -> float:
    """Units per second between two readings of one meter (0.0 if no time passed)."""
    dt = cur.at - prev.at
    if dt <= 0:
        return 0.0
    return (cur.pulses - prev.pulses) / cur.counts_per_unit / dt
