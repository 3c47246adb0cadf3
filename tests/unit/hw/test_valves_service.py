"""Valves on mock relays, and the metering service wiring meters, valves, journal and safety."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.config.metering import parse_metering_config
from eschaton.core.metering.safety import (
    AlarmCleared,
    AlarmKind,
    LeakDetected,
    SafetyEvent,
    TamperDetected,
    ValveMismatch,
)
from eschaton.errors import LocalError
from eschaton.metering.journal import read_committed
from eschaton.metering.service import MeteringService
from hw.mock import FakeClock, assert_valve_states, drive_pulses, mock_hardware, set_input
from meter_drivers.base import PowerLossBehaviour
from meter_drivers.valves import MotorisedValve, SolenoidValve


def test_solenoid_relay_follows_commands_and_fails_closed() -> None:
    with mock_hardware() as hw:
        v = SolenoidValve("main", 22, hw=hw)  # active-low relay board
        assert v.power_loss is PowerLossBehaviour.FAILS_CLOSED
        assert not v.energised and v.commanded_open is False
        v.open()
        assert v.energised and hw.mock_pin(22).state is False  # active-low: low = energised
        v.close()
        v.open()
        v.shutdown()
        assert_valve_states(hw, v, ["close", "open", "close", "open", "close"])
        with pytest.raises(AssertionError):
            assert_valve_states(hw, v, ["close", "open", "close", "open"])  # full list compared


def test_motorised_valve_drives_for_travel_time_and_holds_position() -> None:
    clock = FakeClock()
    with mock_hardware() as hw:
        v = MotorisedValve("ball", 23, 24, hw=hw, travel_s=10.0, clock=clock,
                           sleep=clock.advance)
        assert v.power_loss is PowerLossBehaviour.HOLDS_POSITION
        assert v.commanded_open is None  # unknown until commanded: it holds where it was
        v.open()
        clock.advance(5.0)
        v.poll(clock())
        assert v.moving
        v.close()  # reversing mid-stroke: OPEN released before CLOSE energises
        clock.advance(10.0)
        v.poll(clock())
        assert not v.moving
        assert_valve_states(hw, v, ["stop", "stop", "open", "stop", "close", "stop"])
        v.open()
        clock.advance(10.0)
        v.shutdown()  # orderly stop drives it closed for the full travel
        assert_valve_states(hw, v, ["stop", "stop", "open", "stop", "close", "stop",
                                    "open", "stop", "close", "stop"])
        # Never both relays energised at once.
        energised: set[int] = set()
        for gpio, level in hw.pin_factory.output_log:
            (energised.add if level is False else energised.discard)(gpio)
            assert energised != {23, 24}


def test_motorised_valve_feedback() -> None:
    with mock_hardware() as hw:
        v = MotorisedValve("ball", 23, 24, hw=hw, feedback_pin=25)
        assert v.sensed_open() is False  # limit switch open: pulled up, not active
        set_input(hw, 25, False)
        assert v.sensed_open() is True


CONFIG = """
[hardware]
backend = "mock"
board = "pi5"

[metering]
commit_interval_s = 1.0

[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
pulses_per_litre = 450

[[meter]]
name = "grid"
type = "s0_energy"
pin = 27
impulses_per_kwh = 1000

[[valve]]
name = "main"
type = "solenoid_nc"
pin = 22
meter = "water"
settle_s = 2
leak_pulses = 20

[[valve]]
name = "ball"
type = "motorised"
open_pin = 23
close_pin = 24
travel_s = 3
feedback_pin = 25
settle_s = 5

[[tamper]]
name = "lid"
pin = 5
"""


def _service(tmp_path: Path, clock: FakeClock, hw: object) -> MeteringService:
    import tomllib

    cfg = parse_metering_config(tomllib.loads(CONFIG), source="node.toml", text=CONFIG)
    return MeteringService(cfg, hw=hw, datadir=tmp_path, clock=clock,  # type: ignore[arg-type]
                           sleep=clock.advance)


def test_service_detects_a_leak_and_reports_it_to_listeners(tmp_path: Path) -> None:
    clock = FakeClock()
    events: list[SafetyEvent] = []
    with mock_hardware("pi5") as hw:
        svc = _service(tmp_path, clock, hw)
        svc.add_listener(events.append)
        svc.open_valve("main")
        drive_pulses(hw, 17, 900, hz=100, clock=clock)
        svc.poll()
        svc.close_valve("main")
        svc.poll()
        clock.advance(2.0)
        svc.poll()  # settled: closed, leak baseline taken
        drive_pulses(hw, 17, 15, hz=1, clock=clock)  # a drip within tolerance
        svc.poll()
        assert not [e for e in events if isinstance(e, LeakDetected)]
        drive_pulses(hw, 17, 30, hz=10, clock=clock)
        svc.poll()
        leaks = [e for e in events if isinstance(e, LeakDetected)]
        assert len(leaks) == 1 and leaks[0].valve == "main" and leaks[0].pulses == 45
        svc.open_valve("main")
        assert events[-1] == AlarmCleared(AlarmKind.LEAK, "main", clock())
        svc.close()


def test_service_reports_valve_mismatch_and_tamper(tmp_path: Path) -> None:
    clock = FakeClock()
    events: list[SafetyEvent] = []
    with mock_hardware("pi5") as hw:
        svc = _service(tmp_path, clock, hw)
        svc.add_listener(events.append)
        set_input(hw, 5, False)  # lid closed: switch holds the line low
        svc.poll()
        svc.open_valve("ball")
        clock.advance(5.0)
        svc.poll()  # travel ended, settled, but the limit switch never closed: stuck valve
        assert [e for e in events if isinstance(e, ValveMismatch)] == [
            ValveMismatch("ball", True, False, clock())]
        set_input(hw, 5, True)  # lid opened
        svc.poll()
        assert isinstance(events[-1], TamperDetected)
        svc.close()


def test_a_broken_listener_does_not_stop_metering(tmp_path: Path) -> None:
    clock = FakeClock()
    seen: list[SafetyEvent] = []

    def broken(ev: SafetyEvent) -> None:
        raise RuntimeError("consumer bug")

    with mock_hardware("pi5") as hw:
        svc = _service(tmp_path, clock, hw)
        svc.add_listener(broken)
        svc.add_listener(seen.append)
        set_input(hw, 5, True)
        svc.poll()
        assert [type(e) for e in seen] == [TamperDetected]
        svc.close()


def test_service_commits_totals_and_closes_valves_on_shutdown(tmp_path: Path) -> None:
    clock = FakeClock()
    with mock_hardware("pi5") as hw:
        svc = _service(tmp_path, clock, hw)
        svc.open_valve("main")
        svc.open_valve("ball")
        clock.advance(3.0)
        svc.poll()
        drive_pulses(hw, 17, 4500, hz=200, clock=clock)
        drive_pulses(hw, 27, 250, hz=5, clock=clock)
        assert svc.read_pulse("water").quantity == pytest.approx(10.0)
        svc.close()
        assert_valve_states(hw, svc.valves["main"], ["close", "open", "close"])
        # Created released, opened, released after travel, driven closed on shutdown, released.
        assert_valve_states(hw, svc.valves["ball"], ["stop", "stop", "open", "stop", "close", "stop"])
    committed = read_committed(tmp_path / "metering")
    assert committed["water"].total == 4500 and committed["grid"].total == 250
    from eschaton.metering.state import ValveStateStore

    states = ValveStateStore(tmp_path / "metering").all()
    assert states["main"]["commanded_open"] is False and states["ball"]["commanded_open"] is False

    # The next start resumes from the committed totals.
    with mock_hardware("pi5") as hw:
        svc = _service(tmp_path, clock, hw)
        drive_pulses(hw, 17, 450)
        assert svc.read_pulse("water").pulses == 4950
        svc.close()


def test_service_threads_run_and_stop(tmp_path: Path) -> None:
    import time

    with mock_hardware("pi5") as hw:
        import tomllib

        text = CONFIG.replace("travel_s = 3", "travel_s = 0.05")  # real clock here
        cfg = parse_metering_config(tomllib.loads(text), source="node.toml")
        svc = MeteringService(cfg, hw=hw, datadir=tmp_path)
        svc.start(poll_interval_s=0.01)
        drive_pulses(hw, 17, 100)
        deadline = time.monotonic() + 10
        while svc.journal is not None and svc.journal.total("water") != 100:
            assert time.monotonic() < deadline, "the polling thread never committed"
            time.sleep(0.01)
        svc.close()
        assert not svc._threads


@pytest.mark.parametrize(("contact", "power_loss", "released_means"), [
    ("no", PowerLossBehaviour.FAILS_OFF, "off"), ("nc", PowerLossBehaviour.FAILS_ON, "on")])
def test_supply_relay_declares_what_a_crash_does(contact: str, power_loss: PowerLossBehaviour,
                                                 released_means: str) -> None:
    from meter_drivers.relay import RelaySwitch

    with mock_hardware() as hw:
        r = RelaySwitch("socket", 26, hw=hw, contact=contact)
        assert r.power_loss is power_loss
        assert not r.is_on  # starts disconnected either way
        r.on()
        assert r.is_on
        r.shutdown()
        assert_valve_states(hw, r, ["off", "on", "off"])
        # What the load does when the relay drops out (crash, power cut) is the contact's nature.
        assert r.relay_action(26, True) == released_means  # active-low board: high = released


def test_service_switches_relays_and_cuts_them_on_shutdown(tmp_path: Path) -> None:
    import tomllib

    text = CONFIG + '\n[[relay]]\nname = "socket"\npin = 26\nmeter = "grid"\n'
    cfg = parse_metering_config(tomllib.loads(text), source="node.toml")
    assert cfg.relays[0].contact == "no" and cfg.relays[0].meter == "grid"
    with mock_hardware("pi5") as hw:
        clock = FakeClock()
        svc = MeteringService(cfg, hw=hw, datadir=tmp_path, clock=clock, sleep=clock.advance)
        svc.switch("socket", True)
        assert svc.relays["socket"].is_on
        with pytest.raises(LocalError, match="no relay named 'lamp'"):
            svc.switch("lamp", True)
        svc.close()
        assert_valve_states(hw, svc.relays["socket"], ["off", "on", "off"])


def test_service_derives_rates_from_timestamped_readings(tmp_path: Path) -> None:
    clock = FakeClock()
    with mock_hardware("pi5") as hw:
        svc = _service(tmp_path, clock, hw)
        for _ in range(30):  # 15 L/min (112.5 Hz) on the water meter, 3 kW on the S0 meter
            drive_pulses(hw, 17, 112, hz=112.5, clock=clock)
            drive_pulses(hw, 27, 1, hz=1e6, clock=clock)
            clock.advance(1.0 - 112 / 112.5 - 1e-6)
            svc.poll()
        assert svc.rate("water", window_s=20.0) * 60 == pytest.approx(14.93, rel=0.01)
        assert svc.rate("grid", window_s=20.0) * 3.6e6 == pytest.approx(3600.0, rel=0.01)
        clock.advance(30.0)
        svc.poll()
        assert svc.rate("water", window_s=10.0) == 0.0  # nothing flowed in the last 10 s
        svc.close()
