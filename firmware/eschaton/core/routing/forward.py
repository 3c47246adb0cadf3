"""Forwarding: an incoming escrow and its onion become an outgoing escrow under the same hash.

Rules / theory of operation:
- One ``Forward`` record per incoming escrow (named by its channel and escrow id). Its state is
  an enum with a declared transition table; an illegal transition raises ``IllegalTransition``.

      ACCEPTED ─► OFFERED ─► FULFILLED ─► SETTLED
         │  │        │
         │  └─► HELD ┼─► FULFILLED (payee, payer-held preimage released)
         └───────────┴─► FAILED ─► RETURNED

- Every method returns actions. ``PersistForward(record)`` always comes first when the record
  changed: the adapter makes it durable before it carries out anything after it (persist, then
  act: a crash between the two replays the action from the record, ``resume()``). Every action
  is idempotent by the record's name.
- Incoming (``on_incoming``): peel the onion (``BadOnion``: fail ``bad_onion``). A forwarding
  hop checks, in this order, and fails upstream with the first reason that applies:
  - ``expired``: the incoming timeout leaves fewer than ``margins.upstream_room()`` blocks above
    the height;
  - ``timeout_too_low``: the onion's outgoing timeout is above ``incoming timeout - delta``, or
    the incoming timeout is less than ``upstream_room()`` past the nLockTime of the version that
    holds it (we could not get that version and our claim confirmed before the payer reclaims);
  - ``fee_too_low``: incoming amount - outgoing amount is below ``policy.fee_at(...)``;
  - ``no_route``: no open channel to the successor;
  - ``timeout_too_low`` again if the outgoing timeout is below the successor channel's current
    nLockTime + its ``escrow_delta`` (the successor could not claim on chain in time: the
    channel core refuses such an offer anyway);
  - ``insufficient_balance``: no channel to the successor can spend the amount.
  Then it persists ACCEPTED and asks the adapter to ``OfferDownstream`` on the chosen channel.
- The payee (the onion says final) checks the escrow against its request: the 32 secret bytes of
  its layer are the payment secret of a request it issued for the hash (``PayeeRequest``), or
  the preimage itself (a payment to a node id: the payer chose it), or zeros (payer-held: the
  payer reveals the preimage once delivery is verified; the payee holds the escrow until then,
  HELD). Unknown hash or wrong secret: ``unknown_payee``; amount below the onion's or the
  request's: ``fee_too_low``; timeout below ``height + final_delta``: ``timeout_too_low``; an
  expired request: ``expired``.
- Downstream fulfilled (``on_downstream_fulfilled``): the preimage is persisted in FULFILLED
  before ``FulfilUpstream`` (commit upstream as soon as it is known). Downstream failed: the
  failure blob gets our onion layer and goes upstream (``FailUpstream``), FAILED. Failures roll
  back hop by hop from the one that failed to the payer.
- ``on_upstream_settled`` / ``on_upstream_returned``: the upstream escrow was committed to us /
  returned: SETTLED / RETURNED, terminal.
- ``on_block``: a FULFILLED record whose upstream escrow is still open ``margins.upstream_room()``
  blocks before its timeout asks the adapter to ``CloseUpstream`` (claim on chain with the
  preimage, which the channel already holds durably); a HELD record as close to its timeout is
  failed ``expired`` (the payer never released the preimage).
- Nothing here reads a clock or the chain: heights come in as arguments, channels as a list.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from eschaton.core.routing import onion as O
from eschaton.core.routing.policy import FeePolicy, Margins
from eschaton.errors import EschatonError


class IllegalTransition(EschatonError):
    """A forwarding record was asked to move where its table does not allow."""


class FwdState(Enum):
    ACCEPTED = "ACCEPTED"
    HELD = "HELD"
    OFFERED = "OFFERED"
    FULFILLED = "FULFILLED"
    SETTLED = "SETTLED"
    FAILED = "FAILED"
    RETURNED = "RETURNED"


F = FwdState
TRANSITIONS: dict[FwdState, frozenset[FwdState]] = {
    F.ACCEPTED: frozenset({F.OFFERED, F.HELD, F.FULFILLED, F.FAILED}),
    F.HELD: frozenset({F.FULFILLED, F.FAILED}),
    F.OFFERED: frozenset({F.FULFILLED, F.FAILED}),
    F.FULFILLED: frozenset({F.SETTLED}),
    F.FAILED: frozenset({F.RETURNED}),
    F.SETTLED: frozenset(),
    F.RETURNED: frozenset(),
}
TERMINAL = frozenset({F.SETTLED, F.RETURNED})


class Reason(Enum):
    """Why a payment failed at a hop (the code in ``escrow_fail`` and in the failure blob)."""

    NO_ROUTE = 1
    INSUFFICIENT_BALANCE = 2
    FEE_TOO_LOW = 3
    TIMEOUT_TOO_LOW = 4
    UNKNOWN_PAYEE = 5
    EXPIRED = 6
    BAD_ONION = 7

    @property
    def code(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Incoming:
    """An escrow offered to us by hash (what the payments facade's ``EscrowOffered`` says)."""

    channel: bytes
    escrow_id: int
    peer: bytes
    amount: int
    payment_hash: bytes
    timeout: int
    locktime: int
    """nLockTime of the version holding the escrow (an upper bound will do: the channel's current)."""

    @property
    def name(self) -> str:
        return f"{self.channel.hex()}:{self.escrow_id}"


@dataclass(frozen=True, slots=True)
class OutChannel:
    """A channel we could offer the outgoing escrow on, as the adapter sees it now."""

    channel: bytes
    peer: bytes
    spendable: int
    locktime: int
    """nLockTime of the channel's current version (a new one can only be earlier)."""
    escrow_delta: int


@dataclass(frozen=True, slots=True)
class PayeeRequest:
    """A payment request we issued (the payee's side), looked up by payment hash."""

    preimage: bytes
    amount: int
    secret: bytes
    final_delta: int
    expired: bool


@dataclass(frozen=True, slots=True)
class Forward:
    """The durable record of one incoming escrow and what became of it."""

    incoming: Incoming
    state: FwdState
    amount_out: int = 0
    timeout_out: int = 0
    next_node: bytes = b""
    out_channel: bytes = b""
    out_escrow: int = 0
    packet: bytes = b""
    """The onion for the successor, kept while the outgoing escrow is open: the successor may
    have lost it in a crash before acting on it, so it is resent on every link until the escrow
    is fulfilled or failed."""
    secret: bytes = b""
    """Our shared secret with the payer (to add our layer to a failure)."""
    preimage: bytes = b""
    reason: str = ""
    failure: bytes = b""
    final: bool = False

    @property
    def name(self) -> str:
        return self.incoming.name

    @property
    def fee(self) -> int:
        return self.incoming.amount - self.amount_out if self.amount_out else 0

    def to(self, state: FwdState, **kw: object) -> Forward:
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"forward {self.name}: illegal transition {self.state.name} -> {state.name}")
        return replace(self, state=state, **kw)  # type: ignore[arg-type]


# ---- actions -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PersistForward:
    record: Forward


@dataclass(frozen=True, slots=True)
class OfferDownstream:
    name: str
    channel: bytes
    amount: int
    payment_hash: bytes
    timeout: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class FulfilUpstream:
    name: str
    channel: bytes
    escrow_id: int
    preimage: bytes


@dataclass(frozen=True, slots=True)
class FailUpstream:
    name: str
    channel: bytes
    escrow_id: int
    reason: str
    failure: bytes


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    name: str
    channel: bytes
    why: str


FwdAction = PersistForward | OfferDownstream | FulfilUpstream | FailUpstream | CloseUpstream


class _Refuse(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Forwarder:
    """Every forward of one node. ``records``: what the store holds (after a restart)."""

    def __init__(self, x25519_private: bytes, policy: FeePolicy, margins: Margins,
                 records: Iterable[Forward] = ()) -> None:
        policy.check(margins)
        self._key = x25519_private
        self.policy = policy
        self.margins = margins
        self.records: dict[str, Forward] = {r.name: r for r in records}
        self._by_out: dict[tuple[bytes, int], str] = {
            (r.out_channel, r.out_escrow): r.name for r in self.records.values() if r.out_channel}
        self.details: dict[str, str] = {}
        """Why each failure happened, in words, for the operator's log (not persisted)."""

    # -- inputs ------------------------------------------------------------------------------

    def on_incoming(self, inc: Incoming, packet: bytes, height: int, channels: Sequence[OutChannel],
                    payee: Callable[[bytes], PayeeRequest | None]) -> list[FwdAction]:
        known = self.records.get(inc.name)
        if known is not None:
            return self._redo(known)  # offered again after a reconnect: same answer
        rec = Forward(inc, F.ACCEPTED)
        try:
            peeled = O.peel(packet, self._key, inc.payment_hash)
        except O.BadOnion as exc:
            # Without the shared secret no failure blob can be built: the payer sees "bad_onion"
            # from the code alone, from the hop after the last one that answered.
            return self._fail(rec, Reason.BAD_ONION, str(exc), b"")
        rec = replace(rec, secret=peeled.shared_secret)
        try:
            if peeled.payload.final:
                return self._receive(rec, peeled.payload, height, payee)
            return self._forward(rec, peeled, height, channels)
        except _Refuse as r:
            return self._fail(rec, r.reason, str(r), O.failure_create(peeled.shared_secret, r.reason.value))

    def on_offered(self, name: str, channel: bytes, escrow_id: int) -> list[FwdAction]:
        """The adapter offered the outgoing escrow (durable in that channel)."""
        rec = self.records[name]
        if rec.state is F.OFFERED:
            return []
        rec = rec.to(F.OFFERED, out_channel=channel, out_escrow=escrow_id)
        self._by_out[(channel, escrow_id)] = name
        return self._store(rec)

    def on_offer_refused(self, name: str, reason: Reason, detail: str) -> list[FwdAction]:
        """The outgoing offer could not be made (nothing was signed): fail upstream."""
        rec = self.records[name]
        if rec.state is not F.ACCEPTED:
            return []
        return self._fail(rec, reason, detail, O.failure_create(rec.secret, reason.value))

    def on_downstream_fulfilled(self, channel: bytes, escrow_id: int, preimage: bytes) -> list[FwdAction]:
        name = self._by_out.get((channel, escrow_id))
        if name is None:
            return []  # not a forward of ours (a payment we originated, or an unrelated escrow)
        rec = self.records[name]
        if hashlib.sha256(preimage).digest() != rec.incoming.payment_hash:
            return []  # the channel core checks it; a mismatch never reaches here
        if rec.state is not F.OFFERED:
            return self._redo(rec)
        rec = rec.to(F.FULFILLED, preimage=preimage, packet=b"")
        return self._store(rec) + [FulfilUpstream(name, rec.incoming.channel, rec.incoming.escrow_id, preimage)]

    def on_downstream_failed(self, channel: bytes, escrow_id: int, failure: bytes, code: str = "") -> list[FwdAction]:
        name = self._by_out.get((channel, escrow_id))
        if name is None:
            return []
        rec = self.records[name]
        if rec.state is not F.OFFERED:
            return []
        blob = O.failure_forward(rec.secret, failure)
        reason = code if code in {r.code for r in Reason} else "failed"
        rec = rec.to(F.FAILED, reason=reason, failure=blob, packet=b"")
        self.details[name] = f"downstream failed: {code or 'no code'}"
        return self._store(rec) + [FailUpstream(name, rec.incoming.channel, rec.incoming.escrow_id, reason, blob)]

    def release(self, payment_hash: bytes, preimage: bytes) -> list[FwdAction]:
        """(payee) The payer revealed the preimage of a held payment."""
        if hashlib.sha256(preimage).digest() != payment_hash:
            raise ValueError("preimage does not match the payment hash")
        out: list[FwdAction] = []
        for rec in list(self.records.values()):
            if rec.state is F.HELD and rec.incoming.payment_hash == payment_hash:
                rec = rec.to(F.FULFILLED, preimage=preimage)
                out += self._store(rec) + [FulfilUpstream(rec.name, rec.incoming.channel, rec.incoming.escrow_id, preimage)]
        return out

    def on_upstream_settled(self, channel: bytes, escrow_id: int) -> list[FwdAction]:
        rec = self.records.get(f"{channel.hex()}:{escrow_id}")
        if rec is None or rec.state is not F.FULFILLED:
            return []
        return self._store(rec.to(F.SETTLED))

    def on_upstream_returned(self, channel: bytes, escrow_id: int) -> list[FwdAction]:
        rec = self.records.get(f"{channel.hex()}:{escrow_id}")
        if rec is None or rec.state is not F.FAILED:
            return []
        return self._store(rec.to(F.RETURNED))

    def on_block(self, height: int) -> list[FwdAction]:
        out: list[FwdAction] = []
        room = self.margins.upstream_room()
        for rec in list(self.records.values()):
            if height < rec.incoming.timeout - room:
                continue
            if rec.state is F.FULFILLED:
                out.append(CloseUpstream(rec.name, rec.incoming.channel,
                                         f"upstream escrow times out at {rec.incoming.timeout} and is not committed"))
            elif rec.state is F.HELD:
                out += self._fail(rec, Reason.EXPIRED, "the payer did not release the preimage in time",
                                  O.failure_create(rec.secret, Reason.EXPIRED.value))
        return out

    def reconcile(self, downstream: Callable[[Forward], tuple[str, bytes] | None],
                  upstream_open: Callable[[Forward], bool]) -> list[FwdAction]:
        """After a restart, before ``resume``: catch up with what the channels settled while
        the records could not follow (the node died between a channel's commit and the
        record's; those events are not emitted again). ``downstream(rec)`` says what became of
        an OFFERED record's outgoing escrow: ``("fulfilled", preimage)`` (its channel holds the
        preimage: we must fulfil upstream, or we paid downstream for nothing), ``("returned",
        b"")`` (gone, acknowledged, no preimage), or None (still open, or not known yet).
        ``upstream_open(rec)``: the incoming escrow is still in its channel (if not, a FULFILLED
        record was committed, a FAILED one returned)."""
        out: list[FwdAction] = []
        for rec in list(self.records.values()):
            if rec.state is F.OFFERED:
                got = downstream(rec)
                if got is not None and got[0] == "fulfilled":
                    out += self.on_downstream_fulfilled(rec.out_channel, rec.out_escrow, got[1])
                elif got is not None:
                    out += self.on_downstream_failed(rec.out_channel, rec.out_escrow, b"", got[0])
            elif rec.state in (F.FULFILLED, F.FAILED) and not upstream_open(rec):
                inc = rec.incoming
                if rec.state is F.FULFILLED:
                    out += self.on_upstream_settled(inc.channel, inc.escrow_id)
                else:
                    out += self.on_upstream_returned(inc.channel, inc.escrow_id)
        return out

    def resume(self) -> list[FwdAction]:
        """After a restart: the action each unfinished record still owes (all idempotent)."""
        out: list[FwdAction] = []
        for rec in self.records.values():
            out += self._redo(rec)
        return out

    # -- the checks ----------------------------------------------------------------------------

    def _forward(self, rec: Forward, peeled: O.Peeled, height: int,
                 channels: Sequence[OutChannel]) -> list[FwdAction]:
        inc, p, m = rec.incoming, peeled.payload, self.margins
        if inc.timeout < height + m.upstream_room():
            raise _Refuse(Reason.EXPIRED, f"incoming escrow times out at {inc.timeout}, height {height}")
        if p.timeout > inc.timeout - self.policy.delta:
            raise _Refuse(Reason.TIMEOUT_TOO_LOW, f"outgoing timeout {p.timeout} leaves less than our delta "
                          f"{self.policy.delta} below the incoming {inc.timeout}")
        if inc.timeout < inc.locktime + m.upstream_room():
            raise _Refuse(Reason.TIMEOUT_TOO_LOW, f"incoming timeout {inc.timeout} is less than "
                          f"{m.upstream_room()} blocks past its version's nLockTime {inc.locktime}")
        want = self.policy.fee_at(p.amount, p.timeout, height)
        if inc.amount - p.amount < want:
            raise _Refuse(Reason.FEE_TOO_LOW, f"fee {inc.amount - p.amount} below our {want} for {p.amount} sat")
        to_peer = [c for c in channels if c.peer == p.next_node]
        if not to_peer:
            raise _Refuse(Reason.NO_ROUTE, f"no open channel to {p.next_node.hex()[:12]}")
        in_time = [c for c in to_peer if p.timeout >= c.locktime + c.escrow_delta]
        if not in_time:
            low = min(c.locktime + c.escrow_delta for c in to_peer)
            raise _Refuse(Reason.TIMEOUT_TOO_LOW, f"outgoing timeout {p.timeout} below the successor channel's "
                          f"nLockTime + escrow_delta ({low})")
        able = [c for c in in_time if c.spendable >= p.amount]
        if not able:
            raise _Refuse(Reason.INSUFFICIENT_BALANCE, f"no channel to {p.next_node.hex()[:12]} can spend {p.amount}")
        best = max(able, key=lambda c: c.spendable)
        assert peeled.next_packet is not None
        rec = replace(rec, amount_out=p.amount, timeout_out=p.timeout, next_node=p.next_node,
                      out_channel=best.channel, packet=peeled.next_packet)
        return self._store(rec) + [self._offer(rec)]

    def _receive(self, rec: Forward, p: O.HopPayload, height: int,
                 payee: Callable[[bytes], PayeeRequest | None]) -> list[FwdAction]:
        inc = rec.incoming
        if inc.amount < p.amount:
            raise _Refuse(Reason.FEE_TOO_LOW, f"escrow of {inc.amount} below the onion's {p.amount}")
        if inc.timeout < p.timeout:
            raise _Refuse(Reason.TIMEOUT_TOO_LOW, f"escrow timeout {inc.timeout} below the onion's {p.timeout}")
        rec = replace(rec, final=True, amount_out=0)
        if hashlib.sha256(p.next_node).digest() == inc.payment_hash:
            self._final_timeout(inc, height, self.margins.upstream_room())
            rec = rec.to(F.FULFILLED, preimage=p.next_node)  # a payment to a node id: preimage inside
            return self._store(rec) + [FulfilUpstream(rec.name, inc.channel, inc.escrow_id, rec.preimage)]
        if p.next_node == bytes(32):
            self._final_timeout(inc, height, self.margins.upstream_room())
            return self._store(rec.to(F.HELD))  # payer-held: wait for the preimage
        req = payee(inc.payment_hash)
        if req is None or req.secret != p.next_node:
            raise _Refuse(Reason.UNKNOWN_PAYEE, "no payment request of ours for this hash and secret")
        if req.expired:
            raise _Refuse(Reason.EXPIRED, "the payment request has expired")
        if inc.amount < req.amount:
            raise _Refuse(Reason.FEE_TOO_LOW, f"escrow of {inc.amount} below the request's {req.amount}")
        self._final_timeout(inc, height, max(req.final_delta, self.margins.upstream_room()))
        rec = rec.to(F.FULFILLED, preimage=req.preimage)
        return self._store(rec) + [FulfilUpstream(rec.name, inc.channel, inc.escrow_id, req.preimage)]

    def _final_timeout(self, inc: Incoming, height: int, delta: int) -> None:
        if inc.timeout < height + delta:
            raise _Refuse(Reason.TIMEOUT_TOO_LOW, f"escrow timeout {inc.timeout} below height {height} + {delta}")
        if inc.timeout < inc.locktime + self.margins.upstream_room():
            raise _Refuse(Reason.TIMEOUT_TOO_LOW, f"escrow timeout {inc.timeout} too close to its version's "
                          f"nLockTime {inc.locktime}")

    # -- helpers ---------------------------------------------------------------------------------

    def _offer(self, rec: Forward) -> OfferDownstream:
        return OfferDownstream(rec.name, rec.out_channel, rec.amount_out, rec.incoming.payment_hash,
                               rec.timeout_out, rec.packet)

    def _fail(self, rec: Forward, reason: Reason, detail: str, blob: bytes) -> list[FwdAction]:
        rec = rec.to(F.FAILED, reason=reason.code, failure=blob)
        self.details[rec.name] = detail
        return self._store(rec) + [FailUpstream(rec.name, rec.incoming.channel, rec.incoming.escrow_id,
                                                reason.code, blob)]

    def _store(self, rec: Forward) -> list[FwdAction]:
        self.records[rec.name] = rec
        return [PersistForward(rec)]

    def _redo(self, rec: Forward) -> list[FwdAction]:
        inc = rec.incoming
        if rec.state is F.ACCEPTED and rec.packet:
            return [self._offer(rec)]
        if rec.state is F.FULFILLED:
            return [FulfilUpstream(rec.name, inc.channel, inc.escrow_id, rec.preimage)]
        if rec.state is F.FAILED:
            return [FailUpstream(rec.name, inc.channel, inc.escrow_id, rec.reason, rec.failure)]
        return []
