"""Nodes of different versions on one mesh: a new service (echo) that a peer can call, and an
old peer without it that stays linked.

Three network nodes in this process, linked over real TCP on loopback. A and C run the channel
and echo services; B is "old": the same code without the echo registration line. A calls C's
echo service; A's call to B is refused before anything is sent; and B, handed the echo rows
anyway (as by a peer whose table says otherwise), ignores them because their ids are odd, and
keeps its link.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.config import parse_config
from eschaton.core.link.errors import PeerLacksService
from eschaton.core.wire import encode_message, make
from eschaton.daemon.echo import EchoService
from eschaton.net.mesh import NetNode
from eschaton.net.router import Router
from tests.routes import Recorder

pytestmark = pytest.mark.timeout(60)


def config(tmp_path: Path, name: str):
    return parse_config(f"""
[node]
datadir = "{tmp_path / name}"
name = "{name}"
[network]
listen = ["tcp://127.0.0.1:0"]
[network.discovery]
enabled = false
""", f"{name}.toml")


class Peer:
    def __init__(self, with_echo: bool) -> None:
        self.channel = Recorder("channel")
        self.router = Router()
        self.router.add(self.channel.routes())
        self.echo: EchoService | None = None
        if with_echo:
            self.echo = EchoService()
            self.router.add(self.echo.routes())  # the one registration line


def test_new_service_is_callable_and_an_old_peer_ignores_it_and_stays_linked(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, c = Peer(with_echo=True), Peer(with_echo=False), Peer(with_echo=True)
        net_a = await NetNode.new(config(tmp_path, "a"), router=a.router)
        net_b = await NetNode.new(config(tmp_path, "b"), router=b.router)
        net_c = await NetNode.new(config(tmp_path, "c"), router=c.router)
        try:
            to_b = await net_a.connect(net_b.node_id, net_b.listeners[0].url)
            to_c = await net_a.connect(net_c.node_id, net_c.listeners[0].url)
            assert a.echo is not None and c.echo is not None

            # The new service, called on a peer that runs it: a round trip through C's router.
            rtt = await a.echo.echo(to_c, b"hello, c", timeout=10)
            assert rtt > 0 and c.echo.answered == 1 and a.echo.core.pending == 0

            # A knows which peers run echo, from their init.
            assert set(a.router.peers("echo")) == {net_c.node_id}
            assert set(a.router.peers("channel")) == {net_b.node_id, net_c.node_id}

            # The old peer does not announce echo: the caller gets a clear error, nothing leaves.
            with pytest.raises(PeerLacksService, match="does not run the echo service"):
                await a.echo.echo(to_b, b"hello, b", timeout=10)
            assert a.echo.core.pending == 0

            # Handed echo rows anyway (white-box: as a peer whose table says otherwise would
            # send them), the old peer ignores them (odd ids) and stays linked.
            link = to_b.link
            for msg in (make("echo_request", nonce=7, payload=b"?"),
                        make("echo_reply", nonce=7, payload=b"?")):
                link._out.frames.append(bytes(link._noise.encrypt(encode_message(msg))))
            await to_b.send_message("channel_ready", channel_id=bytes(32), body=b'{"depth":6}')
            await to_b.ping()  # B answered after handling everything before it
            assert b.router.stats()["ignored_messages"] == 2
            assert net_b.stats()["ignored_messages"] == 2
            assert [m.name for m in b.channel.got] == ["channel_ready"]
            assert to_b.is_open and net_b.session(net_a.node_id) is not None

            # And the new service keeps working beside it.
            assert await a.echo.echo(to_c, b"again", timeout=10) > 0
        finally:
            for net in (net_a, net_b, net_c):
                await net.close()

    asyncio.run(main())
