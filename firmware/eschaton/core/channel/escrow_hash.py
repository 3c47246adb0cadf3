"""Escrows offered by hash alone: the payee knows the preimage, the payer only its hash.

Rules / theory of operation:
- Offer: ``offer_escrow_hash(amount, payment_hash, timeout, height)``, a single-signed update
  like any other. ``timeout`` is the absolute height from which the payer may take the output
  back on chain; 0 keeps the default (offering nLockTime + ``escrow_delta``, which a peer that
  predates explicit timeouts also computes). An explicit one must leave the payee
  ``escrow_delta`` blocks after the offering version's nLockTime and stay within the channel's
  lifetime + ``escrow_delta`` (``rules.escrow_timeout``), and, locally, leave the tip
  ``safety_margin + escrow_delta`` blocks; anything else is refused before anything is signed.
- Fulfil: the payee calls ``fulfil_escrow(id, preimage)``. It keeps the preimage (snapshot, made
  durable before ``escrow_fulfil`` leaves): if the payer never commits, the payee's own refund
  version carries the hash-locked output and the watcher claims it with that preimage. The
  message is resent by ``reestablish`` until the escrow is committed.
- The payer, on ``escrow_fulfil``, checks ``sha256(preimage) == hash`` (a mismatch is refused and
  changes nothing), then persists the preimage BEFORE anything else (it is what lets a
  forwarding node claim upstream, even if this channel then goes on chain), reports
  ``escrow_fulfilled``, and commits the escrow (``commit_escrow``, the ordinary path) at once if
  it holds the turn; otherwise it asks for the turn and ``commit_fulfilled`` commits once the
  turn is back. A resent fulfil of an escrow already resolved is ignored.
- Fail: the payee calls ``fail_escrow(id, code)``: ``escrow_fail`` tells the payer why (nothing
  changes), and the payee returns the escrow the ordinary way (``return_escrow``). An escrow the
  payee fulfilled can no longer be failed or returned: its preimage is out.
- Timeout: while the channel is open an escrow cannot reach its timeout (the channel closes
  itself at ``current.locktime - safety_margin``, and every timeout is at least
  ``escrow_delta`` past the offering nLockTime). So an escrow neither fulfilled nor failed is
  settled on chain: the payee claims with the preimage if it has one, else the payer reclaims
  once the timeout has passed (``eschaton.channel.watcher``).
"""
from __future__ import annotations

from eschaton.core import script as S
from eschaton.core.channel.actions import Action, Notify, PersistThenSend, Send
from eschaton.core.channel.errors import EscrowViolation, InvalidRequest, ProtocolViolation
from eschaton.core.channel.messages import EscrowFail, EscrowFulfil
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.updates import MAX_INFLIGHT, Updates
from eschaton.core.channel.versions import Escrow


class EscrowsByHash(Updates):
    """Fulfil and fail (payee), the payer's side of both, and preimages learned on chain."""

    def return_escrow(self, escrow_id: int, height: int) -> list[Action]:
        if escrow_id in self.fulfilled and self._open_escrow(escrow_id, self.peer_role) is not None:
            raise InvalidRequest(f"escrow {escrow_id} is fulfilled (its preimage is out): it can only be committed")
        return super().return_escrow(escrow_id, height)

    def _open_escrow(self, escrow_id: int, payer: str) -> Escrow | None:
        """Escrow ``escrow_id`` paid by ``payer`` if it is open in our newest version."""
        v = self.current if payer != self.role else self._tip()
        return next((e for e in v.escrows if e.id == escrow_id and e.payer == payer), None)

    def _payee_escrow(self, escrow_id: int) -> Escrow:
        e = self._open_escrow(escrow_id, self.peer_role)
        if e is None:
            raise InvalidRequest(f"no open escrow {escrow_id} offered to us")
        return e

    def fulfil_escrow(self, escrow_id: int, preimage: bytes, height: int) -> list[Action]:
        """(payee) Reveal ``preimage`` to the payer, who commits the escrow to us."""
        e = self._payee_escrow(escrow_id)
        if len(preimage) != 32 or S.sha256(preimage) != e.payment_hash:
            raise InvalidRequest(f"preimage does not match escrow {escrow_id}'s hash")
        msg = EscrowFulfil(self.channel_id, escrow_id, preimage)
        if self.fulfilled.get(escrow_id) == preimage:
            return [Send(msg)]  # asked again: the preimage is durable already
        if self.state is not ChannelState.OPEN:
            raise InvalidRequest(f"channel not usable in state {self.state.name}")
        last = e.timeout - self.params.escrow_delta - self.params.safety_margin
        if height >= last:
            raise InvalidRequest(f"escrow {escrow_id} times out at {e.timeout}: too late to fulfil safely "
                                 f"(from block {last} on); fail it")
        self.fulfilled[escrow_id] = preimage
        self.preimages[e.payment_hash] = preimage
        # Durable before it leaves, and not through the outbox (which holds our own versions).
        return [PersistThenSend(self.channel_id, self.snapshot, (), (msg,), True)]

    def fail_escrow(self, escrow_id: int, code: str, height: int) -> list[Action]:
        """(payee) Tell the payer we will not fulfil ``escrow_id``; ``return_escrow`` follows."""
        self._payee_escrow(escrow_id)
        if escrow_id in self.fulfilled:
            raise InvalidRequest(f"escrow {escrow_id} is fulfilled (its preimage is out): it cannot fail")
        return [Send(EscrowFail(self.channel_id, escrow_id, code[:32] or "failed", ""))]

    def commits_due(self) -> list[int]:
        """(payer) Escrows the peer fulfilled that we have not committed yet."""
        tip = self._tip()
        return [e.id for e in tip.escrows if e.payer == self.role and e.id in self.fulfilled]

    def commit_fulfilled(self, height: int) -> list[Action]:
        """(payer) Commit every escrow the peer fulfilled (needs the turn)."""
        acts: list[Action] = []
        for eid in self.commits_due():
            acts.extend(self.commit_escrow(eid, height))
        return acts

    def learn_preimage(self, escrow_id: int, amount: int, preimage: bytes) -> list[Action]:
        """(payer) The payee claimed escrow ``escrow_id`` on chain with ``preimage`` (the watcher
        read it from the claim): keep it, as from an ``escrow_fulfil``."""
        h = S.sha256(preimage)
        if self.preimages.get(h) == preimage:
            return []
        self.preimages[h] = preimage
        return [self._persist(), Notify(self.channel_id, "escrow_fulfilled", {
            "escrow_id": escrow_id, "amount": amount, "payment_hash": h, "preimage": preimage, "on_chain": True})]

    def _can_sign(self) -> bool:
        try:
            self._require_usable(allow_inflight=len(self._inflight()) < MAX_INFLIGHT)
        except InvalidRequest:
            return False
        return True

    def on_escrow_fulfil(self, msg: EscrowFulfil, height: int) -> list[Action]:
        e = self._open_escrow(msg.escrow_id, self.role)
        if e is None:
            if 0 < msg.escrow_id < self._tip().next_id:
                return []  # resolved already: a fulfil resent after a reconnect
            raise ProtocolViolation(f"escrow_fulfil for unknown escrow {msg.escrow_id}")
        if S.sha256(msg.preimage) != e.payment_hash:
            raise EscrowViolation(f"escrow_fulfil: the preimage does not match escrow {e.id}'s hash")
        acts: list[Action] = []
        if self.fulfilled.get(e.id) != msg.preimage:
            # Persist the preimage before anything else: whatever happens to this channel next,
            # we can prove payment and claim upstream with it.
            self.preimages[e.payment_hash] = msg.preimage
            self.fulfilled[e.id] = msg.preimage
            acts.append(self._persist())
            acts.append(Notify(self.channel_id, "escrow_fulfilled", {
                "escrow_id": e.id, "amount": e.amount, "payment_hash": e.payment_hash, "preimage": msg.preimage}))
        if self.state is not ChannelState.OPEN:
            return acts  # going on chain: the preimage is what matters now
        if not self._can_sign():
            return acts + (self.request_turn() if not self.have_turn else [])
        for eid in self.commits_due():
            try:
                acts.extend(self.commit_escrow(eid, height))
            except InvalidRequest as err:  # refused before anything changed: kept for later
                acts.append(Notify(self.channel_id, "escrow_commit_deferred", {"escrow_id": eid, "error": str(err)}))
                break
        return acts

    def on_escrow_fail(self, msg: EscrowFail, height: int) -> list[Action]:
        e = self._open_escrow(msg.escrow_id, self.role)
        if e is None:
            if 0 < msg.escrow_id < self._tip().next_id:
                return []
            raise ProtocolViolation(f"escrow_fail for unknown escrow {msg.escrow_id}")
        return [Notify(self.channel_id, "escrow_failing", {"escrow_id": e.id, "payment_hash": e.payment_hash,
                                                           "code": msg.code, "text": msg.text})]
