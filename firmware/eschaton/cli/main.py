"""The ``eschaton`` command line.

Rules:
- Each command group lives in its own module under ``eschaton.cli`` and exposes
  ``register(subparsers)``; this module only wires them together (thin entry point).
- A command handler returns a JSON-serialisable value. ``--json`` prints it as JSON,
  otherwise it is printed as readable text.
- Any ``EschatonError`` becomes one line on stderr and exit code 1; argument errors exit 2.
  Tracebacks are never shown for expected failures.
- The process umask is 0077 (``store.private``): whatever a command creates in a datadir,
  including the files libraries make on their own, is private to the node's user.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from eschaton.config.defaults import CLIENT_DATADIR
from eschaton.errors import EschatonError
from eschaton.store.private import set_private_umask

# Command-group modules; each defines register(subparsers) -> None.
GROUPS = ("chain", "wallet", "meter", "valve", "hw", "node", "peer", "channel", "routing", "microgrid", "stamp",
          "dht", "demo", "dashboard")

Handler = Callable[[argparse.Namespace], Any]


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits 2, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"eschaton: error: {message}\n")
        raise SystemExit(2)


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    p.add_argument("--datadir", default=None, help=f"data directory (default: $ESCHATON_DATADIR or {CLIENT_DATADIR})")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` just that group (its imports alone: the service's
    stop-post ``eschaton hw safe-state`` must start fast)."""
    parser = _Parser(prog="eschaton", description="Eschaton mesh node")
    sub = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)
    for name in GROUPS:
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(f"eschaton.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"eschaton.cli.{name}":
                continue  # group not built into this firmware
            raise
        mod.register(sub)
    return parser


def _print_human(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            print(f"{k}: {v}")
    elif isinstance(value, list):
        for item in value:
            _print_human(item)
            if isinstance(item, dict):
                print()
    else:
        print(value)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in GROUPS else None)
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.error("missing command")
        return 2
    set_private_umask()
    try:
        result = handler(args)
    except EschatonError as e:
        sys.stderr.write(f"eschaton: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        _print_human(result)
    return 0
