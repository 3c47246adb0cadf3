"""Shared types of the meter and actuator drivers: readings, power-loss behaviour, typed errors."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from eschaton.errors import EschatonError, LocalError, RemoteError, TransientError


class PowerLossBehaviour(enum.Enum):
    """What an actuator does by itself when its relay loses power (a power cut).

    This is a property of the installed hardware; each driver declares the one its kind has so the
    node can tell the installer what a crash or power cut leaves behind.
    """

    FAILS_CLOSED = "fails_closed"
    """Spring return to closed (normally-closed solenoid)."""
    HOLDS_POSITION = "holds_position"
    """Stays where it is (motorised ball valve): a crash leaves it as it was."""
    FAILS_OFF = "fails_off"
    """The load is disconnected (load on a relay's normally-open contact)."""
    FAILS_ON = "fails_on"
    """The load stays connected (load on a relay's normally-closed contact)."""


# -- errors ----------------------------------------------------------------------------------
class MeterError(EschatonError):
    """Root of errors about one meter; ``meter`` names it."""

    def __init__(self, meter: str, message: str) -> None:
        super().__init__(f"meter {meter!r}: {message}")
        self.meter = meter


class MeterTimeoutError(MeterError, TransientError):
    """The meter did not answer in time (unplugged, wrong address, server gone)."""


class MeterCrcError(MeterError, TransientError):
    """Bytes came back but no valid frame: CRC failure or line noise."""


class MeterPortError(MeterError, TransientError):
    """The serial port cannot be opened or vanished (USB adapter unplugged)."""


class MeterProtocolError(MeterError, RemoteError):
    """The meter answered with an exception or with an impossible value."""


class ActuatorError(MeterError, LocalError):
    """A valve or relay was asked for something it cannot do."""


# -- readings --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PulseReading:
    """A pulse meter's cumulative state at a moment."""

    meter: str
    """Meter name."""
    pulses: int
    """Cumulative pulses (journal base plus pulses counted since start)."""
    quantity: float
    """``pulses`` in units (litres or kWh) with the meter's calibration."""
    unit: str
    """"L" or "kWh"."""
    counts_per_unit: float
    """Calibration used (pulses per litre, impulses per kWh)."""
    at: float
    """Monotonic time, seconds."""
    wall_ns: int
    """Wall-clock time, ns since the epoch."""


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """One poll of a Modbus energy meter (phase 1 / single phase, or system totals)."""

    meter: str
    """Meter name."""
    voltage_v: float
    """Line-to-neutral voltage (L1 on three-phase meters)."""
    current_a: float
    """Current (L1 on SDM120; sum of phase currents on SDM630)."""
    power_w: float
    """Active power (total system power on SDM630); negative when exporting."""
    import_kwh: float
    """Import active energy register."""
    export_kwh: float
    """Export active energy register."""
    at: float
    """Monotonic time, seconds."""
    wall_ns: int
    """Wall-clock time, ns since the epoch."""
    attempts: int = 1
    """Request attempts it took (1 = first try)."""
