"""A relay switching a metered supply (a socket, a charger, a pump) on and off.

Which contact the load is wired to decides what a power cut does, so the driver is told
and declares it: on the normally-open contact the load is cut when the relay drops out
(``FAILS_OFF``, the safe default for a paid power service); on the normally-closed contact it
stays connected (``FAILS_ON``) and "on" means the relay is *released*.
"""
from __future__ import annotations

from hw.factory import Hardware
from meter_drivers.base import ActuatorError, PowerLossBehaviour


class RelaySwitch:
    """One relay channel; ``on()`` connects the load, ``off()`` disconnects it."""

    kind = "relay"

    def __init__(self, name: str, pin: int | str, *, hw: Hardware, active_high: bool = False,
                 contact: str = "no") -> None:
        if contact not in ("no", "nc"):
            raise ActuatorError(name, f"contact must be 'no' or 'nc', not {contact!r}")
        self.name = name
        self.contact = contact
        self.power_loss = (PowerLossBehaviour.FAILS_OFF if contact == "no"
                           else PowerLossBehaviour.FAILS_ON)
        self._active_high = active_high
        # Start with the load disconnected: NO contact released, NC contact pulled in.
        self._out = hw.digital_output(pin, owner=name, active_high=active_high,
                                      initial_value=contact == "nc")
        self.gpio = self._out.gpio

    @property
    def is_on(self) -> bool:
        """True when the load is connected."""
        return self._out.is_active == (self.contact == "no")

    def on(self) -> None:
        (self._out.on if self.contact == "no" else self._out.off)()

    def off(self) -> None:
        (self._out.off if self.contact == "no" else self._out.on)()

    def shutdown(self) -> None:
        """Orderly stop: disconnect the load, release the pin."""
        if not self._out.closed:
            self.off()
            self._out.close()

    def relay_action(self, gpio: int, level: bool) -> str | None:
        """Map a pin change to "on"/"off" of the load (for mock assertions)."""
        if gpio != self.gpio:
            return None
        energised = level == self._active_high
        return "on" if energised == (self.contact == "no") else "off"
