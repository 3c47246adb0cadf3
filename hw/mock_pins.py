"""The mock pin class of the mock backend: gpiozero's ``MockPin`` that records output changes.

Its own module, below both ``hw.factory`` (which builds the mock factory with it) and ``hw.mock``
(the test helpers, which build on the factory), so that neither imports the other in a circle.
"""
from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockPin


class RecordingMockPin(MockPin):  # type: ignore[misc]
    """A MockPin that appends (gpio, state) to its factory's ``output_log`` while an output."""

    _fresh_output = False

    def _set_function(self, value: Any) -> None:
        super()._set_function(value)
        # The first level driven after becoming an output is logged even if it equals the
        # level the pin floated at, so a history always starts with the initial state.
        self._fresh_output = value == "output"

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        if self._function == "output" and (changed or self._fresh_output):
            self._fresh_output = False
            log = getattr(self._factory, "output_log", None)
            if log is not None:
                log.append((int(self.info.name[4:]), bool(value)))
        return changed
