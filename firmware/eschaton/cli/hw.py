"""``eschaton hw safe-state``: every valve and relay of the config to its safe state.

The service unit runs it as ``ExecStopPost=``, which systemd runs after the node's process has
gone for any reason (an orderly stop, SIGKILL, a crash, a start that failed). It reads the config
and writes nothing; see ``eschaton.metering.safe_state``. Do not run it while the node runs: the
node owns the pins then (on a Pi the command fails with "GPIO busy" for each of them).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eschaton.cli.main import add_common
from eschaton.config.defaults import CONFIG_NAME
from eschaton.config.loader import load_metering_config
from eschaton.errors import LocalError
from eschaton.metering.cli_support import add_config_arg, datadir_of
from eschaton.metering.safe_state import drive_safe_state, has_outputs
from hw.factory import open_hardware


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("hw", help="GPIO hardware: safe state after the node stops")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))
    p = sub.add_parser("safe-state", help="close every valve and switch every relay off "
                                          "(run by the service after the node stops)")
    add_common(p)
    add_config_arg(p)
    p.set_defaults(handler=cmd_safe_state)


def cmd_safe_state(args: argparse.Namespace) -> list[dict[str, Any]]:
    path = Path(args.config) if args.config else datadir_of(args) / CONFIG_NAME
    # A meter's serial adapter may be unplugged: that must not keep a valve open.
    cfg = load_metering_config(path, check_ports=False)
    if not has_outputs(cfg):
        return []  # nothing to drive: do not even open a GPIO backend (a node with no GPIO)
    hw = open_hardware(cfg.hardware.backend, board=cfg.hardware.board)
    try:
        results = drive_safe_state(cfg, hw)
    finally:
        hw.leave_driven()  # the levels must outlive this process; see the module rules
    failed = [r for r in results if r.error is not None]
    if failed:
        raise LocalError(f"safe state not reached for {len(failed)} of {len(results)}: "
                         + "; ".join(f"{r.name}: {r.error}" for r in failed))
    return [r.row() for r in results]
