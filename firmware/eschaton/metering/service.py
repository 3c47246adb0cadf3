"""The metering service: meters, valves and tamper inputs from the config, wired to the totals
journal and the safety monitor, with a listener API for the node.

Rules / theory of operation:
- ``MeteringService.open(config, datadir=...)`` builds everything or nothing: if any step fails,
  what was built is closed and the typed error propagates.
- Pulse meters resume from the journal's last committed total (never double-counting after a
  crash). A measured calibration in the state directory overrides the TOML factor.
- ``poll(now)`` is the one step: release motorised valves whose travel ended, feed totals,
  positions and tamper levels to the ``SafetyMonitor``, group-commit the journal, and hand any
  safety events to the listeners. ``start()`` runs it in a thread every ``poll_interval_s``;
  Modbus meters are polled in their own threads so a slow RS-485 line never delays a commit.
- Listeners are called in the polling thread. One that raises is logged and skipped: a broken
  consumer must not stop metering. Safety listeners (``add_listener``) get each safety event;
  reading listeners (``add_reading_listener``) are told after every poll and every Modbus
  reading that fresh readings are in, so that consumers (the microgrid's metering facade)
  read when there is something new instead of running a ticker of their own.
- ``close()`` is the orderly shutdown: stop the threads, close every valve (a motorised valve is
  driven closed for its full travel), switch supply relays off, commit the final totals, release
  the hardware.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eschaton.config.metering import (
    MeteringConfig,
    ModbusMeterConfig,
    PulseMeterConfig,
    ValveConfig,
)
from eschaton.core.metering.safety import (
    MeterReadFailed,
    MeterReadOk,
    MeterRule,
    MeterTotal,
    SafetyEvent,
    SafetyInput,
    SafetyMonitor,
    SafetyRules,
    TamperInput,
    ValveCommanded,
    ValveRule,
    ValveSensed,
)
from eschaton.core.metering.totals import Reading, windowed_rate
from eschaton.errors import LocalError
from eschaton.metering.journal import TotalsJournal
from eschaton.metering.state import CalibrationStore, ValveStateStore
from hw.factory import Hardware, open_hardware
from meter_drivers.base import EnergyReading, MeterError, PulseReading
from meter_drivers.modbus_sdm import ModbusEnergyMeter
from meter_drivers.pulse import PulseMeter
from meter_drivers.pulse_flow import PulseFlowMeter
from meter_drivers.relay import RelaySwitch
from meter_drivers.s0_energy import S0EnergyMeter
from meter_drivers.tamper import TamperSwitch
from meter_drivers.valves import MotorisedValve, SolenoidValve, Valve

log = logging.getLogger(__name__)

Listener = Callable[[SafetyEvent], None]
HISTORY_LEN = 2048  # pulse readings kept per meter for rates (~200 s at a 0.1 s poll)


def state_dir(config: MeteringConfig, datadir: str | Path) -> Path:
    """Where the journal and state files of this config live."""
    p = Path(config.journal_dir)
    return p if p.is_absolute() else Path(datadir) / p


def safety_rules(config: MeteringConfig) -> SafetyRules:
    """The safety rules a config implies."""
    meters = []
    for m in config.meters:
        if isinstance(m, PulseMeterConfig):
            meters.append(MeterRule(m.name, silent_after_s=m.silent_after_s, max_rate_hz=m.max_rate_hz))
        else:
            meters.append(MeterRule(m.name, silent_after_s=m.silent_after_s, fault_after=m.fault_after))
    valves = [ValveRule(v.name, meter=v.meter, settle_s=v.settle_s, leak_pulses=v.leak_pulses)
              for v in config.valves]
    return SafetyRules(tuple(valves), tuple(meters), tuple(t.name for t in config.tampers))


class MeteringService:
    """Owns the metering hardware of one node. See the module docstring."""

    def __init__(self, config: MeteringConfig, *, hw: Hardware, datadir: str | Path,
                 own_hw: bool = False, clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.hw = hw
        self._own_hw = own_hw
        self._clock = clock
        self._wall_ns = wall_ns
        self.state_dir = state_dir(config, datadir)
        self.pulse_meters: dict[str, PulseMeter] = {}
        self.modbus_meters: dict[str, ModbusEnergyMeter] = {}
        self.valves: dict[str, Valve] = {}
        self.tampers: dict[str, TamperSwitch] = {}
        self.relays: dict[str, RelaySwitch] = {}
        self.last_energy: dict[str, EnergyReading] = {}
        self._history: dict[str, deque[Reading]] = {}
        self.last_error: dict[str, MeterError] = {}
        self._listeners: list[Listener] = []
        self._reading_listeners: list[Callable[[], None]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.journal: TotalsJournal | None = None
        self.closed = False
        try:
            self.journal = TotalsJournal(self.state_dir, interval_s=config.commit_interval_s,
                                         clock=clock, wall_ns=wall_ns)
            self.calibrations = CalibrationStore(self.state_dir)
            self.valve_states = ValveStateStore(self.state_dir)
            factors = self.calibrations.factors()
            for m in config.meters:
                if isinstance(m, PulseMeterConfig):
                    cls = PulseFlowMeter if m.type == "pulse_flow" else S0EnergyMeter
                    self.pulse_meters[m.name] = cls(
                        m.name, m.pin, hw=hw, counts_per_unit=factors.get(m.name, m.counts_per_unit),
                        base=self.journal.total(m.name), pull_up=m.pull_up, edge=m.edge,
                        clock=clock, wall_ns=wall_ns)
                    self._history[m.name] = deque(maxlen=HISTORY_LEN)
                else:
                    self.modbus_meters[m.name] = self._modbus(m, sleep)
            for v in config.valves:
                self.valves[v.name] = self._valve(v, sleep)
            for r in config.relays:
                self.relays[r.name] = RelaySwitch(r.name, r.pin, hw=hw, active_high=r.active_high,
                                                  contact=r.contact)
            for t in config.tampers:
                self.tampers[t.name] = TamperSwitch(t.name, t.pin, hw=hw, active_high=t.active_high,
                                                    pull=t.pull)
            now = clock()
            self.monitor = SafetyMonitor(safety_rules(config), now)
            for name, valve in self.valves.items():
                if isinstance(valve, SolenoidValve):
                    # De-energised at construction: a normally-closed solenoid is closed now.
                    self.monitor.feed(ValveCommanded(name, False), now)
        except BaseException:
            self._teardown(close_valves=False)
            raise

    def _modbus(self, m: ModbusMeterConfig, sleep: Callable[[float], None]) -> ModbusEnergyMeter:
        return ModbusEnergyMeter(
            m.name, m.port, model=m.model, device_id=m.device_id, baudrate=m.baudrate,
            parity=m.parity, stopbits=m.stopbits, timeout_s=m.timeout_s, retries=m.retries,
            hw=self.hw, clock=self._clock, wall_ns=self._wall_ns, sleep=sleep)

    def _valve(self, v: ValveConfig, sleep: Callable[[float], None]) -> Valve:
        if v.type == "solenoid_nc":
            return SolenoidValve(v.name, v.pins[0], hw=self.hw, active_high=v.active_high,
                                 feedback_pin=v.feedback_pin,
                                 feedback_active_high=v.feedback_active_high)
        return MotorisedValve(v.name, v.pins[0], v.pins[1], hw=self.hw, travel_s=v.travel_s,
                              active_high=v.active_high, feedback_pin=v.feedback_pin,
                              feedback_active_high=v.feedback_active_high, clock=self._clock,
                              sleep=sleep)

    @classmethod
    def open(cls, config: MeteringConfig, *, datadir: str | Path, hw: Hardware | None = None,
             **kwargs: Any) -> MeteringService:
        """Open the hardware named by the config (unless ``hw`` is given) and build the service."""
        own = hw is None
        if hw is None:
            hw = open_hardware(config.hardware.backend, board=config.hardware.board)
        try:
            return cls(config, hw=hw, datadir=datadir, own_hw=own, **kwargs)
        except BaseException:
            if own:
                hw.close()
            raise

    # -- listeners -------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every safety event (in the polling thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def add_reading_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each poll and each Modbus reading (in the polling thread)."""
        self._reading_listeners.append(listener)

    def remove_reading_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._reading_listeners:
            self._reading_listeners.remove(listener)

    def _fresh_readings(self) -> None:
        for listener in list(self._reading_listeners):
            try:
                listener()
            except Exception:  # supervision boundary: a broken listener must not stop metering
                log.exception("metering reading listener %r failed", listener)

    def _dispatch(self, events: list[SafetyEvent]) -> None:
        for ev in events:
            for listener in list(self._listeners):
                try:
                    listener(ev)
                except Exception:  # supervision boundary: a broken listener must not stop metering
                    log.exception("metering listener %r failed on %r", listener, ev)

    def _feed(self, items: list[SafetyInput], now: float) -> list[SafetyEvent]:
        out: list[SafetyEvent] = []
        for item in items:
            out.extend(self.monitor.feed(item, now))
        return out

    # -- actions ---------------------------------------------------------------------------
    def _get_valve(self, name: str) -> Valve:
        try:
            return self.valves[name]
        except KeyError:
            self.config.valve(name)  # raises the typed "no valve named" error
            raise

    def pin_level(self, pin: int | str) -> tuple[int, bool, str | None]:
        """The installer's pin test: (GPIO, level, holder) of any pin (``Hardware.read_level``)."""
        with self._lock:
            return self.hw.read_level(pin)

    def pin_toggle(self, pin: int | str) -> tuple[int, bool]:
        """The installer's pin test: flip a free pin driven as an output (``Hardware.toggle_test_output``)."""
        with self._lock:
            return self.hw.toggle_test_output(pin)

    def open_valve(self, name: str, now: float | None = None) -> list[SafetyEvent]:
        return self._command(name, True, now)

    def close_valve(self, name: str, now: float | None = None) -> list[SafetyEvent]:
        return self._command(name, False, now)

    def _command(self, name: str, open_: bool, now: float | None) -> list[SafetyEvent]:
        valve = self._get_valve(name)
        with self._lock:
            now = self._clock() if now is None else now
            if open_:
                valve.open(now)
            else:
                valve.close(now)
            self.valve_states.save(name, open_, self._wall_ns())
            events = self.monitor.feed(ValveCommanded(name, open_), now)
        self._dispatch(events)
        return events

    def switch(self, name: str, on: bool) -> None:
        """Connect (``on=True``) or disconnect a relay-switched supply."""
        try:
            relay = self.relays[name]
        except KeyError:
            raise LocalError(f"{self.config.source}: no relay named {name!r}") from None
        with self._lock:
            (relay.on if on else relay.off)()

    # -- polling ---------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        return {name: m.total for name, m in self.pulse_meters.items()}

    def read_pulse(self, name: str) -> PulseReading:
        try:
            return self.pulse_meters[name].read()
        except KeyError:
            self.config.meter(name)
            raise

    def rate(self, name: str, window_s: float = 10.0, now: float | None = None) -> float:
        """A pulse meter's rate in units per second (L/s, kWh/s) over the last ``window_s``,
        derived from the readings ``poll()`` took. Multiply by 60 for L/min, 3.6e6 for W."""
        meter = self.pulse_meters.get(name)
        if meter is None:
            self.config.meter(name)
            raise LocalError(f"meter {name!r} is not a pulse meter; see last_energy")
        with self._lock:
            readings = list(self._history[name])
        t = self._clock() if now is None else now
        return windowed_rate(readings, t, window_s) / meter.counts_per_unit

    def poll(self, now: float | None = None) -> list[SafetyEvent]:
        """One step (see module docstring); returns the safety events it raised."""
        with self._lock:
            now = self._clock() if now is None else now
            items: list[SafetyInput] = []
            for name, valve in self.valves.items():
                valve.poll(now)
                sensed = valve.sensed_open()
                if sensed is not None:
                    items.append(ValveSensed(name, sensed))
            totals = self.totals()
            for n, t in totals.items():
                self._history[n].append(Reading(n, t, now))
            items.extend(MeterTotal(n, t) for n, t in totals.items())
            items.extend(TamperInput(n, t.active) for n, t in self.tampers.items())
            events = self._feed(items, now)
            events.extend(self.monitor.tick(now))
            if self.journal is not None:
                self.journal.maybe_commit(totals, now)
        self._dispatch(events)
        self._fresh_readings()
        return events

    def poll_modbus(self, name: str, now: float | None = None) -> EnergyReading | None:
        """Read one Modbus meter (blocking); feeds the monitor. None (and ``last_error``) on failure."""
        meter = self.modbus_meters[name]
        try:
            reading: EnergyReading | None = meter.read()
            item: SafetyInput = MeterReadOk(name)
        except MeterError as e:
            reading = None
            item = MeterReadFailed(name, str(e))
            self.last_error[name] = e
        with self._lock:
            if reading is not None:
                self.last_energy[name] = reading
                self.last_error.pop(name, None)
            events = self.monitor.feed(item, self._clock() if now is None else now)
        self._dispatch(events)
        if reading is not None:
            self._fresh_readings()
        return reading

    # -- threads ---------------------------------------------------------------------------
    def start(self, poll_interval_s: float = 0.1) -> None:
        """Run ``poll`` and the Modbus pollers in background threads until ``stop()``."""
        self._stop.clear()

        def main_loop() -> None:
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception:  # supervision boundary: keep counting and committing
                    log.exception("metering poll failed")
                self._stop.wait(poll_interval_s)

        def modbus_loop(name: str, interval: float) -> None:
            while not self._stop.is_set():
                try:
                    self.poll_modbus(name)
                except Exception:  # supervision boundary: an unexpected driver bug must not
                    log.exception("polling meter %s failed", name)  # end this meter's polling
                self._stop.wait(interval)

        self._threads = [threading.Thread(target=main_loop, name="metering-poll", daemon=True)]
        for m in self.config.meters:
            if isinstance(m, ModbusMeterConfig):
                self._threads.append(threading.Thread(
                    target=modbus_loop, args=(m.name, m.poll_interval_s),
                    name=f"metering-{m.name}", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._threads = []

    def _teardown(self, *, close_valves: bool) -> None:
        for v in self.valves.values():
            if close_valves:
                try:
                    v.shutdown()
                    self.valve_states.save(v.name, False, self._wall_ns())
                except Exception:  # shutdown boundary: try every valve even if one fails
                    log.exception("closing valve %s failed", v.name)
        for r in self.relays.values():
            if close_valves:
                r.shutdown()
        if self.journal is not None:
            try:
                self.journal.maybe_commit(self.totals(), force=True)
            finally:
                self.journal.close()
        for m in self.modbus_meters.values():
            m.close()
        if self._own_hw:
            self.hw.close()

    def close(self) -> None:
        """Orderly shutdown: valves closed, totals committed, hardware released. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        self._teardown(close_valves=True)

    def __enter__(self) -> MeteringService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
