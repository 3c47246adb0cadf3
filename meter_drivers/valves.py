"""Valve actuators: normally-closed solenoid and motorised ball valve.

Rules / theory of operation:
- Each driver declares ``power_loss`` (``PowerLossBehaviour``): what the valve does when its relay
  loses power (a power cut). It is stated per kind and reported by the CLI:
  * normally-closed solenoid: the spring closes it when the coil loses power. It draws coil
    current the whole time it is open.
  * motorised ball valve: it holds its last position without power (even half-way if it was
    travelling); only a drive closes it.
- A killed node does NOT release its relays: a Raspberry Pi OS kernel keeps a released output at
  its last level, so an open solenoid stays open. ``eschaton.metering.safe_state`` (the service's
  ``ExecStopPost``) drives every valve closed after the node is gone.
- Relays are assumed active-low (the common opto relay boards) unless ``active_high``; at
  construction every relay is de-energised.
- A motorised valve is driven by two relays, OPEN and CLOSE, energised for ``travel_s`` and then
  released (the motor's limit switches stop it; releasing stops the hum and the load). The two are
  interlocked: the other direction is always released first.
- ``commanded_open`` is what the node asked for; ``sensed_open()`` is the position feedback
  input if one is wired (None otherwise). The safety monitor compares them after a settle time.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from hw.factory import DigitalInput, DigitalOutput, Hardware
from meter_drivers.base import PowerLossBehaviour


class _Feedback:
    def __init__(self, name: str, pin: int | str | None, hw: Hardware, active_high: bool) -> None:
        self.input: DigitalInput | None = None
        if pin is not None:
            # Limit switch to GND with the pull-up: "active" (open) when pulled low by default.
            self.input = hw.digital_input(pin, owner=f"{name}.feedback", pull="up",
                                          active_high=active_high)

    def read(self) -> bool | None:
        return None if self.input is None else self.input.is_active


class SolenoidValve:
    """Normally-closed solenoid on one relay: energised = open."""

    kind = "solenoid_nc"
    power_loss = PowerLossBehaviour.FAILS_CLOSED

    def __init__(self, name: str, pin: int | str, *, hw: Hardware, active_high: bool = False,
                 feedback_pin: int | str | None = None, feedback_active_high: bool = False) -> None:
        self.name = name
        self._relay: DigitalOutput = hw.digital_output(pin, owner=name, active_high=active_high,
                                                       initial_value=False)
        self._active_high = active_high
        self._feedback = _Feedback(name, feedback_pin, hw, feedback_active_high)
        self.commanded_open: bool = False

    def open(self, now: float | None = None) -> None:
        self._relay.on()
        self.commanded_open = True

    def close(self, now: float | None = None) -> None:
        self._relay.off()
        self.commanded_open = False

    def poll(self, now: float) -> None:
        """Nothing to time on a solenoid."""

    @property
    def energised(self) -> bool:
        return self._relay.is_active

    def sensed_open(self) -> bool | None:
        return self._feedback.read()

    def release(self) -> None:
        """Release the relay pin (a solenoid then closes by itself)."""
        if not self._relay.closed:
            self._relay.close()
        if self._feedback.input is not None:
            self._feedback.input.close()

    def shutdown(self) -> None:
        """Orderly stop: close, then release the pin."""
        if not self._relay.closed:
            self.close()
        self.release()

    def relay_action(self, gpio: int, level: bool) -> str | None:
        """Map a relay pin change to the valve action (for mock assertions)."""
        if gpio != self._relay.gpio:
            return None
        return "open" if level == self._active_high else "close"


class MotorisedValve:
    """Motorised ball valve on two relays (OPEN, CLOSE), each pulsed for ``travel_s``."""

    kind = "motorised"
    power_loss = PowerLossBehaviour.HOLDS_POSITION

    def __init__(self, name: str, open_pin: int | str, close_pin: int | str, *, hw: Hardware,
                 travel_s: float = 15.0, active_high: bool = False,
                 feedback_pin: int | str | None = None, feedback_active_high: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.travel_s = travel_s
        self._active_high = active_high
        self._open_relay = hw.digital_output(open_pin, owner=f"{name}.open", active_high=active_high,
                                             initial_value=False)
        self._close_relay = hw.digital_output(close_pin, owner=f"{name}.close",
                                              active_high=active_high, initial_value=False)
        self._feedback = _Feedback(name, feedback_pin, hw, feedback_active_high)
        self._clock = clock
        self._sleep = sleep
        self._drive_until: float | None = None
        self.commanded_open: bool | None = None  # unknown until first command: it holds position

    @property
    def moving(self) -> bool:
        return self._drive_until is not None

    def _drive(self, on: DigitalOutput, off: DigitalOutput, now: float | None) -> None:
        off.off()  # interlock: never both directions at once
        on.on()
        self._drive_until = (self._clock() if now is None else now) + self.travel_s

    def open(self, now: float | None = None) -> None:
        self._drive(self._open_relay, self._close_relay, now)
        self.commanded_open = True

    def close(self, now: float | None = None) -> None:
        self._drive(self._close_relay, self._open_relay, now)
        self.commanded_open = False

    def poll(self, now: float) -> None:
        """Release the motor once the travel time has passed."""
        if self._drive_until is not None and now >= self._drive_until:
            self._open_relay.off()
            self._close_relay.off()
            self._drive_until = None

    def sensed_open(self) -> bool | None:
        return self._feedback.read()

    def shutdown(self) -> None:
        """Orderly stop: drive closed for the full travel time, release the motor, release pins."""
        if self._open_relay.closed:
            return
        self.close()
        assert self._drive_until is not None
        while (now := self._clock()) < self._drive_until:
            self._sleep(min(0.1, self._drive_until - now))
        self.poll(self._clock())
        self.release()

    def release(self) -> None:
        """Stop the motor and release the pins: the valve stays where it is."""
        if not self._open_relay.closed:
            self._open_relay.off()
            self._close_relay.off()
            self._open_relay.close()
            self._close_relay.close()
        if self._feedback.input is not None:
            self._feedback.input.close()
        self._drive_until = None

    def relay_action(self, gpio: int, level: bool) -> str | None:
        energised = level == self._active_high
        if gpio == self._open_relay.gpio:
            return "open" if energised else "stop"
        if gpio == self._close_relay.gpio:
            return "close" if energised else "stop"
        return None


Valve = SolenoidValve | MotorisedValve
