"""``eschaton valve open|close|status``: direct valve control for installation and maintenance.

A valve stays as commanded only as long as something holds its relay, and that is a property of
the valve kind:
- a normally-closed solenoid closes again when the relay is released, so ``open`` needs
  ``--for SECONDS``: it holds the valve open that long, then closes it;
- a motorised ball valve holds its position, so ``open``/``close`` drive it for its travel time
  and leave it there.
Do not use these while the node runs: the node owns the valves then (the command fails with
"GPIO busy" on a Pi).
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from eschaton.cli.args import seconds
from eschaton.cli.main import add_common
from eschaton.config.metering import MeteringConfig, ValveConfig
from eschaton.errors import LocalError
from eschaton.metering.cli_support import add_config_arg, config_of, datadir_of, valve_row
from eschaton.metering.service import state_dir
from eschaton.metering.state import ValveStateStore
from hw.errors import HardwareError
from hw.factory import Hardware, open_hardware
from meter_drivers.valves import MotorisedValve, SolenoidValve


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("valve", help="valves: open, close, status")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))

    p = sub.add_parser("open", help="open a valve")
    p.add_argument("name")
    p.add_argument("--for", dest="hold_s", type=seconds(0, 86_400), default=None, metavar="SECONDS",
                   help="hold it open this long, then close it (required for solenoids)")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_open)

    p = sub.add_parser("close", help="close a valve")
    p.add_argument("name")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_close)

    p = sub.add_parser("status", help="declared valves, last command and sensed position")
    p.add_argument("name", nargs="?")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_status)


def _hw(cfg: MeteringConfig) -> Hardware:
    return open_hardware(cfg.hardware.backend, board=cfg.hardware.board)


def _driver(v: ValveConfig, hw: Hardware) -> SolenoidValve | MotorisedValve:
    if v.type == "solenoid_nc":
        return SolenoidValve(v.name, v.pins[0], hw=hw, active_high=v.active_high,
                             feedback_pin=v.feedback_pin, feedback_active_high=v.feedback_active_high)
    return MotorisedValve(v.name, v.pins[0], v.pins[1], hw=hw, travel_s=v.travel_s,
                          active_high=v.active_high, feedback_pin=v.feedback_pin,
                          feedback_active_high=v.feedback_active_high)


def _wait_travel(valve: MotorisedValve) -> None:
    while valve.moving:
        time.sleep(0.05)
        valve.poll(time.monotonic())


def _command(args: argparse.Namespace, open_: bool) -> dict[str, Any]:
    cfg = config_of(args)
    v = cfg.valve(args.name)
    hold = getattr(args, "hold_s", None)
    if open_ and v.type == "solenoid_nc" and hold is None:
        raise LocalError(f"valve {v.name!r} is a normally-closed solenoid: it closes as soon as "
                         "this command exits; pass --for SECONDS (the node holds valves open)")
    if hold is not None and hold < 0:
        raise LocalError("--for must not be negative")
    store = ValveStateStore(state_dir(cfg, datadir_of(args)))
    row = valve_row(v)
    with _hw(cfg) as hw:
        valve = _driver(v, hw)
        if open_:
            valve.open()
            store.save(v.name, True, time.time_ns())
            if isinstance(valve, MotorisedValve):
                _wait_travel(valve)
            if hold is not None:
                try:
                    time.sleep(hold)
                finally:  # Ctrl-C during the hold still closes the valve and records it
                    valve.close()
                    if isinstance(valve, MotorisedValve):
                        _wait_travel(valve)
                    store.save(v.name, False, time.time_ns())
                row["action"] = f"opened for {hold:g} s, then closed"
            else:
                row["action"] = "opened"
        else:
            valve.close()
            if isinstance(valve, MotorisedValve):
                _wait_travel(valve)
            store.save(v.name, False, time.time_ns())
            row["action"] = "closed"
        row["sensed_open"] = valve.sensed_open()
        valve.release()  # not shutdown(): that would drive a motorised valve closed
    row["commanded_open"] = store.all()[v.name]["commanded_open"]
    return row


def cmd_open(args: argparse.Namespace) -> dict[str, Any]:
    return _command(args, True)


def cmd_close(args: argparse.Namespace) -> dict[str, Any]:
    return _command(args, False)


def cmd_status(args: argparse.Namespace) -> list[dict[str, Any]] | dict[str, Any]:
    cfg = config_of(args)
    valves = [cfg.valve(args.name)] if args.name else list(cfg.valves)
    states = ValveStateStore(state_dir(cfg, datadir_of(args))).all()
    rows = []
    sensed: dict[str, bool | None] = {}
    try:
        with _hw(cfg) as hw:
            for v in valves:
                if v.feedback_pin is not None:
                    inp = hw.digital_input(v.feedback_pin, owner=f"{v.name}.feedback", pull="up",
                                           active_high=v.feedback_active_high)
                    sensed[v.name] = inp.is_active
    except HardwareError:
        sensed = {}  # pins held by the running node: report the command only
    for v in valves:
        row = valve_row(v)
        st = states.get(v.name)
        row["commanded_open"] = None if st is None else st["commanded_open"]
        row["commanded_at_ns"] = None if st is None else st["wall_ns"]
        row["sensed_open"] = sensed.get(v.name)
        rows.append(row)
    return rows[0] if args.name else rows
