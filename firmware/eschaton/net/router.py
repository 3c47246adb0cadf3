"""The message router: which service handles which row of the wire table, and which peers run it.

Rules / theory of operation:
- A row of the table (``core/wire/messages.py``) belongs to the service whose id range holds it.
  Each service registers the rows it owns with explicit handlers, in the composition root and
  before the network starts: ``router.add(ServiceRoutes("microgrid", {"mg_invoice":
  self._on_mg_invoice, ...}, opened=self.link_up))``, or ``router.register(row, handler)`` one
  row at a time. A row has exactly one handler: registering it twice raises ``RouterError``, as
  does a link-control row (the link handles those) or a row given under another service's name.
- The services with registered rows are the services this node runs. ``features`` (read when the
  first link is built) gives their feature bits for ``init`` and seals the router: a later
  registration raises, because peers already linked were told otherwise. Sealing also checks
  that every row of a running service has a handler: a peer that sees the feature bit may send
  any of them. The bits of a running service's extensions (``messages.EXTENSIONS``: optional
  capabilities inside a service) are announced with it.
- Every session hands each decoded message to ``deliver``: a row with a handler, from a peer
  that announced the row's service, goes to that handler (sync or async; the session awaits it
  before reading the next frame). Anything else is not ours: an odd id is ignored (logged at
  debug, counted in ``stats``), an even id raises ``ProtocolViolation``, which closes the link
  with a one-line error. Ids no table row has are judged the same way by the link itself
  (``MessageIgnored``), and counted here through ``ignored``.
- ``link_opened`` / ``link_closed``: each service's hooks run only for the peers that announced
  it, so a service only ever sees peers that run it; ``peers(service)`` lists them now. A hook
  that raises is logged and does not stop the other services' hooks (supervision boundary).
"""
from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eschaton.core.link.errors import ProtocolViolation
from eschaton.core.link.identity import NodeId
from eschaton.core.link.link import LinkClosed
from eschaton.core.wire.codec import Message
from eschaton.core.wire.messages import (
    BY_NAME,
    EXTENSIONS,
    MESSAGES,
    SERVICE,
    SERVICE_OF,
    ignorable,
)
from eschaton.errors import LocalError

if TYPE_CHECKING:
    from eschaton.net.session import Session

log = logging.getLogger(__name__)

Handler = Callable[["Session", Message], Awaitable[None] | None]
"""Handles one row: ``handler(session, message)``; raise a ``RemoteError`` to close the link."""
OpenHook = Callable[["Session"], Awaitable[None] | None]
CloseHook = Callable[["Session", LinkClosed], Awaitable[None] | None]


class RouterError(LocalError):
    """A registration the table does not allow (a bug in the composition root)."""


@dataclass(frozen=True)
class ServiceRoutes:
    """One service's rows and handlers, and its link hooks (called for peers that run it)."""

    service: str
    """The service's name in ``messages.SERVICES``."""
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    """Row name -> handler, for every row of the service."""
    opened: OpenHook | None = None
    """Called when a link to a peer that runs the service opens."""
    closed: CloseHook | None = None
    """Called when that link closes."""


class Router:
    """One per node: every session of the node delivers its messages here."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._opened: dict[str, list[OpenHook]] = {}
        self._closed: dict[str, list[CloseHook]] = {}
        self._running: list[str] = []  # services in registration order (hooks run in it)
        self._links: dict[NodeId, list[Session]] = {}  # open links per peer, oldest first
        self._features: frozenset[int] | None = None
        self.ignored: Counter[int] = Counter()
        """Messages not ours with an odd id, by type id (ignored)."""
        self.refused: Counter[int] = Counter()
        """Messages not ours with an even id, by type id (each closed its link)."""

    # ---- registration (composition root) ---------------------------------------------------------
    @classmethod
    def of(cls, service: str, handler: Handler) -> Router:
        """A router running one service, every row of which goes to ``handler`` (benches, tools)."""
        router = cls()
        router.add(ServiceRoutes(service, {m.name: handler for m in MESSAGES
                                           if SERVICE_OF[m.name].name == service}))
        return router

    def register(self, row: str, handler: Handler) -> None:
        """Make ``handler`` the one handler of ``row``; its service now runs on this node."""
        if self._features is not None:
            raise RouterError(f"cannot register {row}: services must be registered before the "
                              "network starts (peers were told which ones run)")
        spec = BY_NAME.get(row)
        if spec is None:
            raise RouterError(f"no row named {row!r} in the message table")
        service = SERVICE_OF[row].name
        if SERVICE[service].feature is None:
            raise RouterError(f"{row} is link control: the link handles it")
        if row in self._handlers:
            raise RouterError(f"{row} already has a handler ({_name(self._handlers[row])}); "
                              "a row has exactly one")
        self._handlers[row] = handler
        self._run(service)

    def on_link(self, service: str, opened: OpenHook | None = None,
                closed: CloseHook | None = None) -> None:
        """Hooks called for each link to a peer that runs ``service``."""
        if service not in SERVICE or SERVICE[service].feature is None:
            raise RouterError(f"no optional service named {service!r} in the table")
        if self._features is not None:
            raise RouterError(f"cannot add hooks of {service} once the network started")
        if opened is not None:
            self._opened.setdefault(service, []).append(opened)
        if closed is not None:
            self._closed.setdefault(service, []).append(closed)
        self._run(service)

    def add(self, routes: ServiceRoutes) -> None:
        """Register one service's table of handlers and its link hooks."""
        for row in routes.handlers:
            owner = SERVICE_OF[row].name if row in SERVICE_OF else None
            if owner != routes.service:
                raise RouterError(f"{row} is not a row of the {routes.service} service"
                                  + (f" (it belongs to {owner})" if owner else ""))
        for row, handler in routes.handlers.items():
            self.register(row, handler)
        self.on_link(routes.service, routes.opened, routes.closed)

    def _run(self, service: str) -> None:
        if service not in self._running:
            self._running.append(service)

    @property
    def features(self) -> frozenset[int]:
        """Feature bits of the services this node runs (seals the router)."""
        if self._features is None:
            for service in self._running:
                missing = [m.name for m in MESSAGES
                           if SERVICE_OF[m.name].name == service and m.name not in self._handlers]
                if missing:
                    raise RouterError(f"the {service} service leaves rows without a handler: "
                                      f"{', '.join(missing)}")
            bits = {f for f in (SERVICE[s].feature for s in self._running) if f is not None}
            # The optional capabilities of the services that run (``messages.EXTENSIONS``).
            bits.update(x.feature for x in EXTENSIONS if x.service in self._running)
            self._features = frozenset(bits)
        return self._features

    @property
    def services(self) -> tuple[str, ...]:
        """Names of the services this node runs, in registration order."""
        return tuple(self._running)

    def handler(self, row: str) -> Handler | None:
        """The handler registered for ``row`` (for status pages and tests)."""
        return self._handlers.get(row)

    # ---- peers -----------------------------------------------------------------------------------
    def peers(self, service: str) -> dict[NodeId, Session]:
        """The newest open link to each peer that announced ``service``, if this node runs it."""
        if service not in self._running:
            return {}
        return {peer: links[-1] for peer, links in self._links.items()
                if links and links[-1].link.peer_runs(service)}

    async def link_opened(self, session: Session) -> None:
        assert session.remote is not None
        self._links.setdefault(session.remote, []).append(session)
        for service in self._running:
            if session.link.peer_runs(service):
                for hook in self._opened.get(service, ()):
                    await _supervised(hook, f"{service} link-open hook", session)

    async def link_closed(self, session: Session, event: LinkClosed) -> None:
        remote = session.remote
        links = self._links.get(remote) if remote is not None else None
        if remote is None or links is None or session not in links:
            return  # it never opened: no service heard of it
        links.remove(session)
        if not links:
            del self._links[remote]
        for service in self._running:
            if session.link.peer_runs(service):
                for hook in self._closed.get(service, ()):
                    await _supervised(hook, f"{service} link-closed hook", session, event)

    # ---- delivery --------------------------------------------------------------------------------
    async def deliver(self, session: Session, msg: Message) -> None:
        """Hand ``msg`` to its handler, or ignore (odd) or refuse (even) it."""
        handler = self._handlers.get(msg.name)
        service = SERVICE_OF[msg.name].name
        if handler is None:
            self._not_ours(session, msg.spec.type_id, f"{msg.name}: this node does not run the "
                                                      f"{service} service")
            return
        if not session.link.peer_runs(service):
            self._not_ours(session, msg.spec.type_id, f"{msg.name}: the peer did not announce "
                                                      f"the {service} service")
            return
        result = handler(session, msg)
        if inspect.isawaitable(result):
            await result

    def ignored_unknown(self, session: Session, type_id: int) -> None:
        """The link ignored an odd id no row has (a newer peer's message): count it."""
        self._not_ours(session, type_id, "no row of this node's table has it")

    def _not_ours(self, session: Session, type_id: int, why: str) -> None:
        who = session.remote.short() if session.remote is not None else "?"
        if ignorable(type_id):
            self.ignored[type_id] += 1
            log.debug("ignored message id %d from %s (%s)", type_id, who, why)
            return
        self.refused[type_id] += 1
        raise ProtocolViolation(f"message id {type_id} refused ({why}); even ids may not be ignored")

    def stats(self) -> dict[str, Any]:
        """Counts of messages ignored (odd) and refused (even) since start, and services run."""
        return {"services": list(self._running), "ignored_messages": sum(self.ignored.values()),
                "refused_messages": sum(self.refused.values())}


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", type(fn).__name__))


async def _supervised(hook: Callable[..., Awaitable[None] | None], what: str, *args: Any) -> None:
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:  # supervision boundary: one service's broken hook must not stop the others
        log.exception("%s failed", what)
