"""Hardware abstraction: board profiles, a GPIO factory with pin claims, and first-class mocks.

Public API::

    from hw import open_hardware, Hardware, Backend, select_backend
    from hw.boards import BOARDS, BoardProfile, board_by_name, board_for_revision, parse_pin
    from hw.mock import mock_hardware, FakeClock, drive_pulses, PulseTrain, assert_valve_states
"""
from __future__ import annotations

from hw.boards import BOARDS, BoardProfile, board_by_name, board_for_revision, parse_pin
from hw.errors import (
    BackendUnavailableError,
    HardwareError,
    PinBusyError,
    PinConflictError,
    PinNotOnBoardError,
    UnknownBoardError,
)
from hw.factory import (
    Backend,
    DigitalInput,
    DigitalOutput,
    Hardware,
    PulseInput,
    open_hardware,
    select_backend,
)

__all__ = [
    "BOARDS", "Backend", "BackendUnavailableError", "BoardProfile", "DigitalInput",
    "DigitalOutput", "Hardware", "HardwareError", "PinBusyError", "PinConflictError", "PinNotOnBoardError",
    "PulseInput", "UnknownBoardError", "board_by_name", "board_for_revision", "open_hardware",
    "parse_pin", "select_backend",
]
