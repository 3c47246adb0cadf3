"""Mock GPIO lines that outlive the process: the kernel's side of a line, modelled in a file.

gpiozero's ``MockFactory`` lives inside one process, so a test cannot see what a killed node left
on its pins, nor let a second process (the service's stop-post safe-state command) change them.
On a Raspberry Pi the line state belongs to the kernel, not to the process: a Raspberry Pi OS
kernel keeps a released output driven at its last level (``persist_gpio_outputs``), so a SIGKILL
leaves a relay exactly as it was.

Rules / theory of operation:
- ``ESCHATON_MOCK_GPIO_LINES=/path/lines.json`` (mock backend only) makes ``open_hardware`` build
  its ``MockFactory`` with ``LineStateMockPin``. Everything above the pin factory (``Hardware``,
  the valve and relay drivers, gpiozero's devices) is the code that runs on a Pi.
- The file holds one entry per line a process has touched: ``{"23": {"function": "output",
  "level": false, "pid": 1234}}``. A pin writes its entry when it becomes an output, when it
  drives a new level, and when gpiozero closes it (it is then an input again, as lgpio's
  ``gpio_claim_input`` leaves it).
- Nothing is written when a process dies: the entry keeps the last driven level, which is what
  the kernel does with a released output. A process that exits without closing its devices
  (``Hardware.leave_driven``) likewise leaves its levels in place.
- Writers take an ``flock`` on ``<file>.lock`` and replace the file atomically, so readers in
  other processes always see a whole document.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw.mock_pins import RecordingMockPin

ENV = "ESCHATON_MOCK_GPIO_LINES"


@dataclass(frozen=True, slots=True)
class LineState:
    """What the kernel holds for one line."""

    function: str
    """"output" or "input"."""
    level: bool | None
    """The driven level of an output; None for an input (floating or pulled by the board)."""
    pid: int
    """The process that last changed it."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_raw(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return doc if isinstance(doc, dict) else {}


def read_lines(path: str | os.PathLike[str]) -> dict[int, LineState]:
    """Every line recorded in ``path``, by BCM number."""
    out: dict[int, LineState] = {}
    for k, v in _read_raw(Path(path)).items():
        out[int(k)] = LineState(str(v["function"]), v["level"], int(v["pid"]))
    return out


def write_line(path: str | os.PathLike[str], gpio: int, function: str, level: bool | None) -> None:
    """Record one line's state (what the kernel would now hold)."""
    p = Path(path)
    with _locked(p):
        doc = _read_raw(p)
        doc[str(gpio)] = {"function": function, "level": level, "pid": os.getpid()}
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True))
        os.replace(tmp, p)


class LineStateMockPin(RecordingMockPin):
    """A ``RecordingMockPin`` that also writes its line state to the factory's ``line_file``."""

    def _gpio(self) -> int:
        return int(self.info.name[4:])

    def _record(self) -> None:
        path = getattr(self._factory, "line_file", None)
        if path is None:
            return
        if self._function == "output":
            write_line(path, self._gpio(), "output", bool(self._state))
        else:
            write_line(path, self._gpio(), "input", None)

    def _set_function(self, value: Any) -> None:
        was = self._function
        super()._set_function(value)
        if value != was:
            self._record()

    def _change_state(self, value: Any) -> bool:
        changed = super()._change_state(value)
        if changed and self._function == "output":
            self._record()
        return changed
