"""The asyncio session over the in-memory transport: dispatch, authorisation, errors."""
from __future__ import annotations

import asyncio
import json

import pytest

from eschaton.core.link.errors import HandshakeError, PeerMismatch, PeerSentError
from eschaton.core.wire import Message
from eschaton.errors import RemoteError
from eschaton.net.session import Session, dial, serve
from eschaton.net.transport import (
    BadTransportUrl,
    TransportError,
    TransportUnavailable,
    connect,
    listen,
    parse_url,
)

from .helpers import keys

A, B, C = keys("alice"), keys("bob"), keys("carol")
pytestmark = pytest.mark.timeout(30)


def number(msg: Message) -> int:
    n = json.loads(msg.get_bytes("body"))["number"]
    assert isinstance(n, int)
    return n


class ChannelHandler:
    """Stands in for the channel layer: acks updates, refuses a bad version."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.updates: list[int] = []
        self.acks: list[int] = []

    async def on_update(self, msg: Message) -> None:
        version = number(msg)
        if version == 666:
            raise RemoteError("version 666 is not acceptable")
        self.updates.append(version)
        await self.session.send_message("update_ack", channel_id=msg["channel_id"],
                                        body=json.dumps({"number": version}).encode())

    def on_update_ack(self, msg: Message) -> None:
        self.acks.append(number(msg))


def update(version: int) -> dict:
    return dict(channel_id=bytes(32), body=json.dumps({"number": version}).encode())


async def _pair(name: str, **serve_kw):
    accepted: list[Session] = []
    listener = await serve(f"mem://{name}", B, handler_factory=ChannelHandler,
                           on_session=accepted.append, **serve_kw)
    return listener, accepted


def test_dispatch_acks_and_ping() -> None:
    async def main() -> None:
        listener, accepted = await _pair("dispatch")
        session, task = await dial("mem://dispatch", A, B.node_id, handler_factory=ChannelHandler)
        for v in range(1, 4):
            await session.send_message("update", **update(v))
        # The pong comes after B handled (and acked) every update, in order: no polling needed.
        assert await session.ping() >= 0
        handler = session.handler
        assert isinstance(handler, ChannelHandler)
        assert handler.acks == [1, 2, 3]
        assert accepted[0].handler.updates == [1, 2, 3]
        assert accepted[0].remote == A.node_id
        await session.close()
        assert (await task).error is None
        await listener.close()

    asyncio.run(main())


def test_handler_remote_error_closes_link_with_error_message() -> None:
    async def main() -> None:
        listener, accepted = await _pair("refuse")
        session, task = await dial("mem://refuse", A, B.node_id, handler_factory=ChannelHandler)
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


def test_unhandled_message_gets_a_warning_and_link_stays() -> None:
    async def main() -> None:
        listener, accepted = await _pair("unhandled")
        session, task = await dial("mem://unhandled", A, B.node_id)
        await session.send_message("channel_ready", channel_id=bytes(32), body=b'{"depth":3}')
        assert await session.ping() >= 0
        assert session.is_open
        await session.close()
        await task
        await listener.close()

    asyncio.run(main())


def test_transport_urls() -> None:
    async def main() -> None:
        with pytest.raises(TransportUnavailable, match="not available in this build"):
            await connect("ble://aa:bb:cc:dd:ee:ff")
        with pytest.raises(TransportUnavailable):
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
