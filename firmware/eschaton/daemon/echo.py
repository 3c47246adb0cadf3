"""The echo service in the node: ``echo(peer, payload)`` asks the peer's echo service for the
payload back and returns the round-trip time.

It is the smallest service built the way every service is: a sans-IO core
(``eschaton.core.echo``), this module (a ``Service``: start, stop, health, its API command
``peer.echo`` and its ``routes()`` table of the rows it handles), and one registration line in
the composition root's list of services (``eschaton.daemon.node``). The round trip
crosses both routers, so it shows that a peer runs the service and that its message loop
answers (a link ``ping`` is answered by the link itself). A peer that does not announce the
echo feature bit is refused before anything is sent (``PeerLacksService``).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import ApiError, Command, CommandTable, Param
from eschaton.core.echo import Echoes
from eschaton.core.wire.codec import Message, make
from eschaton.daemon.service import Health, State
from eschaton.net.router import ServiceRoutes

if TYPE_CHECKING:
    from eschaton.net.session import Session


ECHO = CommandTable()


class EchoService:
    name = "echo"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.core = Echoes()
        self._clock = clock
        self._waiting: dict[int, asyncio.Future[float]] = {}
        self.answered = 0
        """Requests from peers answered."""

    async def start(self) -> None:
        pass  # nothing to open: the router brings the peers

    async def stop(self) -> None:
        for fut in self._waiting.values():
            fut.cancel()

    def health(self) -> Health:
        return Health(State.OK, f"{self.answered} answered, {len(self._waiting)} waiting")

    def commands(self) -> Mapping[str, Command]:
        return ECHO

    def routes(self) -> ServiceRoutes:
        return ServiceRoutes("echo", {
            "echo_request": self._on_echo_request,
            "echo_reply": self._on_echo_reply,
        })

    async def echo(self, session: Session, payload: bytes = b"", timeout: float = 10.0) -> float:
        """Round-trip time in seconds of one echo through ``session``'s peer."""
        assert session.remote is not None
        nonce = self.core.request(session.remote.raw, payload, now=self._clock(), timeout=timeout)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[nonce] = fut
        try:
            await session.send(make("echo_request", nonce=nonce, payload=payload))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(nonce, None)
            self.core.cancel(nonce)

    async def _on_echo_request(self, session: Session, msg: Message) -> None:
        self.answered += 1
        await session.send(make("echo_reply", nonce=msg.get_int("nonce"),
                                payload=msg.get_bytes("payload")))

    def _on_echo_reply(self, session: Session, msg: Message) -> None:
        assert session.remote is not None
        got = self.core.on_reply(session.remote.raw, msg.get_int("nonce"), msg.get_bytes("payload"),
                                 now=self._clock())
        fut = self._waiting.get(got.nonce) if got is not None else None
        if got is not None and fut is not None and not fut.done():
            fut.set_result(got.rtt)


# --- API command ---------------------------------------------------------------------------------


@ECHO.command("peer.echo", "round trip through a linked peer's echo service",
         Param("id", str, "peer node id (64 hex digits)"),
         Param("payload", str, "text to send and get back", required=False, default=""))
async def peer_echo(node: Any, id: str, payload: str) -> dict[str, Any]:
    from eschaton.core.link.identity import NodeId
    from eschaton.errors import EschatonError

    try:
        nid = NodeId.from_hex(id)
    except Exception as e:  # typed identity errors and ValueError alike mean a bad id
        raise ApiError(f"bad node id: {e}") from e
    session = node.net.session(nid) if node.net is not None else None
    if session is None:
        raise ApiError(f"peer {nid.short()} is not linked")
    try:
        rtt = await node.service("echo").echo(session, payload.encode(), timeout=10.0)
    except TimeoutError:
        raise ApiError(f"peer {nid.short()} did not answer the echo in 10 s") from None
    except EschatonError as e:  # the peer does not run echo, the payload is too large...
        raise ApiError(str(e)) from e
    return {"id": nid.hex(), "rtt_ms": round(rtt * 1000, 3)}
