"""Two channel endpoints wired together in memory, with controlled height (unit tier).

Persistence is modelled by keeping the last snapshot each PersistThenSend hands out, so tests can
"crash" an endpoint (rebuild it from that snapshot) and reconnect.
"""
from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel import (
    Broadcast,
    Channel,
    ChannelParams,
    FundingInput,
    Notify,
    PersistThenSend,
    Policy,
    Send,
    SignFunding,
)
from eschaton.core.channel.messages import Message


def key(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def params(**kw: Any) -> ChannelParams:
    base: dict[str, Any] = dict(opener_contribution=1_000_000, acceptor_contribution=0, lifetime=1_000,
                                locktime_step=10, fee_step=200, initial_fee=1_000, max_payment=200_000,
                                reserve=0, max_contracts=8, escrow_delta=20, safety_margin=6,
                                min_depth=1, low_switch_warning=3)
    base.update(kw)
    return ChannelParams(**base)


POLICY = Policy(min_lifetime_blocks=50, max_acceptor_contribution=10**8, min_locktime_step=1,
                min_escrow_delta=1)


@dataclass
class Side:
    ch: Channel
    priv: bytes
    wallet_priv: bytes
    snapshot: dict[str, Any] | None = None
    versions: list[Any] = field(default_factory=list)
    broadcasts: list[bytes] = field(default_factory=list)
    notes: list[Notify] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)


class Pair:
    def __init__(self, p: ChannelParams | None = None, height: int = 100, acceptor_funds: bool = False) -> None:
        self.p = p or params()
        self.height = height
        self.queue: deque[tuple[str, Message]] = deque()
        self.online = True
        a_priv, b_priv = key("a-channel"), key("b-channel")
        a_w, b_w = key("a-wallet"), key("b-wallet")
        a_in = [FundingInput("11" * 32, 0, self.p.opener_contribution + 5_000, S.p2wpkh(T.pubkey_of(a_w)))]
        a_change = [T.TxOut(4_000, S.p2wpkh(T.pubkey_of(a_w)))]
        ch_a, acts = Channel.open(channel_id=key("cid"), params=self.p, privkey=a_priv,
                                  payout_script=S.p2wpkh(T.pubkey_of(a_priv)), inputs=a_in, change=a_change,
                                  height=height)
        self.a = Side(ch_a, a_priv, a_w)
        self.run("a", acts)
        _, msg = self.queue.popleft()
        b_in: list[FundingInput] = []
        b_change: list[T.TxOut] = []
        if acceptor_funds:
            b_in = [FundingInput("22" * 32, 1, self.p.acceptor_contribution + 3_000, S.p2wpkh(T.pubkey_of(b_w)))]
            b_change = [T.TxOut(2_000, S.p2wpkh(T.pubkey_of(b_w)))]
        ch_b, acts = Channel.accept(msg, policy=POLICY, privkey=b_priv, payout_script=S.p2wpkh(T.pubkey_of(b_priv)),
                                    inputs=b_in, change=b_change, height=height)  # type: ignore[arg-type]
        self.b = Side(ch_b, b_priv, b_w)
        self.run("b", acts)
        self.flush()

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b

    def run(self, name: str, actions: list[Any]) -> None:
        s = self.side(name)
        for act in actions:
            if isinstance(act, PersistThenSend):
                s.snapshot = act.snapshot
                s.versions.extend(act.versions)
                for m in act.messages:
                    s.sent.append(m)
                    if self.online:
                        self.queue.append((name, m))
            elif isinstance(act, Send):
                s.sent.append(act.message)
                if self.online:
                    self.queue.append((name, act.message))
            elif isinstance(act, Broadcast):
                s.broadcasts.append(act.raw_tx)
            elif isinstance(act, Notify):
                s.notes.append(act)
            elif isinstance(act, SignFunding):
                tx = T.parse_tx(act.unsigned_tx)
                wit: dict[int, list[bytes]] = {}
                for i, fi in zip(act.input_indices, act.inputs, strict=True):
                    pk = T.pubkey_of(s.wallet_priv)
                    sig = T.sign_input(tx, i, S.p2wpkh_script_code(pk), fi.value, s.wallet_priv)
                    wit[i] = [sig, pk]
                self.run(name, s.ch.funding_signed(wit))

    def flush(self, limit: int = 10_000) -> None:
        n = 0
        while self.queue:
            assert n < limit, "message storm: duplicates answered with duplicates"
            sender, msg = self.queue.popleft()
            to = "b" if sender == "a" else "a"
            self.run(to, self.side(to).ch.handle(msg, self.height))
            n += 1

    def confirm_funding(self, confs: int = 1) -> None:
        for n in ("a", "b"):
            self.run(n, self.side(n).ch.on_block(self.height, confs))
        self.flush()

    def do(self, name: str, method: str, *args: Any) -> Any:
        s = self.side(name)
        res = getattr(s.ch, method)(*args, self.height)
        if isinstance(res, tuple):
            val, acts = res
            self.run(name, acts)
            self.flush()
            return val
        self.run(name, res)
        self.flush()
        return None

    def turn(self, name: str) -> None:
        """Make sure ``name`` holds the turn."""
        s = self.side(name)
        if not s.ch.have_turn:
            self.run(name, s.ch.request_turn())
            self.flush()
        assert s.ch.have_turn

    def pay(self, name: str, amount: int) -> None:
        self.turn(name)
        self.do(name, "pay", amount)

    def crash(self, name: str) -> None:
        """Rebuild ``name`` from its last persisted snapshot (everything unpersisted is lost)."""
        s = self.side(name)
        assert s.snapshot is not None
        s.ch = Channel.from_snapshot(s.snapshot, s.priv)

    def reconnect(self) -> None:
        self.queue.clear()
        self.run("a", self.a.ch.reestablish())
        self.run("b", self.b.ch.reestablish())
        self.flush()


def opened(**kw: Any) -> Pair:
    pr = Pair(**kw)
    pr.confirm_funding()
    return pr
