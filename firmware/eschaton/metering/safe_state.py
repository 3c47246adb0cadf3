"""Drive every configured valve and relay to its safe state, without the node.

This is what runs after the node's process is gone, whatever the reason (SIGKILL, a crash, the
watchdog, a start that failed): systemd's ``ExecStopPost=eschaton hw safe-state --config ...``.

Rules / theory of operation:
- A released GPIO output keeps its last level on a Raspberry Pi OS kernel, so a normally-closed
  solenoid the node held open stays open after the node dies. Only a new process can drive it
  closed. This one reads the config and nothing else: no journal, no state file, no chain, no
  consensus code, and it writes nothing, so it works on a full disk and while the node cannot
  start.
- Safe states are the ones the node's orderly stop (``MeteringService.close``) reaches:
  a normally-closed solenoid de-energised (closed); a motorised valve driven closed for its
  ``travel_s`` and then released; a relay with the load disconnected (an NO contact released, an
  NC contact pulled in).
- The same drivers as the node's do it (``meter_drivers``), through the same ``Hardware``:
  constructing a driver already puts its relays in the de-energised or load-off level, then the
  explicit ``close()``/``off()`` says what is meant.
- Instant outputs first (solenoids, relays), then every motorised valve at once, so the slowest
  valve bounds the time, not their sum.
- Every output is tried even if one fails (a line held by another process); failures are
  reported, not raised, so the caller can say which.
- Afterwards the outputs are left driven (``Hardware.leave_driven``): gpiozero's close would
  turn them into floating inputs, which drops an NC-contact relay and reconnects its load.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from eschaton.config.metering import MeteringConfig, RelayConfig, ValveConfig
from hw.errors import HardwareError
from hw.factory import Hardware
from meter_drivers.base import MeterError
from meter_drivers.relay import RelaySwitch
from meter_drivers.valves import MotorisedValve, SolenoidValve


@dataclass(frozen=True, slots=True)
class SafeStateResult:
    """What was done to one valve or relay."""

    name: str
    """The ``[[valve]]`` or ``[[relay]]`` name."""
    kind: str
    """"solenoid_nc", "motorised" or "relay"."""
    pins: tuple[int, ...]
    """The GPIOs driven."""
    state: str
    """The safe state aimed at: "closed" (valves) or "off" (relays)."""
    error: str | None = None
    """Why it could not be driven; None when it was."""

    def row(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "pins": list(self.pins),
                "state": self.state if self.error is None else "unknown", "error": self.error}


def has_outputs(config: MeteringConfig) -> bool:
    """True when the config declares anything to drive (else no GPIO backend is opened)."""
    return bool(config.valves or config.relays)


def _solenoid(v: ValveConfig, hw: Hardware) -> None:
    SolenoidValve(v.name, v.pins[0], hw=hw, active_high=v.active_high).close()


def _relay(r: RelayConfig, hw: Hardware) -> None:
    RelaySwitch(r.name, r.pin, hw=hw, active_high=r.active_high, contact=r.contact).off()


def drive_safe_state(config: MeteringConfig, hw: Hardware, *,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> list[SafeStateResult]:
    """Drive every valve and relay of ``config`` to its safe state on ``hw``; see module rules.

    ``hw`` is left open with the outputs driven; the caller decides whether to close it.
    """
    results: list[SafeStateResult] = []
    motorised: list[tuple[ValveConfig, MotorisedValve]] = []

    def attempt(name: str, kind: str, pins: tuple[int, ...], state: str,
                act: Callable[[], None]) -> None:
        try:
            act()
        except (HardwareError, MeterError) as e:
            results.append(SafeStateResult(name, kind, pins, state, str(e)))
        else:
            results.append(SafeStateResult(name, kind, pins, state))

    for v in config.valves:
        if v.type == "solenoid_nc":
            attempt(v.name, v.type, v.pins, "closed", functools.partial(_solenoid, v, hw))
    for r in config.relays:
        attempt(r.name, "relay", (r.pin,), "off", functools.partial(_relay, r, hw))

    failed_motorised: list[SafeStateResult] = []
    for v in config.valves:
        if v.type != "motorised":
            continue
        try:
            mv = MotorisedValve(v.name, v.pins[0], v.pins[1], hw=hw, travel_s=v.travel_s,
                                active_high=v.active_high, clock=clock, sleep=sleep)
            mv.close()
        except (HardwareError, MeterError) as e:
            failed_motorised.append(SafeStateResult(v.name, v.type, v.pins, "closed", str(e)))
        else:
            motorised.append((v, mv))
    # Every motor runs at once; each is released when its own travel time has passed.
    while any(mv.moving for _, mv in motorised):
        now = clock()
        for _, mv in motorised:
            mv.poll(now)
        if any(mv.moving for _, mv in motorised):
            sleep(0.05)
    results.extend(SafeStateResult(v.name, v.type, v.pins, "closed") for v, _ in motorised)
    results.extend(failed_motorised)
    return results
