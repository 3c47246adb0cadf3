"""Two endpoints over real TCP on loopback: handshake and messages, in-process and across processes."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from eschaton.core.link.errors import HandshakeError, PeerSentError, VersionMismatch
from eschaton.core.link.link import LinkConfig
from eschaton.core.wire import Message
from eschaton.net.identity import load_or_create_identity
from eschaton.net.session import Session, dial, serve
from tests.routes import Recorder, router

from .procs import NodeProcess

pytestmark = pytest.mark.timeout(60)


def echo_side() -> Recorder:
    """Answers each mutual_propose with a mutual_sign; records both."""
    side: Recorder

    async def on_mutual_propose(session: Session, msg: Message) -> None:
        side.got.append(msg)
        op = json.loads(msg.get_bytes("body"))["op"]
        await session.send_message("mutual_sign", channel_id=msg["channel_id"],
                                   body=json.dumps({"op_id": op["id"]}).encode())

    side = Recorder("channel", mutual_propose=on_mutual_propose)
    return side


def _field(msg: Message, *path: str) -> int:
    value = json.loads(msg.get_bytes("body"))
    for key in path:
        value = value[key]
    assert isinstance(value, int)
    return value


def test_tcp_loopback_handshake_and_messages(tmp_path: Path) -> None:
    async def main() -> None:
        a = load_or_create_identity(tmp_path / "a")
        b = load_or_create_identity(tmp_path / "b")
        served_side, dial_side = echo_side(), echo_side()
        listener = await serve("tcp://127.0.0.1:0", b, router=router(served_side))
        assert listener.url.startswith("tcp://127.0.0.1:") and not listener.url.endswith(":0")
        session, task = await dial(listener.url, a, b.node_id, router=router(dial_side))
        assert session.remote == b.node_id and session.version == 1
        for i in range(20):
            op = {"id": i, "amount_sat": 1000 + i, "payment_hash": {"$b": "00" * 32}}
            await session.send_message("mutual_propose", channel_id=bytes(32),
                                       body=json.dumps({"op": op}).encode())
        assert await session.ping() < 5  # the pong follows every signature, handled in order
        assert [_field(m, "op_id") for m in dial_side.got] == list(range(20))
        served = next(iter(listener.sessions))
        assert served.remote == a.node_id
        assert [_field(m, "op", "amount_sat") for m in served_side.got] == [
            1000 + i for i in range(20)]
        assert await session.ping() < 5
        await session.close()
        assert (await task).error is None
        await listener.close()

    asyncio.run(main())


def test_tcp_refusals(tmp_path: Path) -> None:
    async def main() -> None:
        a = load_or_create_identity(tmp_path / "a")
        b = load_or_create_identity(tmp_path / "b")
        c = load_or_create_identity(tmp_path / "c")
        listener = await serve("tcp://127.0.0.1:0", b, config=LinkConfig(versions=(2,)),
                               authorize=lambda n: n == a.node_id)
        with pytest.raises(VersionMismatch, match="no common protocol version"):
            await dial(listener.url, a, b.node_id)
        s, t = await dial(listener.url, a, b.node_id, config=LinkConfig(versions=(1, 2)))
        assert s.version == 2
        await s.close()
        await t
        with pytest.raises(PeerSentError, match="not authorised"):
            await dial(listener.url, c, b.node_id, config=LinkConfig(versions=(2,)))
        # A expects C at B's address: B cannot decrypt message 1, nobody is fooled.
        with pytest.raises(HandshakeError):
            await dial(listener.url, a, c.node_id, config=LinkConfig(versions=(2,)), timeout=5)
        await listener.close()

    asyncio.run(main())


def _config(path: Path, datadir: Path, extra: str = "") -> Path:
    path.write_text(f"""
[node]
datadir = "{datadir}"
name = "{datadir.name}"

[network]
listen = ["tcp://127.0.0.1:0"]

[network.discovery]
enabled = false
{extra}
""")
    return path


def test_two_processes_link_over_tcp(tmp_path: Path) -> None:
    a = NodeProcess(_config(tmp_path / "a.toml", tmp_path / "a"))
    b = None
    try:
        started = a.wait_for(event="started")
        a_id, a_url = started["id"], started["listen"][0]
        assert oct(os.stat(tmp_path / "a" / "node_key").st_mode & 0o777) == "0o600"
        b = NodeProcess(_config(tmp_path / "b.toml", tmp_path / "b", f"""
[[network.peers]]
id = "{a_id}"
url = "{a_url}"
name = "a"
"""))
        b_id = b.wait_for(event="started")["id"]
        assert b.wait_for(event="link_open", id=a_id)["version"] == 1
        assert a.wait_for(event="link_open", id=b_id)
        # Kill A: B notices the link is gone.
        a.stop()
        assert b.wait_for(event="link_closed", id=a_id)
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_two_processes_dialling_each_other_keep_one_link(tmp_path: Path) -> None:
    """Both nodes list each other as static peers: they settle on the same single link."""
    from eschaton.net.identity import load_or_create_identity as ident

    ka, kb = ident(tmp_path / "a"), ident(tmp_path / "b")
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])

    def cfg(name: str, port: int, peer_id: str, peer_port: int) -> Path:
        p = tmp_path / f"{name}.toml"
        p.write_text(f"""
[node]
datadir = "{tmp_path / name}"
[network]
listen = ["tcp://127.0.0.1:{port}"]
[network.discovery]
enabled = false
[[network.peers]]
id = "{peer_id}"
url = "tcp://127.0.0.1:{peer_port}"
""")
        return p

    a = NodeProcess(cfg("a", ports[0], kb.node_id.hex(), ports[1]))
    b = NodeProcess(cfg("b", ports[1], ka.node_id.hex(), ports[0]))
    try:
        a.wait_for(event="link_open", id=kb.node_id.hex())
        b.wait_for(event="link_open", id=ka.node_id.hex())
        import time as _t

        _t.sleep(2.5)  # let any duplicate be resolved and any redial happen
        for p in (a, b):
            while not p.events.empty():
                p.seen.append(p.events.get())
        opens_a = [e for e in a.seen if e["event"] == "link_open"]
        closes_a = [e for e in a.seen if e["event"] == "link_closed"]
        assert len(opens_a) - len(closes_a) == 1, a.seen  # exactly one link left standing
        assert len(opens_a) <= 2
    finally:
        a.stop()
        b.stop()
