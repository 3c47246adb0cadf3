"""Pulse flow and S0 meters on gpiozero's MockFactory: exact counts, units, rates, calibration."""
from __future__ import annotations

import pytest

from eschaton.core.metering.totals import CalibrationError
from hw.mock import FakeClock, drive_pulses, mock_hardware
from meter_drivers.pulse_flow import PulseFlowMeter, litres_per_minute
from meter_drivers.s0_energy import S0EnergyMeter, watts


@pytest.mark.parametrize("hz", [225.0, 1000.0])
@pytest.mark.parametrize("board", ["pi4b", "pi5"])
def test_pulse_trains_are_counted_exactly(hz: float, board: str) -> None:
    clock = FakeClock()
    with mock_hardware(board) as hw:
        meter = PulseFlowMeter("water", 17, hw=hw, counts_per_unit=450.0, clock=clock)
        first = meter.read()
        n = int(hz * 20)  # twenty seconds of pulses
        drive_pulses(hw, 17, n, hz=hz, clock=clock)
        last = meter.read()
        assert last.pulses == n
        assert last.at - first.at == pytest.approx(20.0)
        # F(Hz) = 7.5 x Q(L/min) at the nominal 450 pulses per litre.
        assert litres_per_minute(first, last) == pytest.approx(hz / 7.5)
        assert last.quantity == pytest.approx(n / 450.0)


def test_only_falling_edges_count_and_rising_edges_do_not() -> None:
    with mock_hardware() as hw:
        meter = PulseFlowMeter("water", 17, hw=hw, counts_per_unit=450.0)
        pin = hw.mock_pin(17)
        pin.drive_low()
        assert meter.total == 1
        pin.drive_high()
        pin.drive_high()  # no change: no edge
        assert meter.total == 1


def test_flow_meter_calibration_gives_right_litres() -> None:
    """A unit that really gives 462 pulses per litre reads 10 L exactly after calibration."""
    clock = FakeClock()
    true_ppl = 462
    with mock_hardware() as hw:
        meter = PulseFlowMeter("water", 17, hw=hw, counts_per_unit=450.0, clock=clock)
        run = meter.start_calibration()
        drive_pulses(hw, 17, true_ppl * 5, hz=200, clock=clock)  # 5 L into the measuring jug
        assert meter.finish_calibration(run, 5.0) == pytest.approx(462.0)
        before = meter.read()
        drive_pulses(hw, 17, true_ppl * 10, hz=200, clock=clock)
        after = meter.read()
        assert after.quantity - before.quantity == pytest.approx(10.0)
        assert after.counts_per_unit == pytest.approx(462.0)


def test_calibration_refuses_nonsense() -> None:
    with mock_hardware() as hw:
        meter = PulseFlowMeter("water", 17, hw=hw, counts_per_unit=450.0)
        run = meter.start_calibration()
        with pytest.raises(CalibrationError, match="no pulses"):
            meter.finish_calibration(run, 5.0)
        drive_pulses(hw, 17, 450)
        with pytest.raises(CalibrationError, match="away from the nominal"):
            meter.finish_calibration(run, 10.0)  # 45 pulses/L: wrong vessel or wrong meter
        with pytest.raises(CalibrationError, match="positive"):
            meter.finish_calibration(run, 0.0)
        assert meter.counts_per_unit == 450.0


def test_s0_energy_meter_kwh_and_power() -> None:
    clock = FakeClock()
    with mock_hardware() as hw:
        meter = S0EnergyMeter("grid", 27, hw=hw, counts_per_unit=1000.0, clock=clock)
        a = meter.read()
        # 2 kW for one hour at 1000 imp/kWh = 2000 impulses, one every 1.8 s.
        drive_pulses(hw, 27, 2000, hz=2000 / 3600, clock=clock)
        b = meter.read()
        assert b.pulses == 2000
        assert b.quantity == pytest.approx(2.0)
        assert b.unit == "kWh"
        assert watts(a, b) == pytest.approx(2000.0)


def test_s0_calibration_against_a_reference_meter() -> None:
    """An S0 output labelled 1000 imp/kWh that really emits 2000 is corrected by calibration."""
    with mock_hardware() as hw:
        meter = S0EnergyMeter("grid", 27, hw=hw, counts_per_unit=1600.0)
        run = meter.start_calibration()
        drive_pulses(hw, 27, 1000)  # the reference meter saw 0.5 kWh
        assert meter.finish_calibration(run, 0.5) == pytest.approx(2000.0)
        drive_pulses(hw, 27, 3000)
        assert meter.kwh == pytest.approx(2.0)


def test_count_resumes_from_the_committed_base() -> None:
    with mock_hardware() as hw:
        meter = PulseFlowMeter("water", 17, hw=hw, counts_per_unit=450.0, base=9000)
        drive_pulses(hw, 17, 45)
        assert meter.total == 9045
        assert meter.litres == pytest.approx(20.1)


def test_rising_edge_meter_on_a_pulled_down_line() -> None:
    """An active-high pulse output (push-pull sensor) counts rising edges with a pull-down."""
    with mock_hardware() as hw:
        meter = PulseFlowMeter("water", 22, hw=hw, counts_per_unit=450.0, pull_up=False,
                               edge="rising")
        assert hw.mock_pin(22).state is False
        drive_pulses(hw, 22, 333)
        assert meter.total == 333
