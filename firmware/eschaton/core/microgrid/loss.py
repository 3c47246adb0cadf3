"""Loss and bypass detection: a bulk meter against the sum of the meters downstream of it.

Rules / theory of operation:
- Every meter is cumulative. For a window ``[end - window_ms, end]`` the detector takes each
  meter's count at both ends, interpolating linearly (integer floor) between the readings that
  bracket each end, so meters read at different instants are compared over the same span.
  ``end`` is the oldest of the meters' latest readings, so every meter has data up to it.
- ``loss = bulk delta - sum of downstream deltas``. Negative values (downstream meters reading
  high) are not a loss and never alarm; they are reported in events' figures only.
- Alarm when the loss exceeds BOTH thresholds: ``loss > alarm_abs_units`` and
  ``loss > alarm_rel_ppm * bulk_delta / 10^6``. The absolute floor ignores meter resolution and
  reading skew at low flow; the relative floor ignores accuracy-class noise at high flow. A leak
  with no consumption is 100% relative, so only the absolute floor matters then.
- Hysteresis: once alarmed, the alarm clears only when the loss falls to the (lower) clear
  thresholds (``loss <= clear_abs_units`` or ``loss <= clear_rel_ppm * bulk_delta / 10^6``), so
  a loss hovering at the limit does not flap. One event per change: ``LossAlarm`` then
  ``LossCleared``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

from eschaton.core.microgrid.errors import BadTerms, MeterRegression, UnknownContract
from eschaton.core.microgrid.ledger import Entry, EntryKind

PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class LossConfig:
    """Which meters to compare and when to raise an alarm."""

    bulk_meter: str
    """The meter feeding the branch (all units in the same base unit as downstream meters)."""
    downstream: frozenset[str]
    """The meters fed through the bulk meter."""
    window_ms: int
    """Span each comparison covers; long enough for several readings of every meter."""
    alarm_abs_units: int
    """Loss (base units per window) must exceed this to alarm..."""
    alarm_rel_ppm: int
    """...and exceed this fraction of the bulk meter's flow, in parts per million."""
    clear_abs_units: int
    """An alarm clears when the loss is at most this (or at most ``clear_rel_ppm``)."""
    clear_rel_ppm: int

    def __post_init__(self) -> None:
        if self.bulk_meter in self.downstream or not self.downstream:
            raise BadTerms("the bulk meter needs downstream meters other than itself")
        if self.window_ms <= 0:
            raise BadTerms("window_ms must be positive")
        if not (0 <= self.clear_abs_units <= self.alarm_abs_units
                and 0 <= self.clear_rel_ppm <= self.alarm_rel_ppm):
            raise BadTerms("clear thresholds must be non-negative and at most the alarm ones")


@dataclass(frozen=True, slots=True)
class LossAlarm:
    bulk_meter: str
    loss_units: int
    bulk_units: int
    downstream_units: int
    window_start_ms: int
    window_end_ms: int

    def entry(self) -> Entry:
        return Entry(EntryKind.LOSS_ALARM, self.window_end_ms, _body(self))


@dataclass(frozen=True, slots=True)
class LossCleared:
    bulk_meter: str
    loss_units: int
    bulk_units: int
    downstream_units: int
    window_start_ms: int
    window_end_ms: int

    def entry(self) -> Entry:
        return Entry(EntryKind.LOSS_CLEARED, self.window_end_ms, _body(self))


LossEvent: TypeAlias = LossAlarm | LossCleared


def _body(e: LossAlarm | LossCleared) -> dict[str, int | str]:
    return {"bulk_meter": e.bulk_meter, "loss_units": e.loss_units, "bulk_units": e.bulk_units,
            "downstream_units": e.downstream_units, "window_start_ms": e.window_start_ms,
            "window_end_ms": e.window_end_ms}


class LossDetector:
    """Feed it readings of the bulk and downstream meters; it returns loss events."""

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.alarmed = False
        self.last_loss: int | None = None
        self._readings: dict[str, deque[tuple[int, int]]] = {
            m: deque() for m in (config.bulk_meter, *sorted(config.downstream))}
        self._last_end = -1

    def on_reading(self, meter_id: str, cum_units: int, reading_ms: int) -> list[LossEvent]:
        q = self._readings.get(meter_id)
        if q is None:
            raise UnknownContract(f"meter {meter_id} is not part of this loss check")
        if q and (reading_ms <= q[-1][0] or cum_units < q[-1][1]):
            if reading_ms == q[-1][0] and cum_units == q[-1][1]:
                return []  # the same reading twice
            raise MeterRegression(f"meter {meter_id} went backwards")
        q.append((reading_ms, cum_units))
        return self._evaluate()

    def _evaluate(self) -> list[LossEvent]:
        if any(not q for q in self._readings.values()):
            return []
        end = min(q[-1][0] for q in self._readings.values())
        start = end - self.config.window_ms
        if end <= self._last_end or any(q[0][0] > start for q in self._readings.values()):
            return []
        self._last_end = end
        for q in self._readings.values():  # keep one reading at or before start, drop older
            while len(q) > 1 and q[1][0] <= start:
                q.popleft()
        deltas = {m: _at(q, end) - _at(q, start) for m, q in self._readings.items()}
        bulk = deltas.pop(self.config.bulk_meter)
        down = sum(deltas.values())
        loss = bulk - down
        self.last_loss = loss
        c = self.config
        figures = (c.bulk_meter, loss, bulk, down, start, end)
        if not self.alarmed:
            if loss > c.alarm_abs_units and loss * PPM > c.alarm_rel_ppm * bulk:
                self.alarmed = True
                return [LossAlarm(*figures)]
        elif loss <= c.clear_abs_units or loss * PPM <= c.clear_rel_ppm * bulk:
            self.alarmed = False
            return [LossCleared(*figures)]
        return []


def _at(q: deque[tuple[int, int]], t: int) -> int:
    """The cumulative count at time ``t``, interpolated between the readings around it."""
    prev = q[0]
    for cur in q:
        if cur[0] == t:
            return cur[1]
        if cur[0] > t:
            return prev[1] + (cur[1] - prev[1]) * (t - prev[0]) // (cur[0] - prev[0])
        prev = cur
    return prev[1]
