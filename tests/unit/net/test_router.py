"""The router: one handler per row, registered by the row's own service before the network starts;
unknown odd ids ignored and counted, unknown even ids close the link; init features gate what is
sent and which peers a service hears of. Two real sessions over the in-memory transport."""
from __future__ import annotations

import asyncio
import logging

import pytest

from eschaton.core.link.errors import PeerLacksService, PeerSentError, ProtocolViolation
from eschaton.core.wire import Message, bencode, make
from eschaton.core.wire.messages import SERVICE
from eschaton.net.router import Router, RouterError, ServiceRoutes
from eschaton.net.session import Session, dial, serve
from tests.routes import Recorder, router, rows

from .helpers import keys

A, B = keys("alice"), keys("bob")
pytestmark = pytest.mark.timeout(30)


def nothing(session: Session, msg: Message) -> None:
    pass


def every_row(service: str) -> dict:
    return {row: nothing for row in rows(service)}


# ---- registration --------------------------------------------------------------------------------
def test_a_row_has_exactly_one_handler() -> None:
    r = Router()
    r.register("echo_request", nothing)
    with pytest.raises(RouterError, match="echo_request already has a handler"):
        r.register("echo_request", nothing)
    with pytest.raises(RouterError, match="already has a handler"):  # also through a service table
        r.add(ServiceRoutes("echo", every_row("echo")))


def test_rows_are_registered_by_their_own_service_only() -> None:
    r = Router()
    with pytest.raises(RouterError, match="mg_invoice is not a row of the echo service .*microgrid"):
        r.add(ServiceRoutes("echo", {"mg_invoice": nothing}))
    with pytest.raises(RouterError, match="link control"):
        r.register("ping", nothing)
    with pytest.raises(RouterError, match="no row named"):
        r.register("mg_invoce", nothing)
    with pytest.raises(RouterError, match="no optional service"):
        r.add(ServiceRoutes("teleport", {}))
    assert r.services == ()  # nothing was registered by the refused tables


def test_a_running_service_handles_all_its_rows_and_features_seal_the_router() -> None:
    r = Router()
    r.register("echo_request", nothing)
    with pytest.raises(RouterError, match="echo service leaves rows without a handler: echo_reply"):
        _ = r.features
    r.register("echo_reply", nothing)
    r.add(ServiceRoutes("microgrid", every_row("microgrid")))
    assert r.features == {SERVICE["echo"].feature, SERVICE["microgrid"].feature}
    assert r.services == ("echo", "microgrid")
    with pytest.raises(RouterError, match="before the network starts"):
        r.add(ServiceRoutes("channel", every_row("channel")))
    assert Router().features == frozenset()  # a node without services announces none


# ---- delivery over real sessions ---------------------------------------------------------------------
async def _link(b_router: Router, a_router: Router | None = None, name: str = "r"):
    accepted: list[Session] = []
    listener = await serve(f"mem://{name}", B, router=b_router, on_session=accepted.append)
    session, task = await dial(f"mem://{name}", A, B.node_id, router=a_router)
    await session.ping()  # B's side has opened too
    return listener, session, task, accepted[0]


async def _raw(session: Session, type_id: int, body: dict) -> None:
    """White-box: send a message with any id, as a peer with another table would."""
    link = session.link
    link._out.frames.append(bytes(link._noise.encrypt(type_id.to_bytes(2, "big") + bencode.encode(body))))
    await session._flush()


def test_unknown_odd_ids_are_ignored_logged_at_debug_and_counted(caplog) -> None:
    async def main() -> None:
        b_router = router(Recorder("channel"))
        listener, session, task, served = await _link(b_router, router(Recorder("channel")), "odd")
        with caplog.at_level(logging.DEBUG, logger="eschaton.net.router"):
            await _raw(session, 0x7FFF, {"x": 1})  # in no row of the table
            # A row of a service B does not run (B's router has no echo): odd, so ignored too.
            await _raw(session, SERVICE["echo"].first_id + 1, {"nonce": 1, "payload": b""})
            await session.ping()  # flushes both, and B answers after handling them
        assert session.is_open and served.is_open
        assert b_router.stats()["ignored_messages"] == 2 and b_router.stats()["refused_messages"] == 0
        assert dict(b_router.ignored) == {0x7FFF: 1, 193: 1}
        lines = [r for r in caplog.records if "ignored message id" in r.getMessage()]
        assert len(lines) == 2 and all(r.levelno == logging.DEBUG for r in lines)
        assert "no row of this node's table" in lines[0].getMessage()
        assert "does not run the echo service" in lines[1].getMessage()
        await session.close()
        await task
        await listener.close()

    asyncio.run(main())


def test_unknown_even_id_closes_the_link_with_a_clear_error() -> None:
    async def main() -> None:
        b_router = router(Recorder("channel"))
        listener, session, task, served = await _link(b_router, None, "even")
        await _raw(session, 0x7FFE, {"x": 1})
        ev = await asyncio.wait_for(task, 5)
        assert isinstance(ev.error, PeerSentError)
        assert "message id 32766" in str(ev.error) and "even" in str(ev.error)
        assert isinstance(served.closed.result().error, ProtocolViolation)
        await listener.close()

    asyncio.run(main())


def test_unhandled_even_row_closes_the_link_naming_the_service() -> None:
    async def main() -> None:
        b_router = router(Recorder("echo"))  # B runs echo, not the microgrid
        listener, session, task, served = await _link(b_router, None, "even-row")
        # A well-formed mg_refused (even id 136), which A's own gate would not send: B does not
        # run the microgrid.
        refused = make("mg_refused", meter_id="m", reason="r", detail="d")
        await _raw(session, refused.spec.type_id, dict(refused.fields))
        ev = await asyncio.wait_for(task, 5)
        assert "does not run the microgrid service" in str(ev.error)
        assert b_router.stats()["refused_messages"] == 1
        await listener.close()

    asyncio.run(main())


def test_features_gate_sending_and_which_peers_a_service_hears_of() -> None:
    async def main() -> None:
        b_echo, b_channel = Recorder("echo"), Recorder("channel")
        a_channel = Recorder("channel")
        b_router = router(b_echo, b_channel)
        listener, session, task, served = await _link(b_router, router(a_channel), "gate")
        # A runs channel only: B's echo service never heard of A, its channel service did.
        assert b_echo.opened == [] and b_channel.opened == [served]
        assert list(b_router.peers("channel")) == [A.node_id] and b_router.peers("echo") == {}
        assert a_channel.opened == [session]
        # B may not send A an echo message: a clear error, nothing sent, the link stays.
        with pytest.raises(PeerLacksService, match=r"does not run the echo service \(no feature bit 5"):
            await served.send(make("echo_request", nonce=1, payload=b"x"))
        # A's gate lets an echo request to B through (B announced echo), but B's echo service
        # does not take it from a peer that does not run echo itself: odd, so ignored.
        await session.send(make("echo_request", nonce=2, payload=b"y"))
        await session.send(make("channel_ready", channel_id=bytes(32), body=b'{"depth":1}'))
        await session.ping()
        assert b_echo.got == [] and b_router.stats()["ignored_messages"] == 1
        assert [m.name for m in b_channel.got] == ["channel_ready"]  # the shared service works
        await session.close()
        await task
        await asyncio.sleep(0)
        assert b_router.peers("channel") == {} and b_channel.closed == [served]
        await listener.close()

    asyncio.run(main())


def test_a_handler_raising_a_remote_error_closes_the_link() -> None:
    from eschaton.errors import RemoteError

    def refuse(session: Session, msg: Message) -> None:
        raise RemoteError("echo refused: payload is rude")

    async def main() -> None:
        b_router = router(Recorder("echo", echo_request=refuse))
        listener, session, task, _ = await _link(b_router, router(Recorder("echo")), "remote-error")
        await session.send(make("echo_request", nonce=1, payload=b"rude"))
        ev = await asyncio.wait_for(task, 5)
        assert isinstance(ev.error, PeerSentError) and "payload is rude" in str(ev.error)
        await listener.close()

    asyncio.run(main())


def test_peers_follow_every_open_link_of_a_peer() -> None:
    """Two links to one peer (both sides dialled at once): closing one leaves the other listed."""
    async def main() -> None:
        b_channel = Recorder("channel")
        b_router = router(b_channel)
        listener = await serve("mem://twice", B, router=b_router)
        first, t1 = await dial("mem://twice", A, B.node_id, router=router(Recorder("channel")))
        second, t2 = await dial("mem://twice", A, B.node_id, router=router(Recorder("channel")))
        await first.ping()
        await second.ping()
        served_first, served_second = b_channel.opened
        assert b_router.peers("channel") == {A.node_id: served_second}
        await second.close()
        await t2
        await asyncio.wait_for(served_second.closed, 5)
        assert b_router.peers("channel") == {A.node_id: served_first}
        assert b_channel.closed == [served_second]
        await first.close()
        await t1
        await asyncio.wait_for(served_first.closed, 5)
        assert b_router.peers("channel") == {}
        await listener.close()

    asyncio.run(main())


def test_extension_bits_are_announced_with_their_service_and_are_not_services() -> None:
    from eschaton.core.wire.messages import EXTENSIONS
    from eschaton.net.mesh import services

    bit = next(x.feature for x in EXTENSIONS if x.name == "escrow_by_hash")
    assert router(Recorder("channel")).features == {SERVICE["channel"].feature, bit}
    assert bit not in router(Recorder("echo")).features  # only with the channel service
    assert services(frozenset({SERVICE["channel"].feature, bit})) == ["channel"]


def test_a_peer_without_escrow_rows_ignores_them_and_stays_linked() -> None:
    """escrow_fulfil and escrow_fail are odd: a peer that does not handle them (here: a node
    without the channel service, judged like a table that predates them) ignores them."""
    async def main() -> None:
        b_router = router(Recorder("echo"))
        listener, session, task, served = await _link(b_router, router(Recorder("channel")), "esc")
        from eschaton.core.wire.messages import BY_NAME

        for row in ("escrow_fulfil", "escrow_fail"):
            await _raw(session, BY_NAME[row].type_id, {"channel_id": bytes(32), "body": b"{}"})
        await session.ping()
        assert session.is_open and served.is_open
        assert b_router.stats()["ignored_messages"] == 2
        await session.close()
        await task
        await listener.close()

    asyncio.run(main())
