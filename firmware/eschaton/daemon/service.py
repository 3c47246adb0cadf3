"""The service seam: what every part the node carries looks like, and how they are composed.

Rules / theory of operation:
- A ``Service`` has a ``name``, ``start()``, ``stop()``, ``health()`` (a small typed
  ``Health``), the API commands it owns (``commands()``: command name -> ``Command``, a typed
  handler with declared parameters) and the wire rows it owns (``routes()``, or None).
- ``Services`` composes them in the one order the composition root declares
  (``eschaton.daemon.node``): each is started in that order, and once started its wire rows go
  to the router, so the network (declared after every service with rows) announces all of them
  in its ``init``. Stop runs in reverse order.
- A start that fails stops the services already started (in reverse) and raises
  ``ServiceStartError`` naming the service; the cause is kept as ``__cause__`` so that the node
  can report it in one line. A failing ``start()`` undoes its own partial work: ``stop()`` is
  only called on services whose start completed.
- Commands are collected from every declared service before anything starts: a command name
  owned by two services is a bug in the composition root and raises ``ServiceError``. The API
  serves exactly this table, and nothing registers commands anywhere else.
- A ``stop()`` that raises is logged and the others still stop (supervision boundary).
"""
from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from eschaton.api.registry import Command
from eschaton.errors import LocalError

if TYPE_CHECKING:
    from eschaton.net.router import Router, ServiceRoutes

log = logging.getLogger("eschaton.node")


class ServiceError(LocalError):
    """A composition the seam does not allow (two owners of one command, two services of one
    name): a bug in the composition root."""


class ServiceStartError(LocalError):
    """A service failed to start; the services started before it have been stopped."""

    def __init__(self, service: str, cause: BaseException) -> None:
        super().__init__(f"{service}: {cause}")
        self.service = service


class State(enum.Enum):
    OK = "ok"
    """Started and doing its work."""
    DEGRADED = "degraded"
    """Started, but something it needs is failing (the detail says what)."""
    OFF = "off"
    """Not configured on this node: started and stopped as a no-op."""
    STOPPED = "stopped"
    """Not started yet, or stopped."""


@dataclass(frozen=True, slots=True)
class Health:
    state: State
    detail: str = ""
    """One short line for an operator, e.g. ``"3 channels, 2 peers linked"``."""

    def to_json(self) -> dict[str, str]:
        return {"state": self.state.value, "detail": self.detail}


STOPPED = Health(State.STOPPED)
OFF = Health(State.OFF, "not configured")


@runtime_checkable
class Service(Protocol):
    """One part of the node. See the module rules."""

    @property
    def name(self) -> str:
        """Unique in the node; the name ``node health`` shows."""
        ...

    async def start(self) -> None:
        """Open what the service needs; raise (after undoing its own partial work) if it cannot."""
        ...

    async def stop(self) -> None:
        """Release what ``start`` opened (stores flushed, valves safe, tasks cancelled)."""
        ...

    def health(self) -> Health:
        ...

    def commands(self) -> Mapping[str, Command]:
        """The API commands this service owns (may be empty); read before anything starts."""
        ...

    def routes(self) -> ServiceRoutes | None:
        """The wire rows this service handles, registered with the router once it started."""
        ...


class Services:
    """The node's services in their declared order (see the module rules)."""

    def __init__(self, services: Sequence[Service], router: Router | None = None) -> None:
        self.order: tuple[Service, ...] = tuple(services)
        self.router = router
        self.by_name: dict[str, Service] = {}
        self.commands: dict[str, Command] = {}
        self.owner: dict[str, str] = {}  # command name -> service name
        for svc in self.order:
            if svc.name in self.by_name:
                raise ServiceError(f"two services are named {svc.name!r}")
            self.by_name[svc.name] = svc
            for name, cmd in svc.commands().items():
                if name in self.owner:
                    raise ServiceError(f"command {name} is owned by both {self.owner[name]} and {svc.name}")
                if name != cmd.name:
                    raise ServiceError(f"{svc.name}: command {cmd.name} is listed as {name}")
                self.owner[name] = svc.name
                self.commands[name] = cmd
        self._started: list[Service] = []

    @property
    def started(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._started)

    async def start(self) -> None:
        for svc in self.order:
            try:
                await svc.start()
            except Exception as e:
                log.error("service failed to start", extra={"fields": {"service": svc.name, "error": str(e)}})
                await self.stop()
                raise ServiceStartError(svc.name, e) from e
            except BaseException:  # cancelled or interrupted: stop what started, pass it on
                await self.stop()
                raise
            self._started.append(svc)
            routes = svc.routes()
            if routes is not None and self.router is not None:
                self.router.add(routes)
            log.info("service started", extra={"fields": {"service": svc.name,
                                                          "health": svc.health().to_json()}})

    async def stop(self) -> None:
        while self._started:
            svc = self._started.pop()
            try:
                await svc.stop()
            except Exception:  # supervision boundary: keep stopping the rest
                log.exception("service %s failed to stop cleanly", svc.name)
                continue
            log.info("service stopped", extra={"fields": {"service": svc.name}})

    def health(self) -> dict[str, Health]:
        """Every declared service's health, in the declared order (STOPPED if not started)."""
        out: dict[str, Health] = {}
        for svc in self.order:
            if svc not in self._started:
                out[svc.name] = STOPPED
                continue
            try:
                out[svc.name] = svc.health()
            except Exception as e:  # supervision boundary: a broken health check is itself news
                log.exception("health of %s failed", svc.name)
                out[svc.name] = Health(State.DEGRADED, f"health check failed: {e}")
        return out
