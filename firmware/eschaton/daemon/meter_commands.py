"""The metering service's API commands (``METERING``): meters, valves and relays of a running node.

The node holds the GPIOs while it runs, so these are how an operator (the dashboard, a script
over the API) reads meters and drives valves then; ``eschaton meter``/``eschaton valve`` are for
a stopped node. Hardware calls take the metering lock, which the polling thread holds for a
moment each poll: they run off the event loop.
"""
from __future__ import annotations

import asyncio
from typing import Any

from eschaton.api.registry import ApiError, CommandTable, Param

METERING = CommandTable()

RATE_WINDOW_S = 10.0  # rates are averaged over this window (a YF-S201 pulses 7.5 Hz per L/min)
UNITS = {"pulse_flow": "litre", "s0_energy": "kWh"}


def _metering(node: Any) -> Any:
    m = getattr(node, "metering", None)
    if m is None:
        raise ApiError("this node has no [metering] section")
    return m


def meter_rows(m: Any) -> list[dict[str, Any]]:
    """Every declared meter: total in its unit (and in counts), rate per second."""
    out: list[dict[str, Any]] = []
    for cfg in m.config.meters:
        name = cfg.name
        pulse = m.pulse_meters.get(name)
        if pulse is not None:
            out.append({"name": name, "type": cfg.type, "unit": UNITS.get(cfg.type, "unit"),
                        "counts": pulse.total, "counts_per_unit": pulse.counts_per_unit,
                        "total": pulse.quantity, "rate_per_s": m.rate(name, RATE_WINDOW_S)})
            continue
        e = m.last_energy.get(name)
        err = m.last_error.get(name)
        out.append({"name": name, "type": "modbus", "unit": "kWh",
                    "total": e.import_kwh if e is not None else None,
                    "power_w": e.power_w if e is not None else None,
                    "error": str(err) if err is not None else ""})
    return out


def valve_rows(m: Any) -> list[dict[str, Any]]:
    return [{"name": v.name, "type": v.type, "meter": v.meter,
             "open": m.valves[v.name].commanded_open, "sensed_open": m.valves[v.name].sensed_open()}
            for v in m.config.valves]


def relay_rows(m: Any) -> list[dict[str, Any]]:
    return [{"name": r.name, "meter": r.meter, "contact": r.contact, "on": m.relays[r.name].is_on}
            for r in m.config.relays]


@METERING.command("meter.list", "every meter of the running node: total, counts and rate")
async def meter_list(node: Any) -> list[dict[str, Any]]:
    return meter_rows(_metering(node))


@METERING.command("valve.list", "every valve of the running node: commanded and sensed position")
async def valve_list(node: Any) -> list[dict[str, Any]]:
    return valve_rows(_metering(node))


@METERING.command("relay.list", "every supply relay of the running node: on or off")
async def relay_list(node: Any) -> list[dict[str, Any]]:
    return relay_rows(_metering(node))


def _valve(m: Any, name: str) -> None:
    if name not in m.valves:
        raise ApiError(f"no valve named {name!r}")


@METERING.command("valve.open", "open a valve (the node holds it open until told otherwise)",
                  Param("name", str, "valve name"))
async def valve_open(node: Any, name: str) -> dict[str, Any]:
    m = _metering(node)
    _valve(m, name)
    await asyncio.to_thread(m.open_valve, name)
    return next(r for r in valve_rows(m) if r["name"] == name)


@METERING.command("valve.close", "close a valve", Param("name", str, "valve name"))
async def valve_close(node: Any, name: str) -> dict[str, Any]:
    m = _metering(node)
    _valve(m, name)
    await asyncio.to_thread(m.close_valve, name)
    return next(r for r in valve_rows(m) if r["name"] == name)


@METERING.command("relay.switch", "connect (on) or disconnect (off) a relay-switched supply",
                  Param("name", str, "relay name"), Param("on", bool, "true: connect; false: cut"))
async def relay_switch(node: Any, name: str, on: bool) -> dict[str, Any]:
    m = _metering(node)
    if name not in m.relays:
        raise ApiError(f"no relay named {name!r}")
    await asyncio.to_thread(m.switch, name, on)
    return next(r for r in relay_rows(m) if r["name"] == name)


# --- installer tools: the pin test and meter calibration (the dashboard's /tools) -------------


@METERING.command("pin.read", "read a GPIO pin's level (any pin; who holds it, if anyone)",
                  Param("pin", str, "BCM number (17), GPIO17 or a header pin (BOARD11)"))
async def pin_read(node: Any, pin: str) -> dict[str, Any]:
    m = _metering(node)

    gpio, high, owner = await _hw(lambda: m.pin_level(pin))
    return {"gpio": gpio, "high": high, "owner": owner}


@METERING.command("pin.toggle", "drive a free GPIO pin as an output and flip it (the installer's pin test)",
                  Param("pin", str, "BCM number (17), GPIO17 or a header pin (BOARD11)"))
async def pin_toggle(node: Any, pin: str) -> dict[str, Any]:
    m = _metering(node)

    gpio, high = await _hw(lambda: m.pin_toggle(pin))
    return {"gpio": gpio, "high": high, "owner": m.hw.TEST_OWNER}


async def _hw(fn: Any) -> Any:
    from hw.errors import HardwareError

    try:
        return await asyncio.to_thread(fn)
    except (HardwareError, ValueError) as e:  # a pin the board lacks, or one a device holds
        raise ApiError(str(e)) from None


@METERING.command("meter.calibrate", "measure a pulse meter's pulses per unit: start, pass a known "
                  "quantity, finish with it",
                  Param("name", str, "pulse meter name"),
                  Param("step", str, "start, finish, or status (the run in progress, if any)"),
                  Param("quantity", float, "finish: the quantity that passed, in the meter's unit",
                        required=False, default=0.0),
                  Param("tolerance", float, "finish: refuse a result this far (fraction) from the nominal "
                        "factor", required=False, default=0.5))
async def meter_calibrate(node: Any, name: str, step: str, quantity: float, tolerance: float) -> dict[str, Any]:
    from eschaton.metering.calibration import finish_run, start_run

    m = _metering(node)
    pulse = m.pulse_meters.get(name)
    if pulse is None:
        raise ApiError(f"no pulse meter named {name!r}")
    cfg = m.config.meter(name)
    if step == "status":
        run = m.calibrations.run(name)
        return {"meter": name, "running": run is not None, "nominal_counts_per_unit": cfg.counts_per_unit,
                "start_pulses": run["start_pulses"] if run is not None else None, "pulses_now": pulse.total}
    if step == "start":
        return start_run(m.calibrations, cfg, pulse.total)
    if step == "finish":
        return finish_run(m.calibrations, cfg, pulse.total, quantity, tolerance)
    raise ApiError("step must be start, finish or status")
