"""Board profiles, backend selection, pin claims and the mock helpers."""
from __future__ import annotations

import gc

import pytest

from hw import (
    BOARDS,
    Backend,
    BackendUnavailableError,
    HardwareError,
    PinConflictError,
    PinNotOnBoardError,
    UnknownBoardError,
    board_by_name,
    board_for_revision,
    open_hardware,
    parse_pin,
    select_backend,
)
from hw.mock import assert_pin_states, drive_pulses, mock_hardware, output_history, set_input


@pytest.mark.parametrize(("revision", "name", "model"), [
    ("a02082", "pi3b", "3B"), ("c03111", "pi4b", "4B"), ("d04170", "pi5", "5B"),
    ("902120", "zero2w", "Zero2W"),
])
def test_mock_revision_env_picks_the_board(monkeypatch: pytest.MonkeyPatch, revision: str,
                                           name: str, model: str) -> None:
    monkeypatch.setenv("GPIOZERO_MOCK_REVISION", revision)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    with open_hardware() as hw:
        assert hw.backend is Backend.MOCK
        assert hw.board.name == name
        # gpiozero's own board detection agrees with our profile.
        assert hw.pin_factory.board_info.model == model
        assert board_for_revision(revision) is hw.board


def test_board_profile_names_pins_by_every_spelling() -> None:
    b = board_by_name("pi5")
    assert [parse_pin(s, b) for s in (17, "17", "GPIO17", "bcm17", "BOARD11", "J8:11")] == [17] * 6
    assert board_by_name("Zero2") is BOARDS["zero2w"]
    with pytest.raises(UnknownBoardError, match="supported: pi3b, pi4b, pi5, zero2w"):
        board_by_name("pi1")
    with pytest.raises(UnknownBoardError):
        board_for_revision("a01041")  # a Pi 2: not a supported profile


@pytest.mark.parametrize(("spec", "message"), [
    (28, "GPIO28 is not on the Raspberry Pi 4 Model B header"),
    ("BOARD1", "physical pin 1 on the Raspberry Pi 4 Model B is not a GPIO"),
    (0, "reserved: ID_SD"),
    ("PIN7", "is not a pin name"),
    (True, "not a pin number"),
])
def test_pins_missing_from_the_board_are_errors(spec: object, message: str) -> None:
    with pytest.raises(PinNotOnBoardError, match=message):
        parse_pin(spec, BOARDS["pi4b"])  # type: ignore[arg-type]


def test_pin_conflicts_name_both_owners() -> None:
    with mock_hardware() as hw:
        hw.claim(17, "water")
        with pytest.raises(PinConflictError, match="GPIO17 is used by both 'water' and 'grid'"):
            hw.digital_output("BOARD11", owner="grid")
        hw.claim_uart("/dev/serial0", "sdm")  # the header UART occupies GPIO14/15
        with pytest.raises(PinConflictError, match="GPIO14 is used by both 'sdm' and 'flow'"):
            hw.pulse_input(14, owner="flow", callback=lambda t, s: None)
        hw.claim_uart("/dev/ttyUSB0", "usb")  # a USB adapter claims no header pins
        assert hw.claims() == {17: "water", 14: "sdm", 15: "sdm"}


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_backend("mock", env={}) is Backend.MOCK
    assert select_backend("lgpio", env={}) is Backend.LGPIO
    # gpiozero's environment switch wins over the config (tests and emulation force the mock).
    assert select_backend("lgpio", env={"GPIOZERO_PIN_FACTORY": "mock"}) is Backend.MOCK
    with pytest.raises(BackendUnavailableError, match="not supported"):
        select_backend(None, env={"GPIOZERO_PIN_FACTORY": "rpigpio"})
    with pytest.raises(BackendUnavailableError, match="unknown GPIO backend"):
        select_backend("gpiod", env={})
    monkeypatch.setattr("hw.factory.is_raspberry_pi", lambda: False)
    with pytest.raises(BackendUnavailableError, match="no Raspberry Pi found"):
        select_backend("auto", env={})


def test_edge_callback_survives_garbage_collection() -> None:
    """gpiozero keeps only a weak reference to when_changed; a bare lambda must still count."""
    counted: list[int] = []
    with mock_hardware() as hw:
        hw.pulse_input(17, owner="m", callback=lambda ticks, state: counted.append(1))
        gc.collect()
        drive_pulses(hw, 17, 50)
        assert len(counted) == 50


def test_assert_pin_states_compares_the_full_list() -> None:
    with mock_hardware() as hw:
        relay = hw.digital_output(27, owner="relay", active_high=False)
        relay.on()
        relay.off()
        assert output_history(hw, 27) == [True, False, True]
        assert_pin_states(hw, 27, [True, False, True])
        # gpiozero's MockPin.assert_states zips, so this shorter list would pass there.
        hw.mock_pin(27).assert_states([False, True, False])
        with pytest.raises(AssertionError):
            assert_pin_states(hw, 27, [True, False])


def test_digital_inputs_follow_pull_and_polarity() -> None:
    with mock_hardware() as hw:
        switch = hw.digital_input(5, owner="lid")  # pull-up, active when pulled low
        assert not switch.is_active
        set_input(hw, 5, False)
        assert switch.is_active
        high = hw.digital_input(6, owner="loop", active_high=True)
        assert high.is_active  # pulled up and active-high: a cut loop reads active
        with pytest.raises(HardwareError, match="pull must be"):
            hw.digital_input(7, owner="x", pull="sideways")


def test_a_pin_the_backend_refuses_is_a_typed_error_and_frees_the_claim() -> None:
    """On a Pi, lgpio refuses a line another process holds; gpiozero's mock refuses a pin that is
    already in use as a PWM pin. Both surface as PinBusyError and release our claim."""
    from gpiozero.pins.mock import MockPWMPin

    from hw import PinBusyError

    with mock_hardware() as hw:
        hw.pin_factory.pin(12, pin_class=MockPWMPin)  # held elsewhere in another form
        with pytest.raises(PinBusyError, match="GPIO12 for 'relay'"):
            hw.digital_output(12, owner="relay")
        assert 12 not in hw.claims()
