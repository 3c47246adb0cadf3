"""New versions: turn taking, single-signed updates (payments, escrows, settlements) and
mutual versions (bets). The rules themselves live in ``rules.apply``.

Pipelining (single-signed updates only). The turn holder may sign up to ``MAX_INFLIGHT``
updates before the first is acknowledged; each builds on the previous one, so the payee must
receive them in order (``number == current + 1``), which every transport here guarantees per
link. The unacknowledged ``Update`` messages are the outbox, in order (persisted with each new
version, resent by ``reestablish``). Acks are cumulative: ``update_ack(n)`` settles every
in-flight version up to ``n``. The payer's ``current`` only advances on an ack; ``pending`` is
the newest in-flight version. A payee ignores a resent version older than its current one. Why
this is safe: each in-flight version only moves value from the payer to the payee, so signing
the next one before the ack costs the payer nothing it had not already given; nothing that
needs the turn to move or both signatures (bets, close, re-anchor, turn grants) starts while
anything is in flight.

Escrows offered by hash, fulfilled or failed by the payee: ``escrow_hash`` (rules there).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from eschaton.core import script as S
from eschaton.core.channel.actions import (
    Action,
    Notify,
    Send,
    StoredVersion,
)
from eschaton.core.channel.base import ChannelBase
from eschaton.core.channel.errors import (
    BalanceViolation,
    EscrowViolation,
    FeeViolation,
    InvalidRequest,
    LocktimeViolation,
    ProtocolViolation,
    RuleViolation,
    VersionViolation,
)
from eschaton.core.channel.messages import (
    ChannelErrorMsg,
    Message,
    MutualPropose,
    MutualSign,
    TurnGrant,
    TurnRequest,
    Update,
    UpdateAck,
)
from eschaton.core.channel.ops import (
    MUTUAL,
    AdjustBet,
    CancelBet,
    CommitEscrow,
    OfferEscrow,
    Op,
    Pay,
    PlaceBet,
    ReturnEscrow,
    SettleBet,
    op_from_fields,
    op_to_fields,
)
from eschaton.core.channel.oracle import Announcement
from eschaton.core.channel.rules import apply
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.versions import BOTH, Version, check_invariants

# Unacknowledged single-signed versions a turn holder may have out at once. Bounded because each
# one sits in the persisted outbox (a few hundred bytes) and is resent after a reconnect.
MAX_INFLIGHT = 32


class Updates(ChannelBase):
    # ---- turn taking ------------------------------------------------------------------

    def request_turn(self) -> list[Action]:
        """Ask the holder for the turn. Asking again is harmless (the holder ignores a request
        once it granted), and ``reestablish`` asks again until the grant arrives."""
        if self.have_turn:
            return []
        self.turn_wanted = True
        return [Send(TurnRequest(self.channel_id))]

    def on_turn_request(self, msg: TurnRequest, height: int) -> list[Action]:
        if not self.have_turn:
            return []  # granted already (a duplicate request)
        if self.pending is not None or self.state is not ChannelState.OPEN:
            self.turn_requested = True
            return []
        return self._grant()

    def _grant(self) -> list[Action]:
        self.have_turn = False
        self.turn_requested = False
        self.turn_seq += 1
        return [self._persist([TurnGrant(self.channel_id, self.turn_seq)])]

    def on_turn_grant(self, msg: TurnGrant, height: int) -> list[Action]:
        if self.have_turn or msg.number <= self.turn_seq:
            return []  # a stale grant resent after a reconnect: the turn has moved on since
        self.have_turn = True
        self.turn_wanted = False
        self.turn_seq = msg.number
        return [self._persist(durable=False), Notify(self.channel_id, "turn", {})]

    # ---- single-signed updates ---------------------------------------------------------

    def _inflight(self) -> list[Update]:
        """Our signed, unacknowledged updates, oldest first (they are the outbox)."""
        if self.pending is None or self.pending_kind != "update":
            return []
        return [m for m in self.outbox if isinstance(m, Update)]

    def _tip(self) -> Version:
        """The version the next single-signed update builds on: our newest in flight, or current."""
        return self.pending if self.pending is not None and self.pending_kind == "update" else self.current

    def _single(self, op: Op, height: int) -> list[Action]:
        inflight = self._inflight()
        self._require_usable(allow_inflight=len(inflight) < MAX_INFLIGHT)
        try:
            new = apply(self.params, self._tip(), op, self.role, height)
        except RuleViolation as e:
            raise InvalidRequest(str(e), e) from e
        sig, txid = self._sign_version(new)
        self.pending, self.pending_kind, self.pending_op = new, "update", op
        msg = Update(self.channel_id, new.to_fields(), op_to_fields(op), sig)
        act = self._persist([*inflight, msg], [StoredVersion(new, None, txid)])
        return [replace(act, messages=(msg,))]  # the earlier ones are out already

    def pay(self, amount: int, height: int) -> list[Action]:
        return self._single(Pay(amount), height)

    def offer_escrow(self, amount: int, preimage: bytes, height: int) -> tuple[int, list[Action]]:
        """Offer an escrow whose hash is ``sha256(preimage)``; we keep the preimage to commit later."""
        if len(preimage) != 32:
            raise InvalidRequest("escrow preimages are 32 bytes")
        h = S.sha256(preimage)
        # The preimage goes into the same snapshot as our signed offer, so a restart can commit.
        self.preimages[h] = preimage
        try:
            return self.offer_escrow_hash(amount, h, 0, height)
        except Exception:
            del self.preimages[h]
            raise

    def offer_escrow_hash(self, amount: int, payment_hash: bytes, timeout: int,
                          height: int) -> tuple[int, list[Action]]:
        """Offer an escrow by its hash alone, reclaimable on chain from ``timeout`` (an absolute
        height; 0: the default). The payee fulfils it with the preimage (see the rules)."""
        if len(payment_hash) != 32:
            raise InvalidRequest("escrow payment hashes are 32 bytes")
        if timeout:
            floor = height + self.params.safety_margin + self.params.escrow_delta
            if timeout < floor:
                raise InvalidRequest(
                    f"escrow timeout {timeout} too close to the tip {height}: the payee needs safety_margin="
                    f"{self.params.safety_margin} + escrow_delta={self.params.escrow_delta} blocks (use >= {floor})")
        eid = self._tip().next_id
        return eid, self._single(OfferEscrow(amount, payment_hash, timeout), height)

    def commit_escrow(self, escrow_id: int, height: int) -> list[Action]:
        e = self._tip().escrow(escrow_id)
        pre = self.preimages.get(e.payment_hash)
        if pre is None:
            raise InvalidRequest("we do not know this escrow's preimage")
        return self._single(CommitEscrow(escrow_id, pre), height)

    def return_escrow(self, escrow_id: int, height: int) -> list[Action]:
        return self._single(ReturnEscrow(escrow_id), height)

    # ---- escrows by hash: fulfil and fail (see the rules) ----------------------------------

    def _forget_resolved(self) -> None:
        """Drop fulfil records of escrows no longer open in any version we may still hold."""
        if not self.fulfilled:
            return
        open_ids = {e.id for e in self.current.escrows}
        if self.pending is not None:
            open_ids.update(e.id for e in self.pending.escrows)
        for eid in [i for i in self.fulfilled if i not in open_ids]:
            del self.fulfilled[eid]

    def settle_bet(self, bet_id: int, preimage: bytes, height: int) -> list[Action]:
        """Pay out a bet we lost (the oracle revealed ``preimage``)."""
        return self._single(SettleBet(bet_id, preimage), height)

    def on_update(self, msg: Update, height: int) -> list[Action]:
        if self.state is not ChannelState.OPEN:
            raise ProtocolViolation(f"update in state {self.state.name}")
        v = Version.from_fields(dict(msg.version))
        op = op_from_fields(dict(msg.op))
        if v.number == self.current.number and v == self.current and msg.signature == self.best_sig:
            return [Send(UpdateAck(self.channel_id, v.number))]  # duplicate after a reconnect
        if v.number < self.current.number and not self.have_turn:
            return []  # an older in-flight version resent after a reconnect: we hold newer
        if self.have_turn:
            raise ProtocolViolation("the peer signed a version while we hold the turn")
        if isinstance(op, MUTUAL):
            raise ProtocolViolation("bets need both signatures (mutual_propose)")
        self._check_proposal(v, op, height)
        txid = self._check_peer_sig(v, msg.signature)
        return self._accept_version(v, op, msg.signature, txid, [UpdateAck(self.channel_id, v.number)])

    def _check_proposal(self, v: Version, op: Op, height: int) -> None:
        cur = self.current
        if v.number != cur.number + 1:
            raise VersionViolation(f"version {v.number} after {cur.number}")
        if v.locktime > cur.locktime:
            raise LocktimeViolation(f"nLockTime {v.locktime} later than current {cur.locktime}")
        if v.fee < cur.fee:
            raise FeeViolation(f"fee {v.fee} below current {cur.fee}")
        check_invariants(self.params, v)
        signer = self.peer_role
        expected = apply(self.params, cur, op, signer, height)
        if v.locktime != expected.locktime:
            raise LocktimeViolation(f"nLockTime {v.locktime}, rules give {expected.locktime}")
        if v.fee != expected.fee:
            raise FeeViolation(f"fee {v.fee}, rules give {expected.fee}")
        if v.balances != expected.balances:
            raise BalanceViolation(f"balances {v.balances}, operation gives {expected.balances}")
        if v.fee_paid != expected.fee_paid:
            raise FeeViolation(f"fee shares {list(v.fee_paid)}, rules give {list(expected.fee_paid)}")
        if v != expected:
            raise EscrowViolation("contracts or bookkeeping differ from what the operation gives")

    def _accept_version(self, v: Version, op: Op, sig: bytes, txid: str, reply: list[Message]) -> list[Action]:
        acts: list[Action] = []
        prev, self.current = self.current, v
        self.best, self.best_sig = v, sig
        acts.extend(self._events_for(op, v, prev))
        self._forget_resolved()
        return [self._persist(reply, [StoredVersion(v, sig, txid)])] + acts

    def _events_for(self, op: Op, v: Version, prev: Version) -> list[Action]:
        cid = self.channel_id
        if isinstance(op, Pay):
            return [Notify(cid, "payment", {"amount": op.amount, "number": v.number,
                                            "balance": v.balances[self.me]})]
        if isinstance(op, OfferEscrow):
            e = v.escrow(v.next_id - 1)
            return [Notify(cid, "escrow_offered", {"amount": op.amount, "payment_hash": op.payment_hash,
                                                   "escrow_id": e.id, "timeout": e.timeout})]
        if isinstance(op, CommitEscrow):
            self.preimages[S.sha256(op.preimage)] = op.preimage
            return [Notify(cid, "escrow_committed", {"escrow_id": op.escrow_id, "preimage": op.preimage})]
        if isinstance(op, ReturnEscrow):
            e = prev.escrow(op.escrow_id)
            return [Notify(cid, "escrow_returned", {"escrow_id": op.escrow_id, "payment_hash": e.payment_hash,
                                                    "payer": e.payer, "amount": e.amount})]
        if isinstance(op, SettleBet):
            return [Notify(cid, "bet_settled", {"bet_id": op.bet_id})]
        if isinstance(op, PlaceBet):
            self.announcements[op.announcement.digest] = op.announcement
            return [Notify(cid, "bet_placed", {"bet_id": v.next_id - 1})]
        if isinstance(op, AdjustBet):
            return [Notify(cid, "bet_adjusted", {"bet_id": op.bet_id, "stakes": list(op.stakes)})]
        return [Notify(cid, "bet_cancelled", {"bet_id": op.bet_id})]

    def on_update_ack(self, msg: UpdateAck, height: int) -> list[Action]:
        if self.pending is None or self.pending_kind != "update" or not (
                self.current.number < msg.number <= self.pending.number):
            if msg.number <= self.current.number:
                return []  # duplicate
            raise ProtocolViolation(f"ack for unknown version {msg.number}")
        return self._acked(msg.number)

    def _acked(self, upto: int) -> list[Action]:
        """The peer holds our in-flight versions up to number ``upto`` (acks are cumulative)."""
        inflight = self._inflight()
        done = [m for m in inflight if int(m.version["number"]) <= upto]
        if not done:
            return []
        self.current = Version.from_fields(dict(done[-1].version))
        rest: list[Message] = list(inflight[len(done):])
        self.outbox = rest
        if not self.outbox:
            self.pending, self.pending_kind, self.pending_op = None, "", None
        self._forget_resolved()
        acts: list[Action] = [self._persist(durable=False)]
        for m in done:
            op = op_from_fields(dict(m.op))
            if isinstance(op, Pay):
                acts.append(Notify(self.channel_id, "payment_sent",
                                   {"amount": op.amount, "number": int(m.version["number"])}))
            elif isinstance(op, CommitEscrow):
                acts.append(Notify(self.channel_id, "escrow_commit_acked",
                                   {"escrow_id": op.escrow_id, "payment_hash": S.sha256(op.preimage),
                                    "number": int(m.version["number"])}))
        if self.turn_requested and self.pending is None:
            acts.extend(self._grant())
        return acts

    # ---- mutual versions (bets) ----------------------------------------------------------

    def propose_bet(self, announcement: Announcement, winners: tuple[str, ...], stakes: tuple[int, int],
                    height: int) -> list[Action]:
        """Propose a bet: ``winners[i]`` (a role, or '' for a push) takes both stakes on outcome i."""
        return self._propose(PlaceBet(announcement, winners, stakes), height)

    def adjust_bet(self, bet_id: int, stakes: tuple[int, int], height: int) -> list[Action]:
        """Change a bet's stakes (both sign the new version; the old stakes come back first)."""
        return self._propose(AdjustBet(bet_id, stakes), height)

    def cancel_bet(self, bet_id: int, height: int) -> list[Action]:
        """Cancel a bet (stakes back); also the default case after the oracle's deadline."""
        return self._propose(CancelBet(bet_id), height)

    def _propose(self, op: Op, height: int) -> list[Action]:
        self._require_usable()
        try:
            new = apply(self.params, self.current, op, self.role, height)
        except RuleViolation as e:
            raise InvalidRequest(str(e), e) from e
        self.pending, self.pending_kind, self.pending_op = new, "propose", op
        if isinstance(op, PlaceBet):
            self.announcements[op.announcement.digest] = op.announcement
        return [self._persist([MutualPropose(self.channel_id, new.to_fields(), op_to_fields(op))])]

    def on_mutual_propose(self, msg: MutualPropose, height: int) -> list[Action]:
        if self.state is not ChannelState.OPEN:
            raise ProtocolViolation(f"mutual_propose in state {self.state.name}")
        v = Version.from_fields(dict(msg.version))
        op = op_from_fields(dict(msg.op))
        if self.pending is not None and self.pending_kind in ("signed", "incoming") and v == self.pending:
            return [Send(m) for m in self.outbox] if self.pending_kind == "signed" else []
        if v.number <= self.current.number:
            return []  # already complete
        if self.have_turn or self.pending is not None:
            raise ProtocolViolation("the peer proposed while we hold the turn")
        if not isinstance(op, MUTUAL):
            raise ProtocolViolation("only bets are mutual")
        self._check_proposal(v, op, height)
        self.pending, self.pending_kind, self.pending_op = v, "incoming", op
        info: dict[str, Any] = {"number": v.number, "op": op.kind}
        if isinstance(op, PlaceBet):
            info.update(event_id=op.announcement.event_id, stakes=list(op.stakes), winners=list(op.winners))
        return [self._persist(durable=False), Notify(self.channel_id, "proposal", info)]

    def accept_proposal(self) -> list[Action]:
        """Sign the peer's pending bet proposal (the local user agreed to it)."""
        if self.pending is None or self.pending_kind != "incoming":
            raise InvalidRequest("no proposal to accept")
        op = self.pending_op
        if isinstance(op, PlaceBet):
            self.announcements[op.announcement.digest] = op.announcement
        sig, txid = self._sign_version(self.pending)
        self.pending_kind = "signed"
        return [self._persist([MutualSign(self.channel_id, self.pending.number, sig)],
                              [StoredVersion(self.pending, None, txid)])]

    def reject_proposal(self, reason: str = "declined") -> list[Action]:
        if self.pending is None or self.pending_kind != "incoming":
            raise InvalidRequest("no proposal to reject")
        self.pending, self.pending_kind, self.pending_op = None, "", None
        return [self._persist([ChannelErrorMsg(self.channel_id, "declined", reason)], durable=False)]

    def on_mutual_sign(self, msg: MutualSign, height: int) -> list[Action]:
        if self.pending is None or msg.number != self.pending.number or self.pending_kind not in ("propose", "signed"):
            if (msg.number == self.current.number and self.current.signer == BOTH
                    and self.mutual_proposer == self.role):
                # We proposed it and the peer resends its (first) signature: it lacks our final
                # one (lost in flight, and our outbox may have moved on). Sign again,
                # deterministically. Only the proposer answers, so this cannot ping-pong.
                sig, _ = self._sign_version(self.current)
                return [Send(MutualSign(self.channel_id, self.current.number, sig))]
            if msg.number <= self.current.number:
                return []
            raise ProtocolViolation(f"mutual_sign for unknown version {msg.number}")
        v, op = self.pending, self.pending_op
        assert op is not None
        txid = self._check_peer_sig(v, msg.signature)
        kind = self.pending_kind
        self.pending, self.pending_kind, self.pending_op = None, "", None
        self.mutual_proposer = self.role if kind == "propose" else self.peer_role
        if kind == "propose":
            mine, _ = self._sign_version(v)
            acts = self._accept_version(v, op, msg.signature, txid, [MutualSign(self.channel_id, v.number, mine)])
            return acts + (self._grant() if self.turn_requested else [])
        return self._accept_version(v, op, msg.signature, txid, [])

    def on_channel_error(self, msg: ChannelErrorMsg, height: int) -> list[Action]:
        acts: list[Action] = [Notify(self.channel_id, "peer_error", {"code": msg.code, "text": msg.text})]
        if self.pending is not None and self.pending_kind == "propose":
            # No signature of ours went out with a proposal, so it can be dropped safely.
            self.pending, self.pending_kind, self.pending_op = None, "", None
            acts.insert(0, self._persist(durable=False))
            if self.turn_requested:
                acts.extend(self._grant())
        return acts

