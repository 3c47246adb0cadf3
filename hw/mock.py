"""First-class mock hardware: gpiozero's MockFactory plus helpers to drive pulses and check relays.

Rules:
- ``mock_hardware(board)`` gives a ``Hardware`` on gpiozero's MockFactory emulating that board.
  Its pins record every change of an *output* pin, in order, in ``hw.pin_factory.output_log``,
  so valve drive sequences can be asserted across several relays.
- ``drive_pulses`` drives full pulses synchronously (callbacks run in the calling thread), and
  advances an injected ``FakeClock`` by the pulse period: counting needs no real-time sleeping.
- ``PulseTrain`` is the real-time generator (a thread paced by the monotonic clock) for crash
  tests and benchmarks; it keeps an exact count of pulses it drove.
- Every assertion compares full lists. (gpiozero's own ``MockPin.assert_states`` zips the two
  lists, so a list of the wrong length passes there.)
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hw.factory import Backend, Hardware, open_hardware


class FakeClock:
    """An injectable monotonic clock: ``clock()`` reads, ``clock.advance(dt)`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError("time does not go backwards")
        self.t += dt


def mock_hardware(board: str = "pi4b") -> Hardware:
    """A ``Hardware`` on the mock backend emulating ``board`` (pi3b, pi4b, pi5, zero2w)."""
    return open_hardware(Backend.MOCK, board=board)


def drive_pulses(hw: Hardware, pin: int | str, count: int, *, hz: float | None = None,
                 clock: FakeClock | None = None, duty: float = 0.5) -> int:
    """Drive ``count`` pulses on an input pin, each leaving its idle level and coming back.

    With ``hz`` and ``clock`` the fake clock advances by one period per pulse, so rate maths see a
    true ``hz`` pulse train without sleeping. Returns ``count``.
    """
    mp = hw.mock_pin(pin)
    # A pulse leaves the idle level and returns: low-going on a pulled-up line (open collector),
    # high-going on a pulled-down one. Either way each pulse has one falling and one rising edge.
    away, back = (mp.drive_low, mp.drive_high) if mp.state else (mp.drive_high, mp.drive_low)
    if hz is not None and clock is not None:
        period = 1.0 / hz
        t_active, t_idle = period * duty, period * (1.0 - duty)
        adv = clock.advance
        for _ in range(count):
            away()
            adv(t_active)
            back()
            adv(t_idle)
    else:
        for _ in range(count):
            away()
            back()
    return count


def set_input(hw: Hardware, pin: int | str, high: bool) -> None:
    """Hold an input pin high or low (a switch, a limit contact)."""
    mp = hw.mock_pin(pin)
    if high:
        mp.drive_high()
    else:
        mp.drive_low()


def output_history(hw: Hardware, pin: int | str) -> list[bool]:
    """Every level an output pin was driven to since it became an output, in order."""
    gpio = hw.mock_pin(pin).info.name
    n = int(gpio[4:])
    return [state for g, state in hw.pin_factory.output_log if g == n]


def assert_pin_states(hw: Hardware, pin: int | str, expected: Sequence[bool]) -> None:
    """Full-list comparison of an output pin's driven levels (unlike MockPin.assert_states)."""
    got = output_history(hw, pin)
    assert got == list(expected), f"GPIO pin {pin}: driven levels {got}, expected {list(expected)}"


def valve_history(hw: Hardware, valve: Any) -> list[str]:
    """The drive actions a valve applied to its relays, in order: "open", "close", "stop".

    Each valve driver declares ``relay_actions(gpio, energised) -> str | None``, mapping one relay
    change to what it does to the valve.
    """
    out: list[str] = []
    for gpio, level in hw.pin_factory.output_log:
        action = valve.relay_action(gpio, level)
        if action is not None:
            out.append(action)
    return out


def assert_valve_states(hw: Hardware, valve: Any, expected: Sequence[str]) -> None:
    """Compare the full list of drive actions a valve applied (see ``valve_history``)."""
    got = valve_history(hw, valve)
    assert got == list(expected), f"valve {valve.name}: actions {got}, expected {list(expected)}"


class PulseTrain:
    """A real-time pulse generator on a mock input pin, run in a thread.

    ``driven`` is the exact number of pulses driven so far. ``before_pulse`` (if given) is called
    with the pulse number *before* each pulse is driven, so a crash test can record a true count
    that is never below what the counter saw.
    """

    def __init__(self, hw: Hardware, pin: int | str, hz: float, *,
                 before_pulse: Callable[[int], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._pin = hw.mock_pin(pin)
        self.hz = hz
        self.driven = 0
        self._before = before_pulse
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def start(self) -> PulseTrain:
        self._thread = threading.Thread(target=self._run, name="pulse-train", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        pin = self._pin
        low, high = (pin.drive_low, pin.drive_high) if pin.state else (pin.drive_high, pin.drive_low)
        now = self._monotonic
        t0 = self.started_at = now()
        before = self._before
        while not self._stop.is_set():
            due = int((now() - t0) * self.hz)
            while self.driven < due:
                n = self.driven + 1
                if before is not None:
                    before(n)
                low()
                high()
                self.driven = n
            # Yield briefly; a 1 kHz train is driven in small catch-up batches.
            self._stop.wait(0.0005)
        self.stopped_at = now()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.driven
