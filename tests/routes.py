"""Test services for the router: every row of a service recorded, some answered by the test."""
from __future__ import annotations

import asyncio
from typing import Any

from eschaton.core.wire import MESSAGES, Message
from eschaton.core.wire.messages import SERVICE_OF
from eschaton.net.router import Handler, Router, ServiceRoutes


def rows(service: str) -> list[str]:
    return [m.name for m in MESSAGES if SERVICE_OF[m.name].name == service]


class Recorder:
    """Plays one service: records every message of its rows (in ``got``, and in ``inbox`` for
    awaiting), and the sessions of peers that run it as they open (``opened``)."""

    def __init__(self, service: str, **handlers: Handler) -> None:
        self.service = service
        self.got: list[Message] = []
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.opened: list[Any] = []
        self.opened_event = asyncio.Event()
        self.closed: list[Any] = []
        self._handlers = handlers

    def _record(self, session: Any, msg: Message) -> None:
        self.got.append(msg)
        self.inbox.put_nowait(msg)

    def routes(self) -> ServiceRoutes:
        table: dict[str, Handler] = {row: self._record for row in rows(self.service)}
        for row, handler in self._handlers.items():
            table[row] = handler
        return ServiceRoutes(self.service, table, opened=self._opened,
                             closed=lambda s, ev: self.closed.append(s))

    def _opened(self, session: Any) -> None:
        self.opened.append(session)
        self.opened_event.set()


def router(*services: Recorder) -> Router:
    r = Router()
    for s in services:
        r.add(s.routes())
    return r
