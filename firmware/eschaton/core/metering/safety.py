"""Safety rules for meters and valves, as a state machine fed with inputs and ``now`` (sans-IO).

Rules / theory of operation:
- Inputs are observations: a valve was commanded open/closed, a valve's position sensor reads
  open/closed, a meter's cumulative total, a meter read succeeded or failed, a tamper input.
  ``feed(input, now)`` applies one and evaluates every rule; ``tick(now)`` only evaluates (call it
  by ``next_deadline()``). Both return the typed events that fired.
- Each valve moves through ``ValvePhase``: a command starts a settle period (travel time, water
  hammer, a motorised valve's 5-20 s stroke); only when it ends does the valve count as OPEN or
  CLOSED. Transitions are checked against ``VALVE_TRANSITIONS``.
- Leak/bypass: when a valve becomes CLOSED, the linked meter's total is the baseline. More than
  ``leak_pulses`` beyond it while still closed raises ``LeakDetected``.
- Position mismatch: once settled, a position sensor that disagrees with the command raises
  ``ValveMismatch``. Without a sensor (``open is None``) this rule is silent.
- Silent meter: with ``silent_after_s``, no sign of life (a total that grew, or a successful
  read) for that long raises ``MeterSilent``.
- Faulty meter: ``fault_after`` consecutive failed reads, a counter that went backwards, or a
  pulse rate above ``max_rate_hz`` (electrical noise, a shorted line) raises ``MeterFaulty``.
- Tamper: an active tamper input raises ``TamperDetected``.
- Every alarm is latched: it fires once, then ``AlarmCleared`` fires when its condition ends
  (leak: the valve is commanded open again). ``ALARM_TRANSITIONS`` is the allow-list.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from eschaton.errors import LocalError


class SafetyConfigError(LocalError):
    """An input names a valve, meter or tamper input the rules do not know."""


class IllegalTransition(LocalError):
    """A state change outside the declared transition table (a bug in the caller or here)."""


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ValveCommanded:
    """The node commanded a valve."""

    valve: str
    open: bool


@dataclass(frozen=True, slots=True)
class ValveSensed:
    """A valve's position feedback. ``open`` is None when unknown or travelling."""

    valve: str
    open: bool | None


@dataclass(frozen=True, slots=True)
class MeterTotal:
    """A meter's cumulative total."""

    meter: str
    total: int


@dataclass(frozen=True, slots=True)
class MeterReadOk:
    """A polled meter answered."""

    meter: str


@dataclass(frozen=True, slots=True)
class MeterReadFailed:
    """A polled meter did not answer properly."""

    meter: str
    reason: str


@dataclass(frozen=True, slots=True)
class TamperInput:
    """A tamper switch's level."""

    name: str
    active: bool


SafetyInput = ValveCommanded | ValveSensed | MeterTotal | MeterReadOk | MeterReadFailed | TamperInput


# -- outputs ---------------------------------------------------------------------------------
class AlarmKind(enum.Enum):
    LEAK = "leak"
    VALVE_MISMATCH = "valve_mismatch"
    METER_SILENT = "meter_silent"
    METER_FAULT = "meter_fault"
    TAMPER = "tamper"


@dataclass(frozen=True, slots=True)
class LeakDetected:
    """Flow through a valve commanded closed (a leak or a bypass)."""

    valve: str
    meter: str
    pulses: int
    at: float
    kind: AlarmKind = AlarmKind.LEAK


@dataclass(frozen=True, slots=True)
class ValveMismatch:
    """A valve's sensed position disagrees with its command after the settle time."""

    valve: str
    commanded_open: bool
    sensed_open: bool
    at: float
    kind: AlarmKind = AlarmKind.VALVE_MISMATCH


@dataclass(frozen=True, slots=True)
class MeterSilent:
    """A meter showed no sign of life for longer than allowed."""

    meter: str
    silent_for_s: float
    at: float
    kind: AlarmKind = AlarmKind.METER_SILENT


@dataclass(frozen=True, slots=True)
class MeterFaulty:
    """A meter failed repeatedly or reported something impossible."""

    meter: str
    reason: str
    at: float
    kind: AlarmKind = AlarmKind.METER_FAULT


@dataclass(frozen=True, slots=True)
class TamperDetected:
    """A tamper input became active."""

    name: str
    at: float
    kind: AlarmKind = AlarmKind.TAMPER


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """The condition behind an alarm ended."""

    kind: AlarmKind
    subject: str
    at: float


SafetyEvent = LeakDetected | ValveMismatch | MeterSilent | MeterFaulty | TamperDetected | AlarmCleared


# -- rules -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ValveRule:
    """Safety parameters of one valve."""

    valve: str
    """Valve name."""
    meter: str | None = None
    """The flow meter that sees water passing this valve (leak detection), if any."""
    settle_s: float = 5.0
    """Seconds after a command before position and leak rules apply."""
    leak_pulses: int = 10
    """Pulses tolerated while closed (meter jitter, a last drip) before a leak is raised."""


@dataclass(frozen=True, slots=True)
class MeterRule:
    """Safety parameters of one meter."""

    meter: str
    """Meter name."""
    silent_after_s: float | None = None
    """Raise MeterSilent after this long without life; None disables."""
    max_rate_hz: float | None = None
    """Highest plausible pulse rate; faster means a fault. None disables."""
    fault_after: int = 3
    """Consecutive failed reads that make the meter faulty."""


@dataclass(frozen=True, slots=True)
class SafetyRules:
    """All rules of one node."""

    valves: tuple[ValveRule, ...] = ()
    meters: tuple[MeterRule, ...] = ()
    tampers: tuple[str, ...] = ()


# -- state -----------------------------------------------------------------------------------
class ValvePhase(enum.Enum):
    UNKNOWN = "unknown"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


VALVE_TRANSITIONS: dict[ValvePhase, frozenset[ValvePhase]] = {
    ValvePhase.UNKNOWN: frozenset({ValvePhase.OPENING, ValvePhase.CLOSING}),
    ValvePhase.OPENING: frozenset({ValvePhase.OPEN, ValvePhase.CLOSING}),
    ValvePhase.OPEN: frozenset({ValvePhase.CLOSING}),
    ValvePhase.CLOSING: frozenset({ValvePhase.CLOSED, ValvePhase.OPENING}),
    ValvePhase.CLOSED: frozenset({ValvePhase.OPENING}),
}


class AlarmState(enum.Enum):
    CLEAR = "clear"
    RAISED = "raised"


ALARM_TRANSITIONS: dict[AlarmState, frozenset[AlarmState]] = {
    AlarmState.CLEAR: frozenset({AlarmState.RAISED}),
    AlarmState.RAISED: frozenset({AlarmState.CLEAR}),
}


@dataclass(slots=True)
class _Valve:
    rule: ValveRule
    phase: ValvePhase = ValvePhase.UNKNOWN
    settle_until: float = 0.0
    sensed: bool | None = None
    leak_baseline: int | None = None


@dataclass(slots=True)
class _Meter:
    rule: MeterRule
    total: int | None = None
    total_at: float | None = None
    last_alive: float | None = None
    failures: int = 0


class SafetyMonitor:
    """Evaluates ``SafetyRules`` over a stream of inputs; returns the events that fire."""

    def __init__(self, rules: SafetyRules, now: float) -> None:
        self.rules = rules
        self._valves = {r.valve: _Valve(r) for r in rules.valves}
        self._meters = {r.meter: _Meter(r, last_alive=now) for r in rules.meters}
        self._tampers: dict[str, bool] = {t: False for t in rules.tampers}
        self._alarms: dict[tuple[AlarmKind, str], AlarmState] = {}
        for v in rules.valves:
            if v.meter is not None and v.meter not in self._meters:
                self._meters[v.meter] = _Meter(MeterRule(v.meter), last_alive=now)

    # -- queries -------------------------------------------------------------------------
    def valve_phase(self, valve: str) -> ValvePhase:
        return self._valve(valve).phase

    def active_alarms(self) -> list[tuple[AlarmKind, str]]:
        return sorted(((k, s) for (k, s), st in self._alarms.items() if st is AlarmState.RAISED),
                      key=lambda ks: (ks[0].value, ks[1]))

    def next_deadline(self) -> float | None:
        times: list[float] = []
        for v in self._valves.values():
            if v.phase in (ValvePhase.OPENING, ValvePhase.CLOSING):
                times.append(v.settle_until)
        for m in self._meters.values():
            if m.rule.silent_after_s is not None and m.last_alive is not None:
                if not self._is_raised(AlarmKind.METER_SILENT, m.rule.meter):
                    times.append(m.last_alive + m.rule.silent_after_s)
        return min(times) if times else None

    # -- inputs --------------------------------------------------------------------------
    def feed(self, item: SafetyInput, now: float) -> list[SafetyEvent]:
        out: list[SafetyEvent] = []
        if isinstance(item, ValveCommanded):
            self._on_command(item, now, out)
        elif isinstance(item, ValveSensed):
            self._valve(item.valve).sensed = item.open
        elif isinstance(item, MeterTotal):
            self._on_total(item, now, out)
        elif isinstance(item, MeterReadOk):
            m = self._meter(item.meter)
            m.failures = 0
            m.last_alive = now
            self._clear(AlarmKind.METER_FAULT, item.meter, now, out)
        elif isinstance(item, MeterReadFailed):
            m = self._meter(item.meter)
            m.failures += 1
            if m.failures >= m.rule.fault_after:
                self._raise(MeterFaulty(item.meter, f"{m.failures} consecutive failed reads: "
                                        f"{item.reason}", now), item.meter, out)
        elif isinstance(item, TamperInput):
            if item.name not in self._tampers:
                raise SafetyConfigError(f"unknown tamper input {item.name!r}")
            self._tampers[item.name] = item.active
            if item.active:
                self._raise(TamperDetected(item.name, now), item.name, out)
            else:
                self._clear(AlarmKind.TAMPER, item.name, now, out)
        out.extend(self.tick(now))
        return out

    def tick(self, now: float) -> list[SafetyEvent]:
        out: list[SafetyEvent] = []
        for v in self._valves.values():
            self._evaluate_valve(v, now, out)
        for m in self._meters.values():
            silent = m.rule.silent_after_s
            if silent is not None and m.last_alive is not None and now - m.last_alive >= silent:
                self._raise(MeterSilent(m.rule.meter, now - m.last_alive, now), m.rule.meter, out)
        return out

    # -- internals -----------------------------------------------------------------------
    def _valve(self, name: str) -> _Valve:
        try:
            return self._valves[name]
        except KeyError:
            raise SafetyConfigError(f"unknown valve {name!r}") from None

    def _meter(self, name: str) -> _Meter:
        try:
            return self._meters[name]
        except KeyError:
            raise SafetyConfigError(f"unknown meter {name!r}") from None

    def _move(self, v: _Valve, to: ValvePhase) -> None:
        if to not in VALVE_TRANSITIONS[v.phase]:
            raise IllegalTransition(f"valve {v.rule.valve}: {v.phase.value} -> {to.value}")
        v.phase = to

    def _on_command(self, item: ValveCommanded, now: float, out: list[SafetyEvent]) -> None:
        v = self._valve(item.valve)
        target = ValvePhase.OPENING if item.open else ValvePhase.CLOSING
        if v.phase in (target, ValvePhase.OPEN if item.open else ValvePhase.CLOSED):
            return  # repeating a command does not restart the settle period
        self._move(v, target)
        v.settle_until = now + v.rule.settle_s
        v.leak_baseline = None
        if item.open:
            self._clear(AlarmKind.LEAK, v.rule.valve, now, out)
        # A new command gets a new settle period before the position is judged.
        self._clear(AlarmKind.VALVE_MISMATCH, v.rule.valve, now, out)

    def _evaluate_valve(self, v: _Valve, now: float, out: list[SafetyEvent]) -> None:
        if v.phase in (ValvePhase.OPENING, ValvePhase.CLOSING) and now >= v.settle_until:
            settled = ValvePhase.OPEN if v.phase is ValvePhase.OPENING else ValvePhase.CLOSED
            self._move(v, settled)
            if settled is ValvePhase.CLOSED and v.rule.meter is not None:
                v.leak_baseline = self._meters[v.rule.meter].total
        if v.phase not in (ValvePhase.OPEN, ValvePhase.CLOSED):
            return
        commanded = v.phase is ValvePhase.OPEN
        if v.sensed is not None:
            if v.sensed != commanded:
                self._raise(ValveMismatch(v.rule.valve, commanded, v.sensed, now), v.rule.valve, out)
            else:
                self._clear(AlarmKind.VALVE_MISMATCH, v.rule.valve, now, out)
        if v.phase is ValvePhase.CLOSED and v.rule.meter is not None:
            total = self._meters[v.rule.meter].total
            if v.leak_baseline is None:
                v.leak_baseline = total
            elif total is not None and total - v.leak_baseline > v.rule.leak_pulses:
                self._raise(LeakDetected(v.rule.valve, v.rule.meter, total - v.leak_baseline, now),
                            v.rule.valve, out)

    def _on_total(self, item: MeterTotal, now: float, out: list[SafetyEvent]) -> None:
        m = self._meter(item.meter)
        prev, prev_at = m.total, m.total_at
        m.total, m.total_at = item.total, now
        if prev is None:
            return
        if item.total < prev:
            self._raise(MeterFaulty(item.meter, f"counter went backwards from {prev} to "
                                    f"{item.total}", now), item.meter, out)
            return
        if item.total > prev:
            m.last_alive = now
            self._clear(AlarmKind.METER_SILENT, item.meter, now, out)
        limit = m.rule.max_rate_hz
        if limit is not None and prev_at is not None and now > prev_at:
            rate = (item.total - prev) / (now - prev_at)
            if rate > limit:
                self._raise(MeterFaulty(item.meter, f"pulse rate {rate:.0f} Hz is above the "
                                        f"meter's maximum {limit:g} Hz", now), item.meter, out)
            elif m.failures == 0:
                self._clear(AlarmKind.METER_FAULT, item.meter, now, out)

    def _is_raised(self, kind: AlarmKind, subject: str) -> bool:
        return self._alarms.get((kind, subject), AlarmState.CLEAR) is AlarmState.RAISED

    def _set(self, kind: AlarmKind, subject: str, to: AlarmState) -> bool:
        cur = self._alarms.get((kind, subject), AlarmState.CLEAR)
        if cur is to:
            return False
        if to not in ALARM_TRANSITIONS[cur]:
            raise IllegalTransition(f"alarm {kind.value}/{subject}: {cur.value} -> {to.value}")
        self._alarms[(kind, subject)] = to
        return True

    def _raise(self, event: LeakDetected | ValveMismatch | MeterSilent | MeterFaulty | TamperDetected,
               subject: str, out: list[SafetyEvent]) -> None:
        if self._set(event.kind, subject, AlarmState.RAISED):
            out.append(event)

    def _clear(self, kind: AlarmKind, subject: str, now: float, out: list[SafetyEvent]) -> None:
        if self._set(kind, subject, AlarmState.CLEAR):
            out.append(AlarmCleared(kind, subject, now))
