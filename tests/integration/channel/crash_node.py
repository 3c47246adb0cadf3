"""A node process for the crash harness: two channel endpoints, each with its own durable store.

    python -m tests.integration.channel.crash_node run DIR SEED KILL_AT FUNDING_JSON
    python -m tests.integration.channel.crash_node recover DIR SEED

``run`` opens a channel and performs a seeded script (payments both ways, a burst of pipelined
payments in group commits, escrows committed and rolled back, an escrow offered by hash and
fulfilled by the payee, a re-anchor with payments both ways on the new anchor before its
transaction confirms, a cooperative close); it SIGKILLs itself at its KILL_AT-th step, a step being one
store commit or one message handed to the link (so kills land between persisting and sending,
too). Messages in flight at the kill are lost, as on a real link. After every completed
operation it prints ``AGREED <number> <opener> <acceptor>`` (the parent reads the pipe).
``recover`` reopens both stores, reconnects (reestablish), finishes the opening or closing the
crash interrupted, closes cooperatively, and prints one JSON line with what the parent needs to
settle on the real chain. KILL_AT=0 never kills and prints ``STEPS <n>``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

from eschaton.channel.driver import ChannelEndpoint, KeyFundingSigner
from eschaton.channel.store import ChannelStore
from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel import Channel, ChannelParams, ChannelState, FundingInput, Policy
from eschaton.core.channel.errors import InvalidRequest
from eschaton.core.channel.keys import derive_channel_key
from eschaton.core.channel.messages import Message
from eschaton.core.channel.versions import close_balances, close_fee

HEIGHT = 300
CID = hashlib.sha256(b"crash-channel").digest()
POLICY = Policy(min_lifetime_blocks=20, max_acceptor_contribution=10**9, min_locktime_step=1, min_escrow_delta=1)


def k(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


WALLET = k("crash-wallet")
PAYOUT = {"a": S.p2wpkh(T.pubkey_of(k("crash-payout-a"))), "b": S.p2wpkh(T.pubkey_of(k("crash-payout-b")))}


class Harness:
    def __init__(self, d: Path, kill_at: int) -> None:
        self.kill_at = kill_at
        self.steps = 0
        self.queue: deque[tuple[str, Message]] = deque()
        self.batching = False  # deliver each burst of one sender's messages in one group commit
        self.eps: dict[str, ChannelEndpoint] = {}
        for name in ("a", "b"):
            secret = k(f"crash-secret-{name}")
            store = ChannelStore(d / f"{name}.db")
            ep = ChannelEndpoint(store, lambda cid, s=secret: derive_channel_key(s, cid),  # type: ignore[misc]
                                 self._sender(name), KeyFundingSigner([WALLET]), POLICY)
            ep.after_persist = self.step
            self.eps[name] = ep

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.kill_at:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def _sender(self, name: str) -> Any:
        def send(m: Message) -> None:
            self.step()
            self.queue.append((name, m))
        return send

    def flush(self) -> None:
        budget = 10_000  # a duplicate ping-pong between the endpoints would otherwise never end
        while self.queue:
            budget -= 1
            assert budget > 0, "message storm: duplicates answered with duplicates"
            sender, m = self.queue.popleft()
            burst = [m]
            while self.batching and self.queue and self.queue[0][0] == sender:
                burst.append(self.queue.popleft()[1])
            to = "b" if sender == "a" else "a"
            with self.eps[to].batch() if self.batching else contextlib.nullcontext():
                for m in burst:
                    kw = {"payout_script": PAYOUT[to]} if m.NAME == "open_channel" else None
                    try:
                        self.eps[to].receive(m, HEIGHT, kw)
                    except InvalidRequest:
                        raise
                    except Exception as e:  # a refused duplicate after recovery is logged, not fatal
                        print(f"REFUSED {m.NAME} {type(e).__name__}: {e}", flush=True)
        for _name, ep in self.eps.items():
            for _cid, raw, label in ep.take_broadcasts():
                if label == "re-anchor":  # the parent needs it to settle on its chain
                    print(f"ANCHOR {raw.hex()}", flush=True)

    def ch(self, name: str) -> Channel | None:
        return self.eps[name].channels.get(CID)

    def confirm(self) -> None:
        for _name, ep in self.eps.items():
            ch = ep.channels.get(CID)
            if ch is not None and ch.state in (ChannelState.REFUND_SIGNED, ChannelState.FUNDING_BROADCAST):
                ep.execute(ch, ch.on_block(HEIGHT, 1))
        self.flush()

    def anchor_confirmed(self) -> None:
        """Stands in for the chain: a fully signed re-anchor transaction confirms."""
        chans = [c for c in (self.ch("a"), self.ch("b")) if c is not None]
        signed = {a["txid"] for c in chans for a in c.anchors}
        if not signed:
            return
        for _name, ep in self.eps.items():
            ch = ep.channels.get(CID)
            if ch is None:
                continue
            if ch.state is ChannelState.REANCHORING and ch.reanchor_txid() in signed:
                # The peer completed R and we never got its signature: the chain tells us.
                ep.execute(ch, ch.on_funding_spent(ch.reanchor_txid(), True, HEIGHT))
            for a in list(ch.anchors):
                txid, vout = a["spends"]
                ep.execute(ch, ch.on_old_anchor(txid, vout, a["txid"], True, HEIGHT))
        self.flush()

    def burst(self, who: str, amount: int, n: int = 4) -> None:
        """``n`` pipelined payments in one group commit, delivered and acked in group commits."""
        ep = self.eps[who]
        ch = ep.channels[CID]
        if not ch.have_turn:
            ep.execute(ch, ch.request_turn())
            self.flush()
        self.batching = True
        try:
            with ep.batch():
                for _ in range(n):
                    try:
                        ep.call(CID, "pay", amount, HEIGHT)
                    except InvalidRequest:
                        break  # more than the payer has left
            self.flush()
        finally:
            self.batching = False
        self.agreed()

    def agreed(self) -> None:
        a, b = self.ch("a"), self.ch("b")
        if a is not None and b is not None and a.current == b.current and a.state is ChannelState.OPEN:
            v = a.current
            print(f"AGREED {v.number} {v.balances[0]} {v.balances[1]}", flush=True)

    def do(self, who: str, method: str, *args: Any) -> Any:
        ep = self.eps[who]
        ch = ep.channels[CID]
        if not ch.have_turn:
            ep.execute(ch, ch.request_turn())
            self.flush()
        r = ep.call(CID, method, *args, HEIGHT)
        self.flush()
        self.agreed()
        return r


def params() -> ChannelParams:
    return ChannelParams(opener_contribution=10_000_000, acceptor_contribution=0, lifetime=HEIGHT + 200,
                         locktime_step=5, fee_step=300, initial_fee=2_000, max_payment=2_000_000, reserve=0,
                         escrow_delta=10, safety_margin=3)


def payee_secret(seed: int) -> bytes:
    """The preimage of the escrow offered by hash: b's alone (a learns it from the fulfil)."""
    return k(f"payee-secret-{seed}")


def script(seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    ops: list[tuple[str, str, int]] = []
    for _ in range(6):
        ops.append((rng.choice("ab"), "pay", rng.randint(1_000, 200_000)))
    ops.insert(rng.randint(0, len(ops)), ("a", "escrow_commit", 300_000))
    ops.insert(rng.randint(0, len(ops)), ("a", "escrow_return", 150_000))
    ops.insert(rng.randint(0, len(ops)), ("a", "escrow_fulfil", 250_000))
    # A re-anchor, payments both ways on the new anchor before its transaction confirms, and the
    # confirmation later (or never: the close then spends the unconfirmed re-anchor's output).
    at = rng.randint(0, len(ops))
    ops[at:at] = [("a", "reanchor", 1_000), ("b", "pay", rng.randint(1_000, 20_000)),
                  ("a", "pay", rng.randint(1_000, 20_000))]
    if rng.random() < 0.5:
        ops.insert(rng.randint(at + 3, len(ops)), ("a", "anchor_confirmed", 0))
    ops.insert(rng.randint(0, len(ops)), (rng.choice("ab"), "burst", rng.randint(1_000, 50_000)))
    return ops


def run(d: Path, seed: int, kill_at: int, funding: dict[str, Any]) -> None:
    h = Harness(d, kill_at)
    fi = FundingInput(funding["txid"], funding["vout"], funding["value"], S.p2wpkh(T.pubkey_of(WALLET)))
    change = [T.TxOut(funding["value"] - 10_000_000 - 2_000, S.p2wpkh(T.pubkey_of(WALLET)))]
    h.eps["a"].open(channel_id=CID, params=params(), payout_script=PAYOUT["a"], inputs=[fi], change=change,
                    height=HEIGHT)
    h.flush()
    h.confirm()
    h.agreed()
    for n, (who, op, amount) in enumerate(script(seed)):
        if op == "pay":
            try:
                h.do(who, "pay", amount)
            except InvalidRequest:
                pass  # more than the payer has: refused before anything changed
        elif op == "burst":
            h.burst(who, amount)
        elif op == "reanchor":
            h.do("a", "reanchor_channel", HEIGHT + 400, amount)
        elif op == "anchor_confirmed":
            h.anchor_confirmed()
            h.agreed()
        elif op == "escrow_commit":
            eid = h.do("a", "offer_escrow", amount, k(f"pre-{seed}-{n}"))
            h.do("a", "commit_escrow", eid)
        elif op == "escrow_fulfil":
            # Offered by hash (a never knows the preimage), fulfilled by b: a persists the
            # preimage, asks for the turn (b holds it after its own fulfil's turn request)
            # and commits.
            eid = h.do("a", "offer_escrow_hash", amount, S.sha256(payee_secret(seed)), 0)
            h.eps["b"].call(CID, "fulfil_escrow", eid, payee_secret(seed), HEIGHT)
            h.flush()
            h.do("a", "commit_fulfilled")
        else:
            eid = h.do("a", "offer_escrow", amount, k(f"pre-{seed}-{n}"))
            h.do("b", "return_escrow", eid)
    h.do("a", "close")
    if kill_at == 0:
        print(f"STEPS {h.steps}", flush=True)


def recover(d: Path, seed: int) -> None:
    h = Harness(d, 0)
    for ep in h.eps.values():
        ep.restore()
    a, b = h.ch("a"), h.ch("b")
    report: dict[str, Any] = {"channel": a is not None}
    if a is None:
        print(json.dumps(report), flush=True)
        return
    for c in (a, b):  # a re-anchor the run was killed before reporting (the watcher rebroadcasts it)
        for x in c.anchors if c is not None else []:
            print(f"ANCHOR {x['raw'].hex()}", flush=True)
    for _ in range(3):  # reconnect until quiet (each round may unblock the next)
        for _name, ep in h.eps.items():
            if CID in ep.channels:
                ep.reconnect(CID)
        h.flush()
        h.confirm()
        if seed % 2:  # half the recoveries see the re-anchor confirm; the others close on top of it
            h.anchor_confirmed()
    a, b = h.ch("a"), h.ch("b")
    assert a is not None
    if b is None or a.state in (ChannelState.PROPOSED, ChannelState.ACCEPTED):
        report["opened"] = False
        report["state_a"] = a.state.name
        print(json.dumps(report), flush=True)
        return
    report["opened"] = True
    assert a.current == b.current, (a.current, b.current)
    report["reconciled"] = a.current.to_fields()["balances"]
    report["number"] = a.current.number
    # Both sides' best versions (what each could broadcast unilaterally), for the parent to check.
    report["best_a"] = a.best_tx().hex()
    report["best_b"] = b.best_tx().hex()
    report["best_locktimes"] = [a.best.locktime if a.best else None, b.best.locktime if b.best else None]
    assert a.setup is not None
    report["capacity"] = a.setup.capacity
    report["funding"] = a.funding_tx().hex() if len(a.funding_witnesses) == len(a._all_inputs()) else None
    # Settle: commit any open escrow (a is always the payer here), then close cooperatively.
    # An escrow offered by hash whose fulfil the crash lost is fulfilled again by b first.
    if a.state is ChannelState.OPEN:
        for e in list(a.current.escrows):
            if e.payment_hash not in a.preimages:
                h.eps["b"].call(CID, "fulfil_escrow", e.id, payee_secret(seed), HEIGHT)
                h.flush()
            if any(x.id == e.id for x in a.current.escrows):
                h.do("a", "commit_fulfilled" if e.id in a.fulfilled else "commit_escrow",
                     *(() if e.id in a.fulfilled else (e.id,)))
        h.do("a", "close")
    a, b = h.ch("a"), h.ch("b")
    assert a is not None and b is not None
    # The close pays the balances plus the fee reserve back to whoever paid it (both sides
    # derived the same shares, or the close would not have been countersigned).
    assert a.current.fee_paid == b.current.fee_paid, (a.current, b.current)
    report["final"] = list(close_balances(a.params, a.current))
    assert sum(report["final"]) == a.setup.capacity - close_fee(a.params, a.current)
    report["close"] = (a.close_raw or b.close_raw).hex()
    assert report["close"], f"close did not complete: {a.state.name} {b.state.name}"
    report["states"] = [a.state.name, b.state.name]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    mode, d = sys.argv[1], Path(sys.argv[2])
    if mode == "run":
        run(d, int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5]))
    else:
        recover(d, int(sys.argv[3]))
