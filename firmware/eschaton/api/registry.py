"""One command registry serving both the local HTTP API and the CLI.

Rules:
- A command is an async function ``fn(node, **params) -> JSON value`` registered under a dotted
  name (``channel.pay``) in the ``CommandTable`` of the service that owns it; the node serves the
  tables of the services it runs (``eschaton.daemon.service``), no module-level registry. Its parameters are declared with types, so the API validates a request
  before calling it and the CLI builds its argparse options from the same declaration.
- Validation failures raise ``ApiError`` (a LocalError): bad input never reaches the node.
  Integers must fit 64 signed bits and numbers must be finite.
- ``cancellable``: the command may be cancelled when its caller goes away (the API client
  disconnected). Only commands written for it say so: each of their awaits is a point where
  stopping leaves nothing half done (a payment stops before it is signed, never after). Every
  other command runs to its end whether or not anyone is left to hear the answer.
"""
from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eschaton.errors import LocalError

# Integers a command accepts: what a signed 64-bit field holds. Anything larger is a mistake
# (no amount, height or id needs it) and would only fail later, deeper and less clearly.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


class ApiError(LocalError):
    pass


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: type  # int, str, bool or float
    help: str
    required: bool = True
    default: Any = None


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    params: tuple[Param, ...]
    fn: Callable[..., Awaitable[Any]]
    cancellable: bool = False

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(args, dict):
            raise ApiError("arguments must be a JSON object")
        known = {p.name for p in self.params}
        extra = set(args) - known
        if extra:
            raise ApiError(f"{self.name}: unknown argument(s) {', '.join(sorted(extra))}")
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name not in args or args[p.name] is None:
                if p.required:
                    raise ApiError(f"{self.name}: missing argument {p.name}")
                out[p.name] = p.default
                continue
            v = args[p.name]
            if p.type is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ApiError(f"{self.name}: {p.name} must be an integer")
                if not INT_MIN <= v <= INT_MAX:
                    raise ApiError(f"{self.name}: {p.name} is out of range (64-bit)")
            elif p.type is bool:
                if not isinstance(v, bool):
                    raise ApiError(f"{self.name}: {p.name} must be true or false")
            elif p.type is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                        isinstance(v, float) and not math.isfinite(v)):
                    raise ApiError(f"{self.name}: {p.name} must be a finite number")
            elif not isinstance(v, p.type):
                raise ApiError(f"{self.name}: {p.name} must be a {p.type.__name__}")
            out[p.name] = v
        return out


class CommandTable(dict[str, Command]):
    """The commands one service owns, by name, filled by its ``@TABLE.command(...)`` decorators.

    A service hands its table to the composition root (``Service.commands``), which merges the
    tables of every service it runs into the one the API serves (``eschaton.daemon.service``).
    """

    def command(self, name: str, help: str, *params: Param, cancellable: bool = False
                ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            if name in self:
                raise RuntimeError(f"command {name} registered twice")
            self[name] = Command(name, help, tuple(params), fn, cancellable)
            return fn

        return deco
