"""``eschaton meter list|read|calibrate``.

Pulse meters are counted by the node (which holds the GPIOs); these commands read the totals it
committed to the journal, so they work while the node runs and never disturb it. Modbus meters
are read live over their serial port.

Calibration of a pulse meter, per unit:
  1. ``eschaton meter calibrate water --start``
  2. run a known quantity through it (e.g. fill a 10 L vessel), stop the flow, wait 2 s
     (totals are committed about once a second)
  3. ``eschaton meter calibrate water --finish --quantity 10``
Or, with a pulse count from elsewhere: ``--pulses 4620 --quantity 10``. The measured factor is
stored in the data directory and used from the next start of the node; the TOML factor stays the
nominal value the measurement is checked against.
"""
from __future__ import annotations

import argparse
from typing import Any

from eschaton.cli.args import finite
from eschaton.cli.main import add_common
from eschaton.config.metering import MeteringConfig, ModbusMeterConfig, PulseMeterConfig
from eschaton.core.metering.totals import counts_to_units
from eschaton.errors import LocalError
from eschaton.metering.calibration import finish_run, start_run
from eschaton.metering.cli_support import add_config_arg, config_of, datadir_of, meter_row
from eschaton.metering.journal import read_committed
from eschaton.metering.service import state_dir
from eschaton.metering.state import CalibrationStore
from meter_drivers.modbus_sdm import ModbusEnergyMeter


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("meter", help="meters: list, read, calibrate")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))

    p = sub.add_parser("list", help="declared meters with their calibration and committed totals")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("read", help="read one meter or all")
    p.add_argument("name", nargs="?", help="meter name (default: all)")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_read)

    p = sub.add_parser("calibrate", help="measure a pulse meter's pulses per unit")
    p.add_argument("name")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--start", action="store_true", help="begin a calibration run")
    mode.add_argument("--finish", action="store_true", help="end the run (needs --quantity)")
    mode.add_argument("--pulses", type=int, help="pulses counted for --quantity (one step)")
    p.add_argument("--quantity", type=finite, help="litres or kWh that passed during the run")
    p.add_argument("--tolerance", type=finite, default=0.5,
                   help="allowed deviation from the configured factor (fraction, default 0.5)")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_calibrate)


def _factors(cfg: MeteringConfig, args: argparse.Namespace) -> dict[str, float]:
    return CalibrationStore(state_dir(cfg, datadir_of(args))).factors()


def _pulse_row(cfg: MeteringConfig, m: PulseMeterConfig, args: argparse.Namespace,
               committed: dict[str, Any], factors: dict[str, float]) -> dict[str, Any]:
    row = meter_row(m)
    factor = factors.get(m.name, m.counts_per_unit)
    row["counts_per_unit"] = factor
    row["calibration"] = "measured" if m.name in factors else "configured"
    rec = committed.get(m.name)
    row["pulses"] = 0 if rec is None else rec.total
    row["quantity"] = counts_to_units(row["pulses"], factor)
    row["committed_at_ns"] = None if rec is None else rec.wall_ns
    return row


def cmd_list(args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = config_of(args)
    committed = read_committed(state_dir(cfg, datadir_of(args)))
    factors = _factors(cfg, args)
    rows = []
    for m in cfg.meters:
        rows.append(_pulse_row(cfg, m, args, committed, factors) if isinstance(m, PulseMeterConfig)
                    else meter_row(m))
    return rows


def _read_modbus(m: ModbusMeterConfig) -> dict[str, Any]:
    meter = ModbusEnergyMeter(m.name, m.port, model=m.model, device_id=m.device_id,
                              baudrate=m.baudrate, parity=m.parity, stopbits=m.stopbits,
                              timeout_s=m.timeout_s, retries=m.retries)
    try:
        r = meter.read()  # MeterError subclasses are EschatonErrors: one line, exit 1
    finally:
        meter.close()
    row = meter_row(m)
    row.update(voltage_v=r.voltage_v, current_a=r.current_a, power_w=r.power_w,
               import_kwh=r.import_kwh, export_kwh=r.export_kwh, read_at_ns=r.wall_ns,
               attempts=r.attempts)
    return row


def cmd_read(args: argparse.Namespace) -> list[dict[str, Any]] | dict[str, Any]:
    cfg = config_of(args)
    meters = [cfg.meter(args.name)] if args.name else list(cfg.meters)
    committed = read_committed(state_dir(cfg, datadir_of(args)))
    factors = _factors(cfg, args)
    rows = [_pulse_row(cfg, m, args, committed, factors) if isinstance(m, PulseMeterConfig)
            else _read_modbus(m) for m in meters]
    return rows[0] if args.name else rows


def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config_of(args)
    m = cfg.meter(args.name)
    if not isinstance(m, PulseMeterConfig):
        raise LocalError(f"meter {m.name!r} is a {m.type} meter; only pulse meters are calibrated")
    sdir = state_dir(cfg, datadir_of(args))
    store = CalibrationStore(sdir)
    rec = read_committed(sdir).get(m.name)
    total = 0 if rec is None else rec.total
    if args.start:
        return dict(start_run(store, m, total),
                    next=f"pass a known quantity, wait 2 s, then: eschaton meter calibrate "
                         f"{m.name} --finish --quantity <{m.unit}>")
    if args.quantity is None:
        raise LocalError("--quantity is required with --finish and --pulses")
    return finish_run(store, m, total, args.quantity, args.tolerance,
                      pulses=None if args.finish else args.pulses)
