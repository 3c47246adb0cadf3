"""The microgrid's metering facade: the sold meters read in exact base units and pushed to the
reading listeners, and the supply (valve, relay or bandwidth cut) switched, with listeners told
of each switch.

Rules / theory of operation:
- One place knows how a meter name maps to hardware: pulse meters (durable journal totals
  through their calibration, floor), energy meters (last import reading), bandwidth meters
  (durable byte totals). Nothing can be billed ahead of what the journal made durable.
- Readings are pushed, not polled: the metering service and the bandwidth meters tell the
  facade (from their polling threads) after each poll; at most once per ``reading_interval_s``
  the facade reads every meter the microgrid bills or watches (sold meters in their sale's base
  unit, loss meters in mL) on the event loop and hands one ``Readings`` to each reading
  listener in turn (the microgrid bills from it). A push still running when the next one is due
  is not doubled: the next poll after it ends brings the next one. A meter that has no reading
  yet (an energy meter before its first answer) is left out of that push.
- ``actuate`` switches what a sale names (bandwidth cut set, valve, relay) synchronously, and
  then tells the listeners (the node's event stream records it for status and dashboards).
- ``check_names``: every meter, valve and relay a ``[microgrid]`` section names exists, with a
  one-line error naming the file and key otherwise.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from eschaton.config.microgrid import MicrogridConfig, SellConfig
from eschaton.core.microgrid.terms import Service
from eschaton.errors import LocalError

log = logging.getLogger("eschaton.microgrid")


class MicrogridConfigError(LocalError):
    pass


@dataclass(frozen=True, slots=True)
class Readings:
    """Durable cumulative counts, pushed by the facade to its reading listeners."""

    at_ms: int
    """When they were read (the microgrid's clock)."""
    units: Mapping[tuple[str, str], int]
    """(meter, base unit) -> cumulative count in that unit (floor of the calibration)."""

    def get(self, meter: str, base_unit: str) -> int | None:
        return self.units.get((meter, base_unit))


ReadingListener = Callable[[Readings], Awaitable[None]]


class Supply:
    def __init__(self, node: Any, config: MicrogridConfig, *, clock: Callable[[], int],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.config = config
        self.sells: dict[str, SellConfig] = {s.meter: s for s in config.sell}
        self.listeners: list[Callable[[str, bool], None]] = []  # (meter id, on) after a switch
        self.reading_listeners: list[ReadingListener] = []  # each push, in turn
        self._clock = clock  # ms, for ``Readings.at_ms``
        self._monotonic = monotonic  # for the push interval
        self.watched: tuple[tuple[str, str], ...] = tuple(dict.fromkeys(
            [(s.meter, s.base_unit) for s in config.sell]
            + [(name, "mL") for ls in config.loss for name in (ls.bulk, *ls.downstream)]))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_push = 0.0
        self._push: asyncio.Task[None] | None = None

    # --- readings, pushed ------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the meters' polls (call on the event loop; see the rules)."""
        self._loop = asyncio.get_running_loop()
        if self.node.metering is not None:
            self.node.metering.add_reading_listener(self._fresh)
        if self.node.bandwidth is not None:
            self.node.bandwidth.add_listener(self._fresh)

    async def stop(self) -> None:
        if self.node.metering is not None:
            self.node.metering.remove_reading_listener(self._fresh)
        if self.node.bandwidth is not None:
            self.node.bandwidth.remove_listener(self._fresh)
        self._loop = None
        push, self._push = self._push, None
        if push is not None:
            push.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await push

    def _fresh(self) -> None:
        """A meter's polling thread has new readings: hop onto the loop if a push is due."""
        loop = self._loop
        if loop is None or self._push is not None or self._monotonic() < self._next_push:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: the node is stopping
            loop.call_soon_threadsafe(self._push_due)

    def _push_due(self) -> None:
        if self._loop is None or self._push is not None or self._monotonic() < self._next_push:
            return
        self._next_push = self._monotonic() + self.config.reading_interval_s
        self._push = self._loop.create_task(self._deliver())

    async def _deliver(self) -> None:
        try:
            readings = self.read()
            for fn in list(self.reading_listeners):
                try:
                    await fn(readings)
                except asyncio.CancelledError:
                    raise
                except Exception:  # supervision boundary: bill again on the next push
                    log.exception("microgrid reading listener failed")
        finally:
            self._push = None

    def read(self) -> Readings:
        """Every watched meter now, in its base unit (those without a reading yet left out)."""
        units: dict[tuple[str, str], int] = {}
        for meter, unit in self.watched:
            try:
                units[(meter, unit)] = self.base_units(meter, unit)
            except LocalError:
                continue
        return Readings(self._clock(), units)

    # --- names, units and switches ---------------------------------------------------------

    def check_names(self) -> None:
        m = self.node.metering
        meters = set(m.pulse_meters) | set(m.modbus_meters) if m is not None else set()
        bandwidth = set(self.node.bandwidth.names) if self.node.bandwidth is not None else set()
        meters |= bandwidth
        valves = set(m.valves) if m is not None else set()
        relays = set(m.relays) if m is not None else set()
        src = self.node.config.source
        for i, s in enumerate(self.config.sell):
            if s.meter not in meters:
                raise MicrogridConfigError(f"{src}: microgrid.sell[{i}].meter: no [[meter]] named {s.meter!r}")
            if s.valve is not None and s.valve not in valves:
                raise MicrogridConfigError(f"{src}: microgrid.sell[{i}].valve: no [[valve]] named {s.valve!r}")
            if s.relay is not None and s.relay not in relays:
                raise MicrogridConfigError(f"{src}: microgrid.sell[{i}].relay: no [[relay]] named {s.relay!r}")
            if (s.meter in bandwidth) != (s.service == Service.BANDWIDTH.value):
                raise MicrogridConfigError(
                    f"{src}: microgrid.sell[{i}]: meter {s.meter!r} is "
                    + ("a [[bandwidth]] meter; sell it as service = \"bandwidth\"" if s.meter in bandwidth
                       else "not a [[bandwidth]] meter; bandwidth is sold from [[bandwidth]] meters"))
        for i, b in enumerate(self.config.buy):
            if b.meter is not None and b.meter not in meters:
                raise MicrogridConfigError(f"{src}: microgrid.buy[{i}].meter: no [[meter]] named {b.meter!r}")
        for i, ls in enumerate(self.config.loss):
            for name in (ls.bulk, *ls.downstream):
                if name not in meters:
                    raise MicrogridConfigError(f"{src}: microgrid.loss[{i}]: no [[meter]] named {name!r}")

    def _bandwidth(self, meter: str) -> Any:
        """The node's bandwidth meters if ``meter`` is one of them, else None."""
        bw = self.node.bandwidth
        return bw if bw is not None and meter in bw.names else None

    def base_units(self, meter: str, base_unit: str) -> int:
        """The meter's cumulative count in exact integer base units (floor of the calibration)."""
        bw = self._bandwidth(meter)
        if bw is not None:
            # Bytes the journal made durable (as for pulse meters: no invoice ahead of the meter).
            return int(bw.total(meter))
        m = self.node.metering
        scale = 1000 if base_unit in ("mL", "Wh") else 1
        pm = m.pulse_meters.get(meter)
        if pm is not None:
            # Bill only what the totals journal made durable: after a power cut the meter
            # resumes from that total, so no invoice can ever be ahead of the meter.
            total = m.journal.total(meter) if m.journal is not None else pm.total
            return int(Fraction(total * scale) / Fraction(pm.counts_per_unit))
        reading = m.last_energy.get(meter)
        if reading is None:
            raise LocalError(f"meter {meter} has no reading yet")
        return int(Fraction(reading.import_kwh) * scale)

    def actuate(self, meter_id: str, on: bool, record: bool = True) -> None:
        s = self.sells.get(meter_id)
        bw = self._bandwidth(meter_id)
        if s is None or (self.node.metering is None and bw is None):
            return
        if bw is not None:
            (bw.restore if on else bw.cut)(meter_id)  # the client's addresses leave/join the cut set
        elif s.valve is not None:
            (self.node.metering.open_valve if on else self.node.metering.close_valve)(s.valve)
        elif s.relay is not None:
            self.node.metering.switch(s.relay, on)
        if record:
            for fn in self.listeners:
                fn(meter_id, on)
        log.info("supply %s: %s", meter_id, "open" if on else "closed")
