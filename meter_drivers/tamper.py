"""Tamper input: a switch in the meter enclosure (lid, cable loop) read by polling.

Wired to GND with the internal pull-up by default: a closed lid holds the line low, so
``active_high=True`` means "tampered when the line goes high" (lid opened, loop cut).
"""
from __future__ import annotations

from hw.factory import Hardware


class TamperSwitch:
    """A polled tamper input."""

    def __init__(self, name: str, pin: int | str, *, hw: Hardware, active_high: bool = True,
                 pull: str | None = "up") -> None:
        self.name = name
        self._input = hw.digital_input(pin, owner=name, pull=pull, active_high=active_high)
        self.gpio = self._input.gpio

    @property
    def active(self) -> bool:
        return self._input.is_active

    def close(self) -> None:
        self._input.close()
