"""Two channel endpoints (own stores, own watchers) on one real embedded regtest chain.

Messages between the endpoints go through an in-memory queue (the encrypted link layer is not
under test here); everything else is real: SQLite stores with fsync, libbitcoinkernel-validated
blocks, the mempool's standardness and finality rules.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eschaton.chain.backend import OutPoint
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.channel.driver import ChannelEndpoint, KeyFundingSigner
from eschaton.channel.store import ChannelStore
from eschaton.channel.watcher import ChannelWatcher
from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel import Channel, ChannelParams, FundingInput, Policy
from eschaton.core.channel.keys import derive_channel_key
from eschaton.core.channel.messages import Message

POLICY = Policy(min_lifetime_blocks=20, max_acceptor_contribution=10**9, min_locktime_step=1,
                min_escrow_delta=1, max_capacity=10**10)


def k(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


class Node:
    def __init__(self, name: str, d: Path, chain: EmbeddedChain, send: Callable[[Message], None]) -> None:
        self.name = name
        self.dir = d
        self.secret = k(f"{name}-node-secret")
        self.wallet_key = k(f"{name}-wallet")
        self.wallet_spk = S.p2wpkh(T.pubkey_of(self.wallet_key))
        self.payout_key = k(f"{name}-payout")
        self.payout = S.p2wpkh(T.pubkey_of(self.payout_key))
        self.chain = chain
        self._send = send
        self.store = ChannelStore(d / f"{name}.db")
        self.ep = ChannelEndpoint(self.store, self.key_for, send, KeyFundingSigner([self.wallet_key]), POLICY)
        self.watcher = ChannelWatcher(chain, self.ep)

    def key_for(self, cid: bytes) -> bytes:
        return derive_channel_key(self.secret, cid)

    def restart(self) -> None:
        self.store.close()
        self.store = ChannelStore(self.dir / f"{self.name}.db")
        self.ep = ChannelEndpoint(self.store, self.key_for, self._send, KeyFundingSigner([self.wallet_key]), POLICY)
        self.ep.restore()
        self.watcher = ChannelWatcher(self.chain, self.ep)

    def funding(self, amount: int) -> tuple[list[FundingInput], list[T.TxOut]]:
        utxos = sorted(self.chain.list_unspent_sync(self.wallet_spk), key=lambda u: (u.height or 0, u.outpoint.txid))
        tip = self.chain.node.tip().height
        for u in utxos:
            if u.coinbase and u.height is not None and tip - u.height < 100:
                continue
            if u.value >= amount + 2_000:
                fi = FundingInput(u.outpoint.txid, u.outpoint.vout, u.value, self.wallet_spk)
                change = u.value - amount - 2_000  # 2,000 sat funding fee share
                return [fi], ([T.TxOut(change, self.wallet_spk)] if change > 0 else [])
        raise AssertionError(f"{self.name} has no spendable coin for {amount}")

    def paid_to_payout(self) -> int:
        return sum(u.value for u in self.chain.list_unspent_sync(self.payout))


class Net:
    def __init__(self, d: Path) -> None:
        self.chain = EmbeddedChain.open(str(d / "chain"))
        self.queue: deque[tuple[str, Message]] = deque()
        self.a = Node("a", d, self.chain, lambda m: self.queue.append(("a", m)))
        self.b = Node("b", d, self.chain, lambda m: self.queue.append(("b", m)))
        self.chain.node.mine(102, self.a.wallet_spk)
        self.chain.node.mine(2, self.b.wallet_spk)
        self.chain.node.mine(100)
        self.cid = b""
        self.refusals: list[Exception] = []

    @property
    def height(self) -> int:
        return self.chain.node.tip().height

    def node(self, name: str) -> Node:
        return self.a if name == "a" else self.b

    def flush(self) -> None:
        while self.queue:
            sender, msg = self.queue.popleft()
            to = self.b if sender == "a" else self.a
            kw = None
            if msg.NAME == "open_channel":
                inputs, change = ([], [])
                if self.accept_contribution:
                    inputs, change = to.funding(self.accept_contribution)
                kw = {"payout_script": to.payout, "inputs": inputs, "change": change}
            to.ep.receive(msg, self.height, kw)

    def open(self, *, capacity: int = 10_000_000, acceptor: int = 0, lifetime_blocks: int = 80,
             step: int = 10, escrow_delta: int = 8, **kw: Any) -> bytes:
        self.accept_contribution = acceptor
        h = self.height
        p = ChannelParams(opener_contribution=capacity, acceptor_contribution=acceptor, lifetime=h + lifetime_blocks,
                          locktime_step=step, fee_step=kw.pop("fee_step", 300), initial_fee=2_000,
                          max_payment=5_000_000,
                          reserve=kw.pop("reserve", 0), escrow_delta=escrow_delta, safety_margin=3, min_depth=1,
                          low_switch_warning=2, **kw)
        self.cid = k(f"channel-{h}-{capacity}")
        inputs, change = self.a.funding(capacity)
        self.a.ep.open(channel_id=self.cid, params=p, payout_script=self.a.payout, inputs=inputs,
                       change=change, height=h)
        self.flush()
        self.sync()
        self.mine(1)
        assert self.ch("a").state.name == "OPEN" and self.ch("b").state.name == "OPEN"
        return self.cid

    def ch(self, name: str) -> Channel:
        return self.node(name).ep.channels[self.cid]

    def sync(self) -> None:
        for _ in range(2):
            for n in (self.a, self.b):
                asyncio.run(n.watcher.sync())
            self.flush()

    def mine(self, n: int = 1) -> None:
        for _ in range(n):
            self.sync()  # broadcast whatever the channels queued since the last block
            self.chain.node.mine(1)
            self.sync()

    def mine_to(self, height: int) -> None:
        self.mine(max(0, height - self.height))

    def turn(self, name: str) -> None:
        nd = self.node(name)
        if not self.ch(name).have_turn:
            nd.ep.execute(self.ch(name), self.ch(name).request_turn())
            self.flush()
        assert self.ch(name).have_turn

    def do(self, name: str, method: str, *args: Any) -> Any:
        self.turn(name)
        r = self.node(name).ep.call(self.cid, method, *args, self.height)
        self.flush()
        return r

    def accept(self, name: str) -> None:
        nd = self.node(name)
        nd.ep.call(self.cid, "accept_proposal")
        self.flush()

    def funding_spender(self) -> str | None:
        ch = self.ch("a")
        assert ch.setup is not None
        s = self.chain.spender_sync(OutPoint(ch.setup.funding_txid, 0))
        return s.txid if s is not None and s.height is not None else None

    def close(self) -> None:
        self.chain.close_sync()
        self.a.store.close()
        self.b.store.close()
