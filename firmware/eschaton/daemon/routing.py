"""The routing service: multi-hop payments in the node (forwarding, paying, requests, gossip).

Rules / theory of operation (the protocol is in ``eschaton.core.routing``; ``docs/multihop.md``):
- Everything money-related goes through the payments facade: outgoing escrows are
  ``offer_escrow`` (with a payment id derived from the forward or the payment, so a retry after
  a crash never locks twice), incoming ones are ``fulfil`` / ``fail``; what happens to them
  arrives as the facade's typed events (``EscrowOffered``, ``EscrowFulfilled``, ``EscrowFailed``,
  ``EscrowSettled``). No channel field is written here.
- The onion travels in ``route_onion`` as soon as the escrow it goes with is durable and sent
  (not after the successor's acknowledgement: the successor holds the onion until the escrow is
  in a version it committed, and a signed offer is never failed upstream anyway); it
  is resent on every relink while the escrow is unresolved (a receiver that crashed before
  acting on it gets it again; one that acted ignores it). A receiver acts once it has both the
  escrow (read from its channel) and the onion.
- Forwarding actions are carried out in order: ``PersistForward`` is committed (fsync) before
  the action after it starts. Offers, fulfils and fails run as tasks (they may wait for a
  channel's turn); their outcome is fed back to the forwarder.
- A failure's encrypted blob goes in ``route_fail`` before the escrow is failed; the payer reads
  it when the escrow comes back (a blob lost in a crash makes the failure unattributed: the
  payer then blames the first hop's successor).
- Paying (``pay``): find a route over the graph and our own channels, offer the first escrow,
  send the onion, wait for the preimage (complete) or the escrow's return (read the failure,
  blame, find another route), up to ``MAX_ATTEMPTS``. A payment id names one payment: a retry
  with the same id reports the stored outcome or waits for the one in flight; it never pays
  twice. Attempt ``n`` of payment ``P`` offers its escrow with the facade id ``P.n``, and the
  attempt (first channel and hop, amount, timeout, onion, session key, the hops' ids) is durable
  in ``attempts`` before its offer is signed. After a restart each open attempt is looked up in
  its channel: never signed (nothing locked) or returned, the payment fails; a preimage the
  channel holds completes it; an escrow still locked gets its onion again on every link and its
  outcome (read with the stored session key, naming the hop that failed) completes or fails the
  payment. A payment whose attempt ended that way is not retried on another route (its caller
  may pay again with a new id).
- Gossip: when one of our channels is open, its opener signs an announcement and asks the
  acceptor (``route_sign``) to add its signature; both then pass it to every peer running
  routing (``route_announce``). A received announcement is checked on chain (the funding
  outpoint unspent, its value and 2-of-2 script) and passed on once (a stale one stops). On a
  new link we send the peer every announcement we hold. Our own closed channels leave the
  graph when the channel service reports them closed.
- Requests paid: once the preimage of one of our payment requests is durable in a payee's
  forward record (FULFILLED), ``paid_listeners`` are told (hash, the request's amount, its
  description); at start they are told again of every request paid so far, so a listener that
  missed one in a crash catches up (listeners count each hash once themselves).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import Command
from eschaton.core.channel import Notify
from eschaton.core.link.identity import NodeId
from eschaton.core.routing import onion as O
from eschaton.core.routing.forward import (
    CloseUpstream,
    FailUpstream,
    Forward,
    Forwarder,
    FulfilUpstream,
    FwdAction,
    FwdState,
    Incoming,
    OfferDownstream,
    OutChannel,
    PayeeRequest,
    PersistForward,
    Reason,
)
from eschaton.core.routing.graph import BadAnnouncement, ChannelAnnouncement, FundingOutput, Graph
from eschaton.core.routing.invoice import PaymentRequest
from eschaton.core.routing.pathfind import History, find_route, retry
from eschaton.core.routing.policy import FeePolicy, Margins
from eschaton.core.routing.route import Edge, Route, route_onion, route_secrets
from eschaton.core.wire.codec import Message, make
from eschaton.daemon import faults
from eschaton.daemon.escrows import (
    EscrowFailed,
    EscrowFulfilled,
    EscrowOffered,
    EscrowSettled,
    escrow_name,
)
from eschaton.daemon.routing_store import (
    AttemptRow,
    PaymentRow,
    RequestRow,
    RoutingStore,
    SqliteGraphStore,
)
from eschaton.daemon.service import STOPPED, Health, State
from eschaton.daemon.tasks import spawn_supervised
from eschaton.errors import EschatonError, LocalError
from eschaton.net.router import ServiceRoutes

if TYPE_CHECKING:
    from eschaton.net.session import Session

log = logging.getLogger("eschaton.routing")

MAX_ATTEMPTS = 8
FINAL_DELTA = 18
"""Blocks a payee asks between the height and its escrow's timeout (its own claim on chain)."""
NODE_MARGINS = Margins(confirm=2, safety=2)
"""The node's channels give an escrow ``escrow_delta = max(2, step)`` (6 with the default step)
blocks past its version's nLockTime, and a fresh channel cannot give more (the timeout is
capped at lifetime + escrow_delta): so the margins must fit in 6 blocks, 2c + s = 6. On the
embedded chain a broadcast confirms in the next block; a node on a busy public chain needs
larger channel deltas and margins."""


class RoutingError(LocalError):
    """A payment or request the node refuses (one line)."""


def _pid(prefix: str, name: str) -> str:
    return prefix + hashlib.sha256(name.encode()).hexdigest()[:40]


class RoutingService:
    name = "routing"

    def __init__(self, node: Any, policy: FeePolicy | None = None, margins: Margins | None = None) -> None:
        self.node = node
        cfg = node.config.routing
        self.policy = policy or FeePolicy(cfg.fee_base_sat, cfg.fee_ppm, cfg.fee_hold_ppm, cfg.delta)
        self.margins = margins or NODE_MARGINS
        self.store: RoutingStore | None = None
        self.graph: Graph | None = None
        self.fw: Forwarder | None = None
        self.history = History()
        self._onions: dict[tuple[bytes, int], bytes] = {}
        self._blobs: dict[tuple[bytes, int], bytes] = {}
        self._waiters: dict[str, asyncio.Future[tuple[str, Any]]] = {}
        """Attempt id -> the attempt's outcome, for the ``pay`` waiting on it."""
        self._attempt_of: dict[tuple[bytes, int], str] = {}
        """(channel, escrow) of our own open attempts -> attempt id."""
        self._sent: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}
        """(channel, escrow) of our own attempts in flight -> (first hop, onion): resent on relink."""
        self._paying: dict[str, asyncio.Future[PaymentRow]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsub: Any = None
        self._stopped = True
        self.forwarded = 0
        self.paid_listeners: list[Callable[[bytes, int, str], None]] = []
        """Told (payment hash, amount, description) of each request of ours that was paid."""

    # --- Service ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.store = RoutingStore(Path(self.node.datadir) / "routing.db")
        self.graph = Graph(SqliteGraphStore(self.store.db))
        self.fw = Forwarder(self.node.keys.x25519_private(), self.policy, self.margins, self.store.forwards())
        ch = self.node.channels
        self._unsub = ch.payments.subscribe(self._on_payment_event)
        ch.endpoint.listeners.append(self._on_notify)
        self.node.chain.subscribe(self._on_chain)  # the backend keeps listeners for its life
        self._stopped = False
        for rec in list(self.fw.records.values()):
            if rec.final and rec.state in (FwdState.FULFILLED, FwdState.SETTLED):
                self._request_paid(rec.incoming.payment_hash)
        self._resume_attempts()
        self._reconcile_forwards()
        self._run(self.fw.resume())

    async def stop(self) -> None:
        self._stopped = True
        if self._unsub is not None:
            self._unsub()
        if self.node.channels is not None and self._on_notify in self.node.channels.endpoint.listeners:
            self.node.channels.endpoint.listeners.remove(self._on_notify)
        for t in list(self._tasks):
            t.cancel()
        if self.store is not None:
            self.store.close()
            self.store = None

    def health(self) -> Health:
        if self.fw is None or self.graph is None:
            return STOPPED
        open_fw = sum(1 for r in self.fw.records.values() if r.state not in (FwdState.SETTLED, FwdState.RETURNED))
        return Health(State.OK, f"{len(self.graph)} channels in the graph, {open_fw} forwards open, "
                                f"{self.forwarded} forwarded")

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.routing_commands import ROUTING

        return ROUTING

    def routes(self) -> ServiceRoutes:
        return ServiceRoutes("routing", {
            "route_onion": self._on_route_onion,
            "route_fail": self._on_route_fail,
            "route_sign": self._on_route_sign,
            "route_announce": self._on_route_announce,
        }, opened=self._on_link)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return int(self.node.channels.height)

    @property
    def me(self) -> bytes:
        return bytes(self.node.keys.node_id.raw)

    def _spawn(self, coro: Any, what: str) -> None:
        spawn_supervised(self._tasks, coro, log, f"routing: {what}")

    def _session(self, peer: bytes) -> Session | None:
        for nid, s in self.node.router.peers("routing").items():
            if nid.raw == peer:
                return s  # type: ignore[no-any-return]
        return None

    async def _send(self, peer: bytes, msg: Message) -> bool:
        s = self._session(peer)
        if s is None:
            return False
        try:
            await s.send(msg)
        except EschatonError as e:
            log.info("routing: %s to %s not sent: %s", msg.name, peer.hex()[:12], e)
            return False
        return True

    def _peer_of(self, cid: bytes) -> bytes | None:
        p = self.node.channels.peers.map.get(cid)
        return bytes.fromhex(p) if p else None

    def _out_channels(self) -> list[OutChannel]:
        svc = self.node.channels
        out = []
        for cid, ch in svc.endpoint.channels.items():
            peer = self._peer_of(cid)
            if peer is None or ch.state.name != "OPEN" or ch.best is None or not svc.linked(peer.hex()):
                continue
            st = ch.status(svc.height)
            room = int(st.local_balance) - int(ch.params.reserve) - int(ch.params.fee_step)
            out.append(OutChannel(cid, peer, max(0, room), int(ch.current.locktime), int(ch.params.escrow_delta)))
        return out

    def _local_edges(self) -> list[Edge]:
        svc = self.node.channels
        edges = []
        for c in self._out_channels():
            ch = svc.endpoint.channels[c.channel]
            edges.append(Edge(c.channel, self.me, c.peer, self.policy, c.locktime, c.escrow_delta, c.spendable,
                              int(ch.params.lifetime)))
        return edges

    def _payee(self, h: bytes) -> PayeeRequest | None:
        assert self.store is not None
        r = self.store.request(h)
        if r is None:
            return None
        return PayeeRequest(r.preimage, r.amount, r.secret, r.final_delta, time.time() >= r.expires)

    # --- forwarding -----------------------------------------------------------------------------

    def _run(self, acts: list[FwdAction]) -> None:
        """Carry out the forwarder's actions: persists at once (committed), the rest as tasks."""
        assert self.store is not None and self.fw is not None
        for a in acts:
            if isinstance(a, PersistForward):
                self.store.put_forward(a.record)  # autocommit, synchronous=FULL: durable here
                if a.record.final and a.record.state is FwdState.FULFILLED:
                    self._request_paid(a.record.incoming.payment_hash)
                faults.point(f"fwd.persisted.{a.record.state.name}")
            elif isinstance(a, OfferDownstream):
                self._spawn(self._offer(a), f"offer for {a.name}")
            elif isinstance(a, FulfilUpstream):
                self._spawn(self._fulfil(a), f"fulfil of {a.name}")
            elif isinstance(a, FailUpstream):
                self._spawn(self._fail(a), f"fail of {a.name}")
            elif isinstance(a, CloseUpstream):
                self._spawn(self._close(a), f"close for {a.name}")

    async def _linked(self, cid: bytes, timeout: float = 30.0) -> bool:
        """Wait (on channel and link changes, up to ``timeout``) until ``cid``'s peer is linked."""
        svc = self.node.channels
        peer = svc.peers.map.get(cid, "")
        try:
            await svc.wait_for(lambda: svc.linked(peer), f"the peer of channel {cid.hex()[:12]} to link",
                               timeout=timeout)
        except EschatonError:
            return False
        return True

    async def _offer(self, a: OfferDownstream) -> None:
        assert self.fw is not None
        svc = self.node.channels
        pid = _pid("f", a.name)
        ch = svc.endpoint.channels.get(a.channel)
        try:
            if ch is None:
                raise RoutingError(f"channel {a.channel.hex()[:12]} is gone")
            await self._linked(a.channel)
            faults.point("fwd.offering")
            # Durable and sent is enough to pass the onion on: the successor acts only once the
            # escrow is in its own committed version (it holds the onion until then).
            rec, eid = await svc.payments.offer_escrow(ch, a.amount, a.payment_hash, a.timeout, pid, acked=False)
        except EschatonError as e:
            signed = svc.payments.get("esc:" + pid)
            if signed is not None and signed.state.value != "failed":
                # Our offer is signed and out: never fail upstream now (the downstream escrow
                # may still be fulfilled). The next link to that peer offers again (same id).
                log.info("routing: offer for %s is signed, waiting for its outcome: %s", a.name, e)
                return
            self._run(self.fw.on_offer_refused(a.name, Reason.INSUFFICIENT_BALANCE, str(e)))
            return
        faults.point("fwd.offered")
        self._run(self.fw.on_offered(a.name, a.channel, eid))
        self.forwarded += 1
        peer = self._peer_of(a.channel)
        if peer is not None:
            await self._send(peer, make("route_onion", channel_id=a.channel, escrow_id=eid, onion=a.packet))

    async def _fulfil(self, a: FulfilUpstream) -> None:
        faults.point("fwd.fulfilling")
        try:
            await self.node.channels.payments.fulfil(escrow_name(a.channel, a.escrow_id), a.preimage, wait=False)
        except EschatonError as e:  # resolved already (a replay after a restart), or the channel went on chain
            log.info("routing: fulfilling %s upstream: %s", a.name, e)

    async def _fail(self, a: FailUpstream) -> None:
        assert self.fw is not None
        peer = self._peer_of(a.channel)
        await self._linked(a.channel)
        if peer is not None and a.failure:
            await self._send(peer, make("route_fail", channel_id=a.channel, escrow_id=a.escrow_id, failure=a.failure))
        faults.point("fwd.failing")
        try:
            await self.node.channels.payments.fail(escrow_name(a.channel, a.escrow_id), a.reason)
        except EschatonError as e:
            log.info("routing: failing %s: %s (tried again at the next link)", a.name, e)
            return
        self._run(self.fw.on_upstream_returned(a.channel, a.escrow_id))

    async def _close(self, a: CloseUpstream) -> None:
        svc = self.node.channels
        ch = svc.endpoint.channels.get(a.channel)
        if ch is not None and ch.state.name == "OPEN":
            log.warning("routing: closing %s on chain: %s", a.channel.hex()[:12], a.why)
            svc.endpoint.execute(ch, ch.force_close(svc.height))

    def _incoming(self, cid: bytes, eid: int) -> Incoming | None:
        ch = self.node.channels.endpoint.channels.get(cid)
        peer = self._peer_of(cid)
        if ch is None or peer is None:
            return None
        e = next((x for x in ch.current.escrows if x.id == eid and x.payer != ch.role), None)
        if e is None:
            return None
        return Incoming(cid, eid, peer, int(e.amount), bytes(e.payment_hash), int(e.timeout), int(ch.current.locktime))

    def _try_forward(self, cid: bytes, eid: int) -> None:
        assert self.fw is not None
        packet = self._onions.get((cid, eid))
        if packet is None:
            return
        inc = self._incoming(cid, eid)
        if inc is None:
            return  # the escrow is not in our current version yet: its event will come
        self._onions.pop((cid, eid), None)
        self._run(self.fw.on_incoming(inc, packet, self.height, self._out_channels(), self._payee))

    def _on_route_onion(self, session: Session, msg: Message) -> None:
        cid, eid = msg.get_bytes("channel_id"), msg.get_int("escrow_id")
        assert session.remote is not None
        if self._peer_of(cid) != session.remote.raw:
            log.info("routing: onion for channel %s from a peer that is not its peer", cid.hex()[:12])
            return
        if self.fw is not None and f"{cid.hex()}:{eid}" in self.fw.records:
            return  # acted on already (a resend after a relink)
        self._onions[(cid, eid)] = msg.get_bytes("onion")
        self._try_forward(cid, eid)

    def _on_route_fail(self, session: Session, msg: Message) -> None:
        self._blobs[(msg.get_bytes("channel_id"), msg.get_int("escrow_id"))] = msg.get_bytes("failure")

    def _on_payment_event(self, ev: Any) -> None:
        assert self.fw is not None
        if not isinstance(ev, EscrowOffered):
            faults.point("event.escrow")  # the channel's state is durable, ours not yet
        if isinstance(ev, EscrowOffered):
            self._try_forward(ev.channel_id, ev.escrow_id)
        elif isinstance(ev, EscrowFulfilled):
            key = (ev.channel_id, ev.escrow_id)
            self._run(self.fw.on_downstream_fulfilled(ev.channel_id, ev.escrow_id, ev.preimage))
            self._wake(key, ("fulfilled", ev.preimage))
        elif isinstance(ev, EscrowFailed) and ev.returned:
            key = (ev.channel_id, ev.escrow_id)
            blob = self._blobs.pop(key, b"")
            self._run(self.fw.on_downstream_failed(ev.channel_id, ev.escrow_id, blob, ev.code))
            self._wake(key, ("failed", (ev.code, blob)))
        elif isinstance(ev, EscrowSettled) and ev.role == "payee":
            self._run(self.fw.on_upstream_settled(ev.channel_id, ev.escrow_id))

    def _wake(self, key: tuple[bytes, int], outcome: tuple[str, Any]) -> None:
        aid = self._attempt_of.get(key)
        if aid is None:
            return  # not one of our attempts (a forward, or an escrow offered by hand)
        faults.point("pay.outcome")
        fut = self._waiters.get(aid)
        if fut is not None and not fut.done():
            fut.set_result(outcome)
            return
        # No pay() waits for it: an attempt that was in flight when the node stopped.
        self._finish_interrupted(aid, outcome)

    def _finish_interrupted(self, aid: str, outcome: tuple[str, Any]) -> None:
        """Complete or fail the payment of attempt ``aid`` from its escrow's outcome (see the rules)."""
        store = self.store
        att = store.attempt(aid) if store is not None else None
        if store is None or att is None:
            return
        self._attempt_of.pop((att.channel, att.escrow), None)
        self._sent.pop((att.channel, att.escrow), None)
        row = store.payment(att.payment)
        if row is not None and row.state == "pending":
            esc = escrow_name(att.channel, att.escrow) if att.escrow >= 0 else ""
            if outcome[0] == "fulfilled":
                row = replace(row, state="complete", preimage=outcome[1], escrow=esc, error="",
                              fee=att.amount - row.amount, updated=time.time())
            else:
                code, blob = outcome[1]
                secrets = O.failure_secrets(att.session, [NodeId(h).x25519() for h in att.hop_ids])
                failure = O.failure_read(secrets, blob) if blob else None
                where = f"{code} at hop {failure[0] + 1}" if failure else str(code)
                row = replace(row, state="failed", escrow=esc, updated=time.time(),
                              error=f"{where} (its attempt was interrupted by a restart; nothing was paid)")
            store.put_payment(row)
        store.put_attempt(replace(att, state="fulfilled" if outcome[0] == "fulfilled" else "failed"))

    def _reconcile_forwards(self) -> None:
        """After a restart: feed the forwarder what our channels settled while its records could
        not follow (``Forwarder.reconcile``; the channel's durable state is the truth)."""
        assert self.fw is not None
        svc = self.node.channels

        def downstream(rec: Forward) -> tuple[str, bytes] | None:
            out = svc.endpoint.channels.get(rec.out_channel)
            if out is None:
                return None
            pre = out.preimages.get(rec.incoming.payment_hash)
            if pre is not None:
                return "fulfilled", bytes(pre)
            locked = any(e.id == rec.out_escrow and e.payer == out.role for e in out.current.escrows)
            offer = svc.payments.get("esc:" + _pid("f", rec.name))
            if not locked and offer is not None and offer.state.value == "complete":
                return "returned", b""
            return None

        def upstream_open(rec: Forward) -> bool:
            ch = svc.endpoint.channels.get(rec.incoming.channel)
            eid = rec.incoming.escrow_id
            return ch is None or any(e.id == eid and e.payer != ch.role for e in ch.current.escrows)

        self._run(self.fw.reconcile(downstream, upstream_open))

    def _resume_attempts(self) -> None:
        """After a restart: settle or watch every attempt that was open (see the module rules)."""
        assert self.store is not None
        pay = self.node.channels.payments
        for att in self.store.open_attempts():
            row = self.store.payment(att.payment)
            if row is None or row.state != "pending":
                done = "fulfilled" if row is not None and row.state == "complete" else "failed"
                self.store.put_attempt(replace(att, state=done))
                continue
            signed = pay.get("esc:" + att.id)
            eid = pay.escrows.offered_id(att.id) if signed is not None else None
            if eid is None:
                # Never signed (or refused): nothing was locked.
                self._finish_interrupted(att.id, ("failed", ("interrupted before its escrow was offered", b"")))
                continue
            if att.escrow != eid:
                att = replace(att, escrow=eid)
                self.store.put_attempt(att)
            ch = self.node.channels.endpoint.channels.get(att.channel)
            preimage = ch.preimages.get(row.hash) if ch is not None else None
            locked = ch is not None and any(e.id == eid and e.payer == ch.role for e in ch.current.escrows)
            if preimage is not None:
                self._finish_interrupted(att.id, ("fulfilled", bytes(preimage)))
            elif not locked and signed.state.value == "complete":
                self._finish_interrupted(att.id, ("failed", ("returned", b"")))
            else:  # still locked (or its offer not yet acknowledged): its events will say
                self._attempt_of[(att.channel, eid)] = att.id
                self._sent[(att.channel, eid)] = (att.first, att.onion)
        # A payment pending with no attempt left open stopped between two attempts (or before
        # its first was written): nothing of it is locked anywhere.
        watched = {aid.rpartition(".")[0] for aid in self._attempt_of.values()}
        for row in self.store.payments("pending"):
            if row.id not in watched:
                self.store.put_payment(replace(row, state="failed", updated=time.time(), error=(
                    (row.error + "; " if row.error else "") + "interrupted by a restart before its next attempt was "
                    "offered; nothing of it is locked")))

    def _on_chain(self, ev: Any) -> None:
        """Each new block: a fulfilled forward whose predecessor has not committed goes on chain
        in time, a held payment too close to its timeout fails (``Forwarder.on_block``)."""
        from eschaton.chain.backend import NewTip

        if not self._stopped and self.fw is not None and isinstance(ev, NewTip):
            self._run(self.fw.on_block(int(ev.tip.height)))

    def _on_notify(self, n: Notify) -> None:
        if n.kind == "opened":
            self._spawn(self._announce(n.channel_id), "announcement")
        elif n.kind == "closed" and self.graph is not None:
            self.graph.closed(n.channel_id)

    # --- gossip ---------------------------------------------------------------------------------

    def _own_announcement(self, cid: bytes) -> ChannelAnnouncement | None:
        ch = self.node.channels.endpoint.channels.get(cid)
        peer = self._peer_of(cid)
        if ch is None or peer is None or ch.setup is None or ch.state.name != "OPEN":
            return None
        s = ch.setup
        opener = ch.role == "opener"
        n1, n2 = (self.me, peer) if opener else (peer, self.me)
        known = self.graph.store.get(cid) if self.graph is not None else None
        seq = (known.seq + 1) if known is not None else 1
        return ChannelAnnouncement(cid, bytes.fromhex(s.funding_txid), s.funding_vout, s.capacity, s.pubkeys[0],
                                   s.pubkeys[1], n1, n2, int(ch.params.lifetime), int(ch.current.locktime),
                                   int(ch.params.escrow_delta), self.policy, self.policy, seq)

    async def _announce(self, cid: bytes) -> None:
        """(opener) Sign our channel's announcement and ask the acceptor to sign it too."""
        ch = self.node.channels.endpoint.channels.get(cid)
        if ch is None or ch.role != "opener":
            return
        ann = self._own_announcement(cid)
        known = self.graph.store.get(cid) if self.graph is not None else None
        if ann is None or (known is not None and known.lifetime == ann.lifetime):
            return
        peer = self._peer_of(cid)
        assert peer is not None
        await self._send(peer, make("route_sign", announcement=ann.signed_by(self.node.keys).half_encode()))

    async def _on_route_sign(self, session: Session, msg: Message) -> None:
        """Countersign our channel's announcement if it says what we know of it. The sender's
        policy is the sender's to state; ours must be ours: if it is not (the opener cannot know
        the acceptor's), we answer with the announcement carrying our policy, signed by us only,
        and the sender countersigns that one (two rounds at most)."""
        assert session.remote is not None
        sender = session.remote.raw
        try:
            got = ChannelAnnouncement.parse(msg.get_bytes("announcement"))
        except BadAnnouncement as e:
            log.info("routing: route_sign refused: %s", e)
            return
        mine = self._own_announcement(got.channel_id)
        ends = {got.node_1, got.node_2}
        same = mine is not None and ends == {sender, self.me} and (
            (got.funding_txid, got.funding_vout, got.capacity, got.key_1, got.key_2, got.node_1, got.node_2,
             got.lifetime, got.escrow_delta)
            == (mine.funding_txid, mine.funding_vout, mine.capacity, mine.key_1, mine.key_2, mine.node_1,
                mine.node_2, mine.lifetime, mine.escrow_delta))
        if not same or mine is None or got.locktime < mine.locktime:
            log.info("routing: route_sign for %s refused: it does not match our open channel with the sender",
                     got.channel_id.hex()[:12])
            return
        first = got.node_1 == self.me
        if (got.policy_1 if first else got.policy_2) != self.policy:
            ours = replace(got, policy_1=self.policy if first else got.policy_1,
                           policy_2=got.policy_2 if first else self.policy, sig_1=b"", sig_2=b"")
            await self._send(sender, make("route_sign", announcement=ours.signed_by(self.node.keys).half_encode()))
            return
        if not got.signed_by_end(sender):
            log.info("routing: route_sign for %s refused: the sender's signature does not verify",
                     got.channel_id.hex()[:12])
            return
        await self._accept(got.signed_by(self.node.keys), None)

    async def _on_route_announce(self, session: Session, msg: Message) -> None:
        try:
            ann = ChannelAnnouncement.decode(msg.get_bytes("announcement"))
        except BadAnnouncement as e:
            log.info("routing: announcement refused: %s", e)
            return
        assert session.remote is not None
        await self._accept(ann, session.remote.raw)

    async def _accept(self, ann: ChannelAnnouncement, source: bytes | None) -> None:
        assert self.graph is not None
        from eschaton.chain.backend import OutPoint

        known = self.graph.store.get(ann.channel_id)
        if known is not None and ann.seq <= known.seq:
            return
        utxo = await self.node.chain.get_utxo(OutPoint(ann.funding_txid.hex(), ann.funding_vout))
        funding = FundingOutput(int(utxo.value), bytes(utxo.script_pubkey)) if utxo is not None else None
        verdict = self.graph.offer(ann, funding)
        if not verdict.accepted:
            if verdict.why != "stale":
                log.info("routing: announcement of %s refused: %s", ann.channel_id.hex()[:12], verdict.why)
            return
        raw = ann.encode()
        for nid, s in self.node.router.peers("routing").items():
            if nid.raw != source:
                try:
                    await s.send(make("route_announce", announcement=raw))
                except EschatonError:
                    pass  # the next link-up sends the whole graph again

    async def _on_link(self, session: Session) -> None:
        assert session.remote is not None and self.graph is not None and self.fw is not None
        peer = session.remote.raw
        for ann in self.graph.store.all():
            await session.send(make("route_announce", announcement=ann.encode()))
        svc = self.node.channels
        for cid, p in list(svc.peers.map.items()):
            if p == peer.hex():
                ch = svc.endpoint.channels.get(cid)
                if ch is not None and ch.role == "opener" and ch.state.name == "OPEN":
                    await self._announce(cid)
        # What we still owe on channels with this peer (an offer, a fulfil or a fail a crash or a
        # lost link interrupted): every action is idempotent by its record's name.
        owed: list[FwdAction] = [x for x in self.fw.resume()
                                 if not isinstance(x, PersistForward) and self._peer_of(x.channel) == peer]
        self._run(owed)
        # Onions of escrows we offered that are still unresolved: the peer may not have them.
        for (cid, eid), (first, packet) in list(self._sent.items()):
            if first == peer:
                await session.send(make("route_onion", channel_id=cid, escrow_id=eid, onion=packet))
        for rec in self.fw.records.values():
            if rec.state is FwdState.OFFERED and self._peer_of(rec.out_channel) == peer and rec.packet:
                await session.send(make("route_onion", channel_id=rec.out_channel, escrow_id=rec.out_escrow,
                                        onion=rec.packet))

    # --- payee ------------------------------------------------------------------------------------

    def _request_paid(self, h: bytes) -> None:
        """Tell the listeners that our request for ``h`` was paid (its preimage is durable)."""
        if not self.paid_listeners:
            return
        r = self.store.request(h) if self.store is not None else None
        if r is None:
            return  # a payment to our node id, or a payer-held one: no request of ours
        try:
            desc = PaymentRequest.decode(r.text).description
        except EschatonError:
            desc = ""
        for fn in list(self.paid_listeners):
            try:
                fn(h, r.amount, desc)
            except Exception:  # supervision boundary: a listener's fault must not stop forwarding
                log.exception("routing: a paid-request listener failed")

    def create_request(self, amount: int, description: str, expiry: int) -> PaymentRequest:
        assert self.store is not None
        preimage, secret = os.urandom(32), os.urandom(32)
        h = hashlib.sha256(preimage).digest()
        try:
            req = PaymentRequest.create(self.node.keys, payment_hash=h, amount=amount, created=int(time.time()),
                                        expiry=expiry, secret=secret, final_delta=FINAL_DELTA,
                                        description=description)
        except ValueError as e:
            raise RoutingError(str(e)) from None
        self.store.put_request(RequestRow(h, preimage, secret, amount, req.expires, FINAL_DELTA, req.encode()))
        return req

    # --- payer ------------------------------------------------------------------------------------

    def find(self, payee: bytes, amount: int) -> Route | None:
        assert self.graph is not None
        return find_route(self.graph.edges(), self.me, payee, amount, self.height, FINAL_DELTA, self.history,
                          local=self._local_edges(), margins=self.margins)

    async def pay(self, pid: str, payee: bytes, amount: int, payment_hash: bytes, secret: bytes,
                  preimage: bytes | None, hold: bool, max_price: int | None = None) -> PaymentRow:
        """Pay ``amount`` to ``payee`` under ``payment_hash`` (see the module rules); with
        ``max_price``, only along routes whose amount and fees stay within it (a first route
        above it is refused before anything is recorded or paid)."""
        assert self.store is not None
        known = self.store.payment(pid)
        if known is not None:
            if (known.payee, known.hash, known.amount) != (payee, payment_hash, amount):
                raise RoutingError(f"payment id {pid} is already used for {known.amount} sat to "
                                   f"{known.payee.hex()[:12]}; a new payment needs a new id")
            if known.state != "pending" or pid not in self._paying:
                return known
        if pid in self._paying:
            return await asyncio.shield(self._paying[pid])
        if known is None and max_price is not None:
            first = self.find(payee, amount)
            if first is not None and first.total > max_price:
                raise RoutingError(f"the cheapest route costs {first.total} sat ({amount} sat and "
                                   f"{first.total - amount} sat of fees), exceeds --max-price "
                                   f"{max_price} sat; nothing paid")
        now = time.time()
        row = known or PaymentRow(pid, payee, payment_hash, amount, "pending", 0, None, "", 0, "", hold,
                                  preimage, now, now)
        self.store.put_payment(row)
        fut: asyncio.Future[PaymentRow] = asyncio.get_running_loop().create_future()
        self._paying[pid] = fut

        async def run() -> PaymentRow:
            try:
                done = await self._attempts(row, secret, max_price)
                fut.set_result(done)
                return done
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved here: a later caller re-raises it
                raise
            finally:
                self._paying.pop(pid, None)
        if hold:
            # Payer-held: the payee holds the escrow until it gets the preimage from us (out of
            # band, once delivery is verified), so answer now; the attempts go on in a task.
            self._spawn(run(), f"payer-held payment {pid}")
            return row
        return await asyncio.shield(asyncio.ensure_future(run()))

    async def _attempts(self, row: PaymentRow, secret: bytes, max_price: int | None = None) -> PaymentRow:
        assert self.store is not None and self.graph is not None
        route = self.find(row.payee, row.amount)
        err = "no route"
        while route is not None and row.attempts < MAX_ATTEMPTS:
            if max_price is not None and route.total > max_price:
                err = f"no route within --max-price {max_price} sat (the next costs {route.total} sat)"
                break
            row = replace(row, attempts=row.attempts + 1, updated=time.time())
            self.store.put_payment(row)
            faults.point("pay.attempt_next")
            outcome, data, cid, eid, session = await self._attempt(row, route, secret)
            aid = f"{row.id}.{row.attempts}"
            att = self.store.attempt(aid)
            if outcome == "fulfilled":
                row = replace(row, state="complete", preimage=data, fee=route.total - row.amount,
                              escrow=escrow_name(cid, eid), error="", updated=time.time())
                self.store.put_payment(row)
                if att is not None:
                    self.store.put_attempt(replace(att, state="fulfilled"))
                return row
            code, blob = data
            failure = O.failure_read(route_secrets(route, session), blob) if blob else None
            err = f"{code} at hop {failure[0] + 1}" if failure else str(code)
            row = replace(row, error=err, escrow=escrow_name(cid, eid) if cid else "")
            self.store.put_payment(row)
            if att is not None:
                self.store.put_attempt(replace(att, state="failed"))
            log.info("routing: payment %s attempt %d failed: %s", row.id, row.attempts, err)
            route = retry(self.graph.edges(), self.me, row.payee, row.amount, self.height, FINAL_DELTA,
                          self.history, route, failure, str(code), local=self._local_edges(), margins=self.margins)
        row = replace(row, state="failed", error=err, updated=time.time())
        self.store.put_payment(row)
        return row

    async def _attempt(self, row: PaymentRow, route: Route, secret: bytes) -> tuple[str, Any, bytes, int, bytes]:
        """One try along ``route``: (outcome, preimage or (code, blob), channel, escrow id, session key).
        The attempt is durable before its escrow is offered (see the module rules)."""
        assert self.store is not None
        svc = self.node.channels
        first = route.edges[0]
        session = os.urandom(32)
        packet = route_onion(route, session, row.hash, secret)
        ch = svc.endpoint.channels.get(first.channel)
        if ch is None:
            return "failed", (Reason.NO_ROUTE.code, b""), b"", 0, session
        aid = f"{row.id}.{row.attempts}"
        att = AttemptRow(aid, row.id, first.channel, first.target, route.amounts[0], route.timeouts[0], -1, "open",
                         packet, session, b"".join(route.nodes))
        self.store.put_attempt(att)
        faults.point("pay.attempt_stored")
        fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[aid] = fut
        key: tuple[bytes, int] | None = None
        try:
            try:
                rec, eid = await svc.payments.offer_escrow(ch, route.amounts[0], row.hash, route.timeouts[0], aid,
                                                           acked=False)
            except EschatonError as e:
                signed = svc.payments.escrows.offered_id(aid)
                if signed is None:
                    self.history.fail_channel(first.channel, self.me, self.height)
                    return "failed", (f"{Reason.INSUFFICIENT_BALANCE.code}: {e}", b""), b"", 0, session
                # Signed and out: never report it failed; wait for its outcome like any other.
                log.info("routing: payment %s: offer signed, waiting for its outcome: %s", row.id, e)
                eid = signed
            key = (first.channel, eid)
            self.store.put_attempt(replace(att, escrow=eid))
            self._attempt_of[key] = aid
            self._sent[key] = (first.target, packet)
            faults.point("pay.offered")
            await self._send(first.target, make("route_onion", channel_id=first.channel, escrow_id=eid, onion=packet))
            faults.point("pay.onion_sent")
            outcome, data = await fut  # the escrow settles either way: it is never abandoned
        finally:
            self._waiters.pop(aid, None)
            if key is not None:
                self._sent.pop(key, None)
                self._attempt_of.pop(key, None)
        return outcome, data, first.channel, eid, session

    def release(self, preimage: bytes) -> int:
        """(payee) Complete the held payments under ``sha256(preimage)``; how many."""
        assert self.fw is not None
        acts = self.fw.release(hashlib.sha256(preimage).digest(), preimage)
        self._run(acts)
        return sum(1 for a in acts if isinstance(a, FulfilUpstream))

    def payment(self, pid: str) -> PaymentRow | None:
        assert self.store is not None
        return self.store.payment(pid)

    def peers_graph(self) -> list[dict[str, Any]]:
        assert self.graph is not None
        return [{"channel": a.channel_id.hex(), "node_1": a.node_1.hex(), "node_2": a.node_2.hex(),
                 "capacity_sat": a.capacity, "lifetime": a.lifetime, "locktime": a.locktime,
                 "escrow_delta": a.escrow_delta, "seq": a.seq,
                 "policy_1": _policy(a.policy_1), "policy_2": _policy(a.policy_2)} for a in self.graph.store.all()]


def _policy(p: FeePolicy) -> dict[str, int]:
    return {"base_sat": p.base, "ppm": p.ppm, "hold_ppm": p.hold_ppm, "delta": p.delta}


def node_id(text: str) -> bytes:
    try:
        return NodeId.from_hex(text).raw
    except EschatonError as e:
        raise RoutingError(str(e)) from None
