"""``eschaton dashboard password --config NODE.toml``: set the dashboard password of a node.

The password is read from the terminal (twice), or from standard input when it is not a
terminal (one line: for provisioning scripts). Only its scrypt hash is stored, in the file
``[dashboard] password_file`` names (0600); the running node reads it at each login, so no
restart is needed.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from eschaton.errors import LocalError


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("dashboard", help="the web dashboard: set its password")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))
    p = sub.add_parser("password", help="set the dashboard password (stored as an scrypt hash)")
    p.add_argument("--config", required=True, help="the node's TOML config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_password)


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new dashboard password: ")
    if getpass.getpass("again: ") != first:
        raise LocalError("the two passwords differ; nothing changed")
    return first


def cmd_password(args: argparse.Namespace) -> Any:
    from eschaton.config import load_config
    from eschaton.dashboard.auth import PasswordError, write_password_file

    cfg = load_config(args.config)
    if cfg.dashboard is None:
        raise LocalError(f"{cfg.source}: [dashboard] is not enabled")
    try:
        write_password_file(cfg.dashboard.password_file, _read_password())
    except PasswordError as e:
        raise LocalError(str(e)) from None
    except OSError as e:
        raise LocalError(f"cannot write {cfg.dashboard.password_file}: {e.strerror}") from None
    return {"password_file": str(cfg.dashboard.password_file)}
