"""Meter history for the dashboard's plots: the last hour, day and week, in memory.

Rules / theory of operation:
- Each tier keeps one point per ``step`` seconds over its ``span`` (hour: 2 s, day: 1 min,
  week: 10 min): at most ~1,800 points a tier, a few hundred kB per meter whatever the uptime.
- A point is (wall time, total in the meter's unit, mean rate per second since the tier's
  previous point): the rate of a coarse tier is the average over its step, not a sample of a
  spike.
- Nothing here is durable: the totals that are billed are in the metering journal; a restart
  starts the plots again. Time is an input (``now``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

TIERS: dict[str, tuple[float, float]] = {  # name -> (span_s, step_s)
    "hour": (3600.0, 2.0),
    "day": (86_400.0, 60.0),
    "week": (7 * 86_400.0, 600.0),
}

Point = tuple[float, float, float]  # (unix time s, total, rate per s)


@dataclass
class _Tier:
    span: float
    step: float
    points: deque[Point] = field(default_factory=deque)

    def add(self, now: float, total: float) -> None:
        if self.points:
            t0, total0, _ = self.points[-1]
            if now - t0 < self.step:
                return
            rate = max(0.0, total - total0) / (now - t0)
        else:
            rate = 0.0
        self.points.append((now, total, rate))
        while self.points and now - self.points[0][0] > self.span:
            self.points.popleft()


class MeterHistory:
    def __init__(self) -> None:
        self._meters: dict[str, dict[str, _Tier]] = {}

    def add(self, meter: str, now: float, total: float) -> None:
        tiers = self._meters.get(meter)
        if tiers is None:
            tiers = self._meters[meter] = {n: _Tier(span, step) for n, (span, step) in TIERS.items()}
        for t in tiers.values():
            t.add(now, total)

    def series(self, meter: str, tier: str) -> list[Point]:
        """The points of ``meter`` in ``tier`` (oldest first); [] for an unknown meter."""
        if tier not in TIERS:
            raise KeyError(tier)
        tiers = self._meters.get(meter)
        return list(tiers[tier].points) if tiers is not None else []

    def meters(self) -> list[str]:
        return list(self._meters)
