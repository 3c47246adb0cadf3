"""The asyncio session over the in-memory transport: routing, authorisation, errors."""
from __future__ import annotations

import asyncio
import json

import pytest

from eschaton.core.link.errors import (
    HandshakeError,
    PeerLacksService,
    PeerMismatch,
    PeerSentError,
    ProtocolViolation,
)
from eschaton.core.wire import Message
from eschaton.errors import RemoteError
from eschaton.net.router import Router
from eschaton.net.session import Session, dial, serve
from eschaton.net.transport import (
    BadTransportUrl,
    TransportError,
    connect,
    listen,
    parse_url,
)
from tests.routes import Recorder

from .helpers import keys

A, B, C = keys("alice"), keys("bob"), keys("carol")
pytestmark = pytest.mark.timeout(30)


def number(msg: Message) -> int:
    n = json.loads(msg.get_bytes("body"))["number"]
    assert isinstance(n, int)
    return n


class ChannelSide:
    """Stands in for the channel service: acks updates, refuses a bad version."""

    def __init__(self) -> None:
        self.updates: list[int] = []
        self.acks: list[int] = []
        self.service = Recorder("channel", update=self.on_update, update_ack=self.on_update_ack)
        self.router = Router()
        self.router.add(self.service.routes())

    async def on_update(self, session: Session, msg: Message) -> None:
        version = number(msg)
        if version == 666:
            raise RemoteError("version 666 is not acceptable")
        self.updates.append(version)
        await session.send_message("update_ack", channel_id=msg["channel_id"],
                                   body=json.dumps({"number": version}).encode())

    def on_update_ack(self, session: Session, msg: Message) -> None:
        self.acks.append(number(msg))


def update(version: int) -> dict:
    return dict(channel_id=bytes(32), body=json.dumps({"number": version}).encode())


async def _pair(name: str, side: ChannelSide | None = None, **serve_kw):
    accepted: list[Session] = []
    side = side or ChannelSide()
    listener = await serve(f"mem://{name}", B, router=side.router,
                           on_session=accepted.append, **serve_kw)
    return listener, accepted


def test_router_delivers_acks_and_ping() -> None:
    async def main() -> None:
        b_side, a_side = ChannelSide(), ChannelSide()
        listener, accepted = await _pair("dispatch", b_side)
        session, task = await dial("mem://dispatch", A, B.node_id, router=a_side.router)
        for v in range(1, 4):
            await session.send_message("update", **update(v))
        # The pong comes after B handled (and acked) every update, in order: no polling needed.
        assert await session.ping() >= 0
        assert a_side.acks == [1, 2, 3]
        assert b_side.updates == [1, 2, 3]
        assert accepted[0].remote == A.node_id
        # Each side's channel service heard of the other as a peer that runs it.
        assert b_side.service.opened == accepted and a_side.service.opened == [session]
        assert list(b_side.router.peers("channel")) == [A.node_id]
        await session.close()
        assert (await task).error is None
        await listener.close()

    asyncio.run(main())


def test_handler_remote_error_closes_link_with_error_message() -> None:
    async def main() -> None:
        listener, accepted = await _pair("refuse")
        session, task = await dial("mem://refuse", A, B.node_id, router=ChannelSide().router)
        await session.send_message("update", **update(666))
        ev = await asyncio.wait_for(task, 5)
        assert isinstance(ev.error, PeerSentError) and "666" in str(ev.error)
        await listener.close()

    asyncio.run(main())


def test_unauthorised_and_unexpected_peers_are_refused() -> None:
    async def main() -> None:
        listener, _ = await _pair("authz", authorize=lambda n: n == A.node_id)
        with pytest.raises(PeerSentError, match="not authorised"):
            await dial("mem://authz", C, B.node_id)
        s, t = await dial("mem://authz", A, B.node_id)
        await s.close()
        await t
        await listener.close()
        # Dialling B's address expecting C: whoever answers is not C.
        listener, _ = await _pair("wrongkey")
        with pytest.raises(HandshakeError):
            await dial("mem://wrongkey", A, C.node_id, timeout=5)
        await listener.close()
        listener, _ = await _pair("expect", expect=C.node_id)
        with pytest.raises(PeerSentError, match="expected node"):
            await dial("mem://expect", A, B.node_id)
        await listener.close()

    asyncio.run(main())


def test_a_session_without_services_announces_none_and_is_sent_none() -> None:
    async def main() -> None:
        listener, accepted = await _pair("bare")
        session, task = await dial("mem://bare", A, B.node_id)  # A runs no service
        assert session.link.peer_runs("channel") and not accepted[0].link.peer_runs("channel")
        # B sends A nothing of a service A did not announce: refused before it leaves.
        with pytest.raises(PeerLacksService, match="does not run the channel service"):
            await accepted[0].send_message("update", **update(1))
        assert accepted[0].is_open and await session.ping() >= 0
        await session.close()
        await task
        await listener.close()

    asyncio.run(main())


def test_unhandled_even_message_closes_the_link_with_a_one_line_error() -> None:
    """B runs the channel service but A announced none: B takes no channel message from A.
    ``channel_ready`` is even, so B closes the link and tells A why."""
    async def main() -> None:
        side = ChannelSide()
        listener, accepted = await _pair("even", side)
        session, task = await dial("mem://even", A, B.node_id)
        await session.send_message("update", **update(1))
        ev = await asyncio.wait_for(task, 5)
        assert isinstance(ev.error, PeerSentError)
        assert "the peer did not announce the channel service" in str(ev.error)
        assert side.updates == [] and side.router.stats()["refused_messages"] == 1
        assert isinstance(accepted[0].closed.result().error, ProtocolViolation)
        await listener.close()

    asyncio.run(main())


def test_transport_urls() -> None:
    async def main() -> None:
        with pytest.raises(BadTransportUrl, match="needs an adapter"):
            await connect("ble://aa:bb:cc:dd:ee:ff")
        with pytest.raises(BadTransportUrl, match="needs an adapter"):
            await listen("ble://", lambda s: asyncio.sleep(0))
        with pytest.raises(BadTransportUrl, match="unknown scheme"):
            await connect("carrier-pigeon://x")
        with pytest.raises(BadTransportUrl, match="port"):
            await connect("tcp://127.0.0.1")
        with pytest.raises(TransportError):
            await connect("mem://nobody-home")

    asyncio.run(main())
    u = parse_url("serial:///dev/ttyAMA0?baud=9600")
    assert (u.scheme, u.path, u.query) == ("serial", "/dev/ttyAMA0", {"baud": "9600"})
    assert parse_url("tcp://[fe80::1]:9735").host == "fe80::1"


def test_peer_mismatch_is_remote_error() -> None:
    assert issubclass(PeerMismatch, RemoteError)
