"""The sans-IO safety monitor, fed with inputs and ``now``: no hardware, no sleeping."""
from __future__ import annotations

import pytest

from eschaton.core.metering.safety import (
    VALVE_TRANSITIONS,
    AlarmCleared,
    AlarmKind,
    LeakDetected,
    MeterFaulty,
    MeterReadFailed,
    MeterReadOk,
    MeterRule,
    MeterSilent,
    MeterTotal,
    SafetyConfigError,
    SafetyMonitor,
    SafetyRules,
    TamperDetected,
    TamperInput,
    ValveCommanded,
    ValveMismatch,
    ValvePhase,
    ValveRule,
    ValveSensed,
)

RULES = SafetyRules(
    valves=(ValveRule("main", meter="water", settle_s=2.0, leak_pulses=5),),
    meters=(MeterRule("water", max_rate_hz=500.0), MeterRule("grid", silent_after_s=60.0),
            MeterRule("sdm", fault_after=3)),
    tampers=("lid",),
)


def test_flow_through_a_closed_valve_is_a_leak() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    m.feed(MeterTotal("water", 100), 0.0)
    m.feed(ValveCommanded("main", False), 0.0)
    # Water still flowing while the valve travels is not a leak.
    assert m.feed(MeterTotal("water", 140), 1.0) == []
    assert m.tick(2.0) == []
    assert m.valve_phase("main") is ValvePhase.CLOSED
    assert m.feed(MeterTotal("water", 145), 10.0) == []  # within the tolerance
    events = m.feed(MeterTotal("water", 146), 11.0)
    assert events == [LeakDetected("main", "water", 6, 11.0)]
    assert m.feed(MeterTotal("water", 500), 12.0) == []  # latched: raised once
    events = m.feed(ValveCommanded("main", True), 20.0)
    assert events == [AlarmCleared(AlarmKind.LEAK, "main", 20.0)]


def test_valve_position_disagreeing_after_settle_is_a_mismatch() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    m.feed(ValveCommanded("main", True), 0.0)
    assert m.feed(ValveSensed("main", False), 1.0) == []  # still travelling
    assert m.next_deadline() == 2.0
    assert m.tick(2.0) == [ValveMismatch("main", True, False, 2.0)]
    assert m.feed(ValveSensed("main", True), 3.0) == [
        AlarmCleared(AlarmKind.VALVE_MISMATCH, "main", 3.0)]
    # A valve that moves by itself (manual override) is caught too.
    assert m.feed(ValveSensed("main", False), 50.0) == [ValveMismatch("main", True, False, 50.0)]


def test_repeated_command_does_not_restart_settling() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    m.feed(ValveCommanded("main", True), 0.0)
    m.feed(ValveCommanded("main", True), 1.5)
    m.tick(2.0)
    assert m.valve_phase("main") is ValvePhase.OPEN


def test_silent_meter() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    m.feed(MeterTotal("grid", 10), 0.0)
    assert m.next_deadline() == 60.0
    assert m.tick(59.0) == []
    assert m.tick(60.0) == [MeterSilent("grid", 60.0, 60.0)]
    assert m.tick(120.0) == []
    assert m.feed(MeterTotal("grid", 11), 130.0) == [
        AlarmCleared(AlarmKind.METER_SILENT, "grid", 130.0)]


def test_faulty_meter_from_failures_backwards_counts_and_noise() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    assert m.feed(MeterReadFailed("sdm", "timeout"), 1.0) == []
    assert m.feed(MeterReadFailed("sdm", "timeout"), 2.0) == []
    [ev] = m.feed(MeterReadFailed("sdm", "CRC"), 3.0)
    assert isinstance(ev, MeterFaulty) and "3 consecutive failed reads: CRC" in ev.reason
    assert m.feed(MeterReadOk("sdm"), 4.0) == [AlarmCleared(AlarmKind.METER_FAULT, "sdm", 4.0)]

    m.feed(MeterTotal("water", 1000), 10.0)
    [ev] = m.feed(MeterTotal("water", 990), 11.0)
    assert isinstance(ev, MeterFaulty) and "backwards" in ev.reason

    m2 = SafetyMonitor(RULES, now=0.0)
    m2.feed(MeterTotal("water", 0), 0.0)
    [ev] = m2.feed(MeterTotal("water", 5000), 1.0)  # 5 kHz on a flow sensor: noise
    assert isinstance(ev, MeterFaulty) and "5000 Hz" in ev.reason
    assert m2.feed(MeterTotal("water", 5200), 2.0) == [
        AlarmCleared(AlarmKind.METER_FAULT, "water", 2.0)]


def test_tamper() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    assert m.feed(TamperInput("lid", False), 0.0) == []
    assert m.feed(TamperInput("lid", True), 1.0) == [TamperDetected("lid", 1.0)]
    assert m.feed(TamperInput("lid", True), 2.0) == []
    assert m.active_alarms() == [(AlarmKind.TAMPER, "lid")]
    assert m.feed(TamperInput("lid", False), 3.0) == [AlarmCleared(AlarmKind.TAMPER, "lid", 3.0)]


def test_unknown_subjects_are_typed_errors() -> None:
    m = SafetyMonitor(RULES, now=0.0)
    for item in (ValveCommanded("nope", True), MeterTotal("nope", 1), TamperInput("nope", True)):
        with pytest.raises(SafetyConfigError, match="nope"):
            m.feed(item, 0.0)


def test_transition_table_is_closed() -> None:
    assert set(VALVE_TRANSITIONS) == set(ValvePhase)
    for targets in VALVE_TRANSITIONS.values():
        assert targets <= set(ValvePhase)
