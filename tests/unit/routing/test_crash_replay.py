"""Crash replay of the forwarding core: hundreds of random crashes at every action, in memory.

A line payer - n1 - n2 - payee (``Forwarder``s, real onions), over a small model of the
channels' escrows: an offer is idempotent by its name (the facade's payment id), a fulfil or a
return is durable in the channel at once, and each channel event goes to the node it concerns.
A crash of a node drops everything it had not made durable: the rest of its action batch and
every message or channel event on its way to it. Its restart rebuilds the ``Forwarder`` from
the records it persisted, ``reconcile``s with the channels (the events it lost are not sent
again), replays ``resume()``, and its predecessor resends the onion of an escrow still open
(as the service does on every link).

Each trial crashes one or two random nodes at random actions of a payment that succeeds or
fails (at n2, for lack of balance, or at the payee, for an unknown secret). After the queue
drains: no escrow is left open, every record is terminal, each hop gained exactly its fee or
nothing, and whoever paid downstream was paid upstream (no honest node loses a satoshi).
``ESCHATON_REPLAY_TRIALS`` sets the count (400 by default).
"""
from __future__ import annotations

import os
import random
from collections import deque
from dataclasses import dataclass, field

from eschaton.core.routing import forward as W
from eschaton.core.routing.route import route_onion
from tests.unit.routing.test_forward import H0, HASH, PRE, SECRET, SESSION, Line

TRIALS = int(os.environ.get("ESCHATON_REPLAY_TRIALS", "400"))
N = 4  # payer, n1, n2, payee


class _Died(Exception):
    def __init__(self, node: int) -> None:
        super().__init__(f"node {node} died")
        self.node = node


@dataclass
class Esc:
    amount: int
    state: str = "locked"  # locked, fulfilled, returned


@dataclass
class World:
    line: Line
    crash_at: set[int]
    """action numbers: the node carrying out that action dies just before it"""
    esc: list[dict[int, Esc]] = field(default_factory=lambda: [{} for _ in range(N - 1)])
    offers: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in range(N - 1)])
    durable: list[dict[str, W.Forward]] = field(default_factory=lambda: [{} for _ in range(N)])
    queue: deque[tuple[int, str, tuple[object, ...]]] = field(default_factory=deque)
    payer_packet: bytes = b""
    """The payer's onion (its attempt is durable: resent on relink)."""
    steps: int = 0
    crashes: int = 0

    # -- the channels -------------------------------------------------------------------------

    def offer(self, k: int, name: str, amount: int) -> int:
        if name in self.offers[k]:
            return self.offers[k][name]  # the same payment id: nothing locked twice
        eid = len(self.esc[k]) + 1
        self.esc[k][eid] = Esc(amount)
        self.offers[k][name] = eid
        return eid

    def incoming(self, k: int, eid: int) -> W.Incoming:
        e = self.line.edges[k]
        return W.Incoming(e.channel, eid, e.source, self.esc[k][eid].amount, HASH, self.timeouts[k], e.locktime)

    # -- nodes ----------------------------------------------------------------------------------

    def run(self, i: int, acts: list[W.FwdAction]) -> None:
        for a in acts:
            self.steps += 1
            if self.steps in self.crash_at:
                raise _Died(i)  # this action and the rest of the batch are lost with the process
            if isinstance(a, W.PersistForward):
                self.durable[i][a.record.name] = a.record
            elif isinstance(a, W.OfferDownstream):
                eid = self.offer(i, a.name, a.amount)
                self.run(i, self.line.fw[i].on_offered(a.name, a.channel, eid))
                self.queue.append((i + 1, "onion", (i, eid, a.packet)))
            elif isinstance(a, W.FulfilUpstream):
                e = self.esc[i - 1][a.escrow_id]
                if e.state == "locked":
                    e.state = "fulfilled"
                    self.queue.append((i - 1, "fulfilled", (i - 1, a.escrow_id, a.preimage)))
                    self.queue.append((i, "settled", (i - 1, a.escrow_id)))
            elif isinstance(a, W.FailUpstream):
                e = self.esc[i - 1][a.escrow_id]
                if e.state == "locked":
                    e.state = "returned"
                    self.queue.append((i - 1, "failed", (i - 1, a.escrow_id, a.failure, a.reason)))
                    self.queue.append((i, "returned", (i - 1, a.escrow_id)))
            else:  # pragma: no cover - no block passes in this model
                raise AssertionError(f"unexpected {a}")

    def crash(self, i: int) -> None:
        """Node i dies and restarts at once: only what it made durable survives."""
        while True:
            try:
                self._restart(i)
                return
            except _Died as d:  # died again while catching up
                i = d.node

    def _restart(self, i: int) -> None:
        self.crashes += 1
        self.queue = deque(m for m in self.queue if m[0] != i)  # lost in flight
        line = self.line
        line.fw[i] = W.Forwarder(line.keys[i].x25519_private(), line.fw[i].policy, line.fw[i].margins,
                                 self.durable[i].values())

        def downstream(rec: W.Forward) -> tuple[str, bytes] | None:
            e = self.esc[i].get(rec.out_escrow)
            if e is None or e.state == "locked":
                return None
            return ("fulfilled", PRE) if e.state == "fulfilled" else ("returned", b"")

        def upstream_open(rec: W.Forward) -> bool:
            return self.esc[i - 1][rec.incoming.escrow_id].state == "locked"

        self.run(i, line.fw[i].reconcile(downstream, upstream_open))
        self.run(i, line.fw[i].resume())
        self.relink(i)

    def relink(self, i: int) -> None:
        """The links of node i come back: its predecessor resends the onions of its open
        escrows, and i resends its own, each from what it holds durably (the payer's attempt,
        a hop's OFFERED record: what the service does in ``_on_link``)."""
        for k in (i - 1, i):
            if not 0 <= k < N - 1:
                continue
            for eid, e in self.esc[k].items():
                if e.state != "locked":
                    continue
                if k == 0:
                    self.queue.append((1, "onion", (0, eid, self.payer_packet)))
                    continue
                for rec in self.durable[k].values():
                    if rec.state is W.FwdState.OFFERED and rec.out_escrow == eid and rec.packet:
                        self.queue.append((k + 1, "onion", (k, eid, rec.packet)))

    def deliver(self) -> None:
        while self.queue:
            i, kind, args = self.queue.popleft()
            try:
                self._handle(i, kind, args)
            except _Died as d:
                self.crash(d.node)

    def _handle(self, i: int, kind: str, args: tuple[object, ...]) -> None:
        line = self.line
        fw = line.fw[i]
        if True:
            if kind == "onion":
                k, eid, packet = args
                assert isinstance(k, int) and isinstance(eid, int) and isinstance(packet, bytes)
                self.run(i, fw.on_incoming(self.incoming(k, eid), packet, H0, line.out_channels(i), line.payee))
            elif kind == "fulfilled" and i > 0:
                k, eid, pre = args
                self.run(i, fw.on_downstream_fulfilled(line.edges[k].channel, eid, pre))  # type: ignore[arg-type]
            elif kind == "failed" and i > 0:
                k, eid, blob, code = args
                self.run(i, fw.on_downstream_failed(line.edges[k].channel, eid, blob, code))  # type: ignore[arg-type]
            elif kind == "settled":
                k, eid = args
                self.run(i, fw.on_upstream_settled(line.edges[k].channel, eid))  # type: ignore[arg-type]
            elif kind == "returned":
                k, eid = args
                self.run(i, fw.on_upstream_returned(line.edges[k].channel, eid))  # type: ignore[arg-type]

    timeouts: tuple[int, ...] = ()


_TOTAL: dict[str, int] = {}


def _start(scenario: str, crash_at: set[int]) -> World:
    line = Line(N)
    if scenario == "no_balance":
        line.balance[line.edges[2].channel] = 10  # n2 cannot pay the payee
    route = line.route()
    secret = SECRET if scenario != "bad_secret" else b"\x99" * 32  # the payee knows no such secret
    w = World(line, crash_at)
    w.timeouts = route.timeouts
    eid = w.offer(0, "pay", route.amounts[0])
    w.payer_packet = route_onion(route, SESSION, HASH, secret)
    w.queue.append((1, "onion", (0, eid, w.payer_packet)))
    w.deliver()
    return w


def _trial(rng: random.Random, scenario: str) -> World:
    """One or two crashes at random actions (counted by a run without crashes)."""
    if scenario not in _TOTAL:
        _TOTAL[scenario] = _start(scenario, set()).steps
    return _start(scenario, {rng.randint(1, _TOTAL[scenario]) for _ in range(rng.choice((1, 1, 2)))})


def test_random_crashes_at_every_action_never_lose_a_satoshi() -> None:
    rng = random.Random(int(os.environ.get("ESCHATON_CRASH_SEED", "20261208")))
    crashes = 0
    seen = {"fulfilled": 0, "returned": 0}
    for trial in range(TRIALS):
        scenario = rng.choice(["ok", "ok", "no_balance", "bad_secret"])
        w = _trial(rng, scenario)
        crashes += w.crashes
        ctx = f"trial {trial} {scenario} crashes at {w.crash_at}"
        # Every escrow ended: fulfilled or returned, none left open (every payment ends).
        states = [[e.state for e in ch.values()] for ch in w.esc]
        assert all(s != "locked" for ch in states for s in ch), (ctx, states)
        # Nothing was locked twice on any channel.
        assert all(len(ch) <= 1 for ch in w.esc), (ctx, states)
        # The payer's outcome is the payee's: the payment completed end to end, or nowhere.
        first = states[0][0]
        seen[first] += 1
        assert first == ("fulfilled" if scenario == "ok" else "returned"), ctx
        reached = N - 1 if scenario != "no_balance" else 2  # n2 never offers to the payee
        for k in range(N - 1):
            assert states[k] == ([first] if k < reached else []), (ctx, states)
        # Every record (of every node the payment reached) is terminal, and each hop kept exactly its fee, or nothing.
        route = w.line.route()
        for i in range(1, reached + 1):
            recs = list(w.line.fw[i].records.values())
            assert len(recs) == 1 and recs[0].state in W.TERMINAL, (ctx, i, recs)
            assert w.durable[i][recs[0].name].state is recs[0].state, (ctx, i)  # durable, not just in memory
            if i < N - 1:
                gain = (route.amounts[i - 1] - route.amounts[i]) if first == "fulfilled" else 0
                got_in = w.esc[i - 1][1].state == "fulfilled"
                paid_out = w.esc[i][1].state == "fulfilled" if w.esc[i] else False
                assert (got_in and paid_out) == (gain > 0), ctx
                assert got_in or not paid_out, ctx  # paid downstream => paid upstream
    assert crashes >= TRIALS, crashes
    assert seen["fulfilled"] and seen["returned"], seen
