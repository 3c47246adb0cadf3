"""Durable channel updates between two processes over the node's encrypted link on loopback.

The payee is a child process (this script with ``--payee DIR``); the payer runs here. Each side
has its own ``ChannelStore`` (SQLite WAL, synchronous=FULL: fsync on every commit) and
``ChannelEndpoint``; channel messages travel as wire rows (``daemon.chanwire``) over a
Noise_XK session (``net.session``) on TCP loopback, exactly as between two nodes.

The payer keeps up to ``MAX_INFLIGHT`` payments in flight (pipelining) and signs whatever room
the window has in one group commit; each side takes the burst of messages that arrived together
in one group commit (``ChannelEndpoint.batch``). Every signature still leaves only after the
state it belongs to is fsynced, and every ack only after the payee's state is. An update counts
once the payer has the payee's ack. Prints updates/s and, from the same run, a bare ECDSA
sign+verify loop, and their ratio.

    .venv/bin/python bench/bench_channel_link.py [updates]
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from bench.baseline import sign_verify_rate  # noqa: E402
from eschaton.channel.driver import ChannelEndpoint, KeyFundingSigner  # noqa: E402
from eschaton.channel.store import ChannelStore  # noqa: E402
from eschaton.core import script as S  # noqa: E402
from eschaton.core import tx as T  # noqa: E402
from eschaton.core.channel import ChannelParams, ChannelState, FundingInput, Policy  # noqa: E402
from eschaton.core.channel.messages import Message  # noqa: E402
from eschaton.core.channel.updates import MAX_INFLIGHT  # noqa: E402
from eschaton.core.link.identity import NodeId  # noqa: E402
from eschaton.core.wire.codec import Message as WireMessage  # noqa: E402
from eschaton.daemon import chanwire  # noqa: E402
from eschaton.net.identity import load_or_create_identity  # noqa: E402
from eschaton.net.router import Router, ServiceRoutes  # noqa: E402
from eschaton.net.session import Session, dial, serve  # noqa: E402

HEIGHT = 100
CID = hashlib.sha256(b"bench-link-channel").digest()


def k(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def payout(name: str) -> bytes:
    return S.p2wpkh(T.pubkey_of(k(name)))


def endpoint(name: str, d: Path, send: Callable[[Message], None], *, fsync: bool = True) -> ChannelEndpoint:
    """One bench endpoint; this bench and ``bench_channel`` use the same keys, policy and channel."""
    return ChannelEndpoint(ChannelStore(d / f"{name}.db", fsync=fsync), lambda cid: k(f"{name}-chan"), send,
                           KeyFundingSigner([k("bench-wallet")]), Policy(max_lifetime_blocks=10**6, min_locktime_step=1))


def open_channel(ep: ChannelEndpoint, cid: bytes) -> None:
    """The opener's side of the bench channel (funding input made up: no chain in these benches)."""
    p = ChannelParams(opener_contribution=10**8, acceptor_contribution=0, lifetime=100_000, locktime_step=1,
                      fee_step=1, initial_fee=1_000, max_payment=10**6, reserve=0)
    fi = FundingInput("ab" * 32, 0, 10**8 + 10_000, S.p2wpkh(T.pubkey_of(k("bench-wallet"))))
    ep.open(channel_id=cid, params=p, payout_script=payout("a"), inputs=[fi], change=[], height=HEIGHT)


class Side:
    """One endpoint on one session: bursts of incoming messages go through one group commit."""

    def __init__(self, name: str, d: Path) -> None:
        self.name = name
        self.out: list[Message] = []
        self.ep = endpoint(name, d, self.out.append)
        self.session: Session | None = None
        self.inbox: list[Message] = []
        self.scheduled = False
        self.changed: asyncio.Event | None = None

    def router(self) -> Router:
        """The channel service's rows all land in ``on_message``; the opened link is ours."""
        router = Router()
        router.add(ServiceRoutes("channel", {row: self.on_message for row in chanwire.CHANNEL_MESSAGES},
                                 opened=self.link_opened))
        return router

    def link_opened(self, session: Session) -> None:
        self.session = session

    def on_message(self, session: Session, wm: WireMessage) -> None:
        self.inbox.append(chanwire.from_wire(wm))
        if not self.scheduled:
            # Runs once the session has dispatched every frame already read: that is the burst.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.take()))

    async def take(self) -> None:
        self.scheduled = False
        burst, self.inbox = self.inbox, []
        with self.ep.batch():
            for m in burst:
                kw = {"payout_script": payout(self.name)} if m.NAME == "open_channel" else None
                self.ep.receive(m, HEIGHT, kw)
            self.confirm_funding()
        await self.send_out()
        if self.changed is not None:
            self.changed.set()

    def confirm_funding(self) -> None:
        """Stands in for the chain (not under test here): the funding transaction confirmed."""
        for ch in self.ep.channels.values():
            if ch.state in (ChannelState.REFUND_SIGNED, ChannelState.FUNDING_BROADCAST):
                self.ep.execute(ch, ch.on_block(HEIGHT, 1))

    async def send_out(self) -> None:
        out, self.out[:] = list(self.out), []
        assert self.session is not None
        if out:
            await self.session.send_many([chanwire.to_wire(m) for m in out])


async def payee(d: Path) -> None:
    side = Side("b", d)
    keys = load_or_create_identity(d / "id")
    listener = await serve("tcp://127.0.0.1:0", keys, router=side.router())
    print(json.dumps({"url": listener.url, "id": keys.node_id.hex()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await listener.close()
    side.ep.store.close()


async def payer(d: Path, url: str, remote: NodeId, n: int, chunk: int = 16) -> float:
    side = Side("a", d)
    side.changed = asyncio.Event()
    keys = load_or_create_identity(d / "id")
    session, task = await dial(url, keys, remote, router=side.router())
    side.session = session
    open_channel(side.ep, CID)
    await side.send_out()
    ch = side.ep.channels[CID]

    async def until(cond: Callable[[], bool]) -> None:
        assert side.changed is not None
        while not cond():
            side.changed.clear()
            await asyncio.wait_for(side.changed.wait(), 30)

    await until(lambda: ch.state is ChannelState.OPEN and ch.peer_ready)
    start = ch.current.number
    t0 = time.perf_counter()
    signed = 0
    while ch.current.number - start < n:
        in_flight = ch.pending.number - ch.current.number if ch.pending is not None else 0
        room = min(MAX_INFLIGHT - in_flight, n - signed, chunk)
        if room > 0:
            # Small chunks keep both processes busy: the payee verifies one chunk while the
            # payer signs the next.
            with side.ep.batch():
                for _ in range(room):
                    side.ep.call(CID, "pay", 10, HEIGHT)
            signed += room
            await side.send_out()
            await asyncio.sleep(0)  # take any acks that arrived meanwhile
            continue
        target = ch.current.number
        await until(lambda t=target: ch.current.number > t)  # type: ignore[misc]
    rate = n / (time.perf_counter() - t0)
    await session.close()
    await task
    side.ep.store.close()
    return rate


def run(n: int, chunk: int = 16) -> float:
    """Updates/s over the link (spawns the payee process)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'firmware'}:{ROOT}")
        proc = subprocess.Popen([sys.executable, __file__, "--payee", f"{tmp}/b"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            info: dict[str, Any] = json.loads(proc.stdout.readline())
            return asyncio.run(payer(Path(tmp) / "a", info["url"], NodeId.from_hex(info["id"]), n, chunk))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--payee":
        Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
        asyncio.run(payee(Path(sys.argv[2])))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6_000
    base = sign_verify_rate(n)
    rate = run(n)
    print(f"bare sign+verify loop:                          {base:10.0f} /s")
    print(f"durable updates, 2 processes, encrypted link:  {rate:10.0f} /s   ratio {rate / base:.3f}")
    print(f"(pipelined up to {MAX_INFLIGHT} in flight, group commits, fsync before every signature and ack)")
    print("goal: >= 3,000 updates/s and >= 0.25 of bare")


if __name__ == "__main__":
    main()
