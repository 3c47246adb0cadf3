"""Emulated water and power flows inside a demo node process (mock GPIO only).

Rules / theory of operation:
- A flow drives pulses on one of this node's *mock* meter input pins at ``hz`` while the supply
  it passes through is open (``valve`` commanded open, or ``relay`` on): water stops when the
  seller closes the valve, exactly as a real pipe would. ``sum_of`` makes a bulk meter that
  counts the pulses of other flows, plus ``extra_hz`` (a leak or bypass upstream of the
  downstream meters) while the control file says ``extra``.
- ``<flows file>.ctl`` (JSON, re-read when it changes) lets the demo driver stop every flow
  (``stopped``: evening, the pump is off) or open the bypass (``extra``).
- A demo node process (``eschaton.demo.node_process``) starts them from a JSON file (a list of flows),
  only when the metering backend is the mock: they drive pins in that process because
  gpiozero's mock pins live there. The node daemon itself does not know of them.
- One thread, catching up in small batches (like ``hw.mock.PulseTrain``), so rates stay exact
  over time whatever the scheduling jitter.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("eschaton.demo.flows")


class Flows:
    def __init__(self, metering: Any, flows: list[dict[str, Any]]) -> None:
        self.metering = metering
        self.flows = flows
        self.driven: dict[str, int] = {f["name"]: 0 for f in flows}
        self._pins = {f["name"]: metering.hw.mock_pin(f["pin"]) for f in flows}
        self.control_path: Path | None = None
        self._ctl: dict[str, Any] = {}
        self._ctl_mtime = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-flows", daemon=True)

    @classmethod
    def from_file(cls, metering: Any, path: str | Path) -> Flows:
        flows = cls(metering, json.loads(Path(path).read_text()))
        flows.control_path = Path(str(path) + ".ctl")
        return flows

    def start(self) -> Flows:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _open(self, f: dict[str, Any]) -> bool:
        m = self.metering
        if f.get("valve"):
            v = m.valves.get(f["valve"])
            return bool(v is not None and v.commanded_open)
        if f.get("relay"):
            r = m.relays.get(f["relay"])
            return bool(r is not None and r.is_on)
        return True

    def _pulse(self, name: str, n: int) -> None:
        pin = self._pins[name]
        for _ in range(n):
            pin.drive_low()
            pin.drive_high()
        self.driven[name] += n

    def _control(self) -> dict[str, Any]:
        """``<flows file>.ctl``: {"stopped": bool, "extra": bool}, set by the demo driver."""
        if self.control_path is None:
            return {}
        try:
            st = self.control_path.stat()
        except FileNotFoundError:
            return {}
        if st.st_mtime_ns != self._ctl_mtime:
            self._ctl_mtime = st.st_mtime_ns
            try:
                self._ctl = json.loads(self.control_path.read_text() or "{}")
            except ValueError:
                pass  # half-written: read it on the next change
        return self._ctl

    def _run(self) -> None:
        t0 = time.monotonic()
        owed = {f["name"]: 0.0 for f in self.flows}
        last = t0
        while not self._stop.is_set():
            now = time.monotonic()
            dt, last = now - last, now
            ctl = self._control()
            step: dict[str, int] = {}
            for f in self.flows:
                if f.get("sum_of"):
                    continue
                if self._open(f) and not ctl.get("stopped"):
                    owed[f["name"]] += f["hz"] * dt
                n = int(owed[f["name"]])
                owed[f["name"]] -= n
                step[f["name"]] = n
            for f in self.flows:
                if not f.get("sum_of"):
                    continue
                n = sum(step.get(s, 0) for s in f["sum_of"])
                if ctl.get("extra") and not ctl.get("stopped"):
                    owed[f["name"]] += f.get("extra_hz", 0.0) * dt
                extra = int(owed[f["name"]])
                owed[f["name"]] -= extra
                step[f["name"]] = n + extra
            try:
                for name, n in step.items():
                    if n:
                        self._pulse(name, n)
            except Exception:  # supervision boundary: a closed pin at shutdown ends the flows
                log.debug("demo flows stopped", exc_info=True)
                return
            self._stop.wait(0.02)
