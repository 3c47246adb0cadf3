"""Totals, units, rates and calibration maths for meters (sans-IO).

Rules:
- Counters are integers (pulses, or a register's smallest unit): exact, never rounded. Units
  (litres, kWh) are derived by dividing by a calibration factor only when reported.
- Readings carry their own timestamps; a rate is always derived from two readings, never
  stored. A counter that went backwards is a fault, not a negative rate.
- Calibration: run a known quantity through the meter and count the pulses; the factor is
  pulses / quantity. The result must be positive and within a plausible band of the nominal
  factor, or the procedure was wrong (wrong meter, valve leak, no flow).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eschaton.errors import LocalError, RemoteError


class CalibrationError(LocalError):
    """The calibration run does not give a usable factor."""


class CounterWentBackwards(RemoteError):
    """A cumulative counter decreased between two readings."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A cumulative counter value at a moment."""

    meter: str
    """Meter name."""
    total: int
    """Cumulative counts since the journal began."""
    at: float
    """Monotonic time of the reading, seconds (for rates)."""
    wall_ns: int = 0
    """Wall-clock time of the reading, ns since the epoch (for records and humans)."""


def counts_to_units(counts: int, counts_per_unit: float) -> float:
    """Counts to units (pulses to litres or kWh)."""
    if counts_per_unit <= 0:
        raise ValueError("counts_per_unit must be positive")
    return counts / counts_per_unit


def rate_per_s(prev: Reading, cur: Reading) -> float:
    """Counts per second between two readings of one meter."""
    if prev.meter != cur.meter:
        raise ValueError("readings of different meters")
    dt = cur.at - prev.at
    if dt <= 0:
        raise ValueError("readings must be in time order")
    dn = cur.total - prev.total
    if dn < 0:
        raise CounterWentBackwards(f"{cur.meter}: counter went from {prev.total} to {cur.total}")
    return dn / dt


def windowed_rate(readings: Sequence[Reading], now: float, window_s: float) -> float:
    """Counts per second over the last ``window_s`` seconds of a time-ordered series.

    Uses the oldest reading inside the window and the newest one; 0.0 if fewer than two.
    """
    inside = [r for r in readings if now - window_s <= r.at <= now]
    if len(inside) < 2 or inside[-1].at <= inside[0].at:
        return 0.0
    return rate_per_s(inside[0], inside[-1])


def calibrate(pulses: int, quantity: float, *, nominal: float | None = None,
              tolerance: float = 0.5) -> float:
    """Counts per unit from a calibration run of ``quantity`` units that gave ``pulses``.

    With ``nominal``, a result more than ``tolerance`` (fraction) away from it is refused.
    """
    if quantity <= 0:
        raise CalibrationError(f"the measured quantity must be positive, not {quantity}")
    if pulses <= 0:
        raise CalibrationError("no pulses were counted during the calibration run")
    factor = pulses / quantity
    if nominal is not None and abs(factor - nominal) > tolerance * nominal:
        raise CalibrationError(
            f"calibration gives {factor:.2f} pulses per unit, more than {tolerance:.0%} "
            f"away from the nominal {nominal:g}; check the meter and the measured quantity")
    return factor
