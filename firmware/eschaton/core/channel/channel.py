"""The trade channel state machine (sans-IO).

Rules / theory of operation:
- Inputs: local requests (``pay``, ``offer_escrow`` ...), peer messages (``handle``), chain facts
  (``on_block``, ``on_funding_spent``), ``height`` and the channel's private key. Outputs: a list
  of actions the adapter executes IN ORDER. Nothing here does I/O.
- ``PersistThenSend`` is the only way a signature leaves: the adapter makes the snapshot durable
  (fsync) and only then sends the messages (LDK's persist-then-acknowledge). ``durable=False``
  marks pure bookkeeping (an ack received) that may be lost in a crash because reestablishment
  recovers it.
- Opening: parameters -> both sides build the same funding transaction from both sides' inputs
  (segwit only, so its txid is fixed before any input is signed) -> both sign the initial refund
  -> only then are funding inputs signed (``SignFunding`` action) -> broadcast -> ``min_depth``.
- Turn taking. Only the party holding the turn may sign a new version; the other asks with
  ``TurnRequest``. Two versions with the same number signed by different parties could both be
  held and broadcast, so concurrency is excluded by protocol, not resolved afterwards. The opener
  holds the turn after opening; grants are persisted durably before they are sent. A request
  is kept by the requester until the grant arrives (``turn_wanted``) and sent again by every
  ``reestablish``: the holder keeps requests in memory only, and a request lost with the link
  or with a holder's crash would otherwise leave the channel idle until the requester gave up.
- Single-signed updates pipeline: up to ``updates.MAX_INFLIGHT`` of the turn holder's versions
  may be in flight, acked cumulatively (rules in ``updates``); anything else (bets, close,
  re-anchor, turn grants) waits until none is. Unacknowledged versions are resent after a
  reconnect (``reestablish``) with the same signatures; the receiver treats duplicates idempotently.
- Escrows may be offered by hash alone with an explicit timeout; the payee fulfils
  (``escrow_fulfil``, resent by ``reestablish`` until committed) or fails them (rules in
  ``escrow_hash``).
- Version rules live in ``rules`` (``apply``); a peer's version is refused with a typed
  ``RuleViolation`` or ``BadSignature`` before anything changes.
- Unilateral close broadcasts the best version we hold as soon as it is final; when the channel's
  nLockTime budget runs out (``height >= current.locktime - safety_margin``) the channel force-closes
  itself, because from then on an older version could mature before ours confirms.
"""
from __future__ import annotations

from eschaton.core.channel.actions import (  # re-exported: the channel's public surface
    Action,
    Broadcast,
    ChannelStatus,
    FundingInput,
    Notify,
    PersistThenSend,
    Send,
    SignFunding,
    StoredVersion,
)
from eschaton.core.channel.closing import Closing
from eschaton.core.channel.errors import NotMyTurn, ProtocolViolation
from eschaton.core.channel.escrow_hash import EscrowsByHash
from eschaton.core.channel.messages import (
    ChannelErrorMsg,
    ChannelReady,
    EscrowFulfil,
    Message,
    Reestablish,
    RefundSignature,
    TurnRequest,
)
from eschaton.core.channel.opening import Opening
from eschaton.core.channel.reanchor import Reanchor
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.versions import ACCEPTOR, OPENER, initial_version

__all__ = [
    "STATIC_KEYS", "Action", "Broadcast", "Channel", "ChannelStatus", "FundingInput", "NotMyTurn",
    "Notify", "PersistThenSend", "Send", "SignFunding", "StoredVersion",
]


class Channel(Opening, EscrowsByHash, Closing, Reanchor):
    """One trade channel seen from one side (``role``)."""

    # ---- reconnecting -------------------------------------------------------------------

    def reestablish(self) -> list[Action]:
        """Messages to send after a (re)connect: our position, then our last outgoing messages."""
        pend = self.pending.number if self.pending is not None and self.pending_kind in ("update", "propose", "signed") else 0
        acts: list[Action] = [Send(Reestablish(self.channel_id, self.current.number, pend))]
        # Messages of the opening the peer may have missed (receivers ignore duplicates); the
        # outbox only holds the latest step's messages.
        if self.role == OPENER and self.best is not None and self.state is not ChannelState.ACCEPTED:
            sig, _ = self._sign_version(initial_version(self.params))
            acts.append(Send(RefundSignature(self.channel_id, sig)))
        if self.state is ChannelState.OPEN:
            acts.append(Send(ChannelReady(self.channel_id)))
        acts.extend(Send(m) for m in self.outbox if not isinstance(m, (RefundSignature, ChannelReady)) or
                    self.role == ACCEPTOR and isinstance(m, RefundSignature))
        # Fulfils of escrows offered to us that the payer has not committed yet (it ignores a
        # fulfil of an escrow already resolved).
        acts.extend(Send(EscrowFulfil(self.channel_id, eid, pre)) for eid, pre in self.fulfilled.items()
                    if any(e.id == eid and e.payer != self.role for e in self.current.escrows))
        if self.asks_turn:
            # Our request may have been lost with the link, or the holder restarted and forgot
            # it (it holds requests in memory): ask again. After the outbox, so a grant we
            # resend (a stale one, numbered) or the holder's reply come in the usual order.
            acts.append(Send(TurnRequest(self.channel_id)))
        acts.extend(self._funding_progress())
        if self.reanchor is not None and self.reanchor["anchor_raw"]:
            acts.append(Broadcast(self.channel_id, self.reanchor["anchor_raw"], "re-anchor"))
        return acts

    def on_channel_error(self, msg: ChannelErrorMsg, height: int) -> list[Action]:
        acts = super().on_channel_error(msg, height)
        if self.state is ChannelState.REANCHORING:
            acts = self._reanchor_refused() + acts
        return acts

    def on_reestablish(self, msg: Reestablish, height: int) -> list[Action]:
        acts: list[Action] = []
        if self.pending is not None and self.pending_kind == "update" and msg.number > self.current.number:
            acts.extend(self._acked(msg.number))
        known = (self.pending.number if self.pending is not None else self.current.number)
        if msg.number > known:
            # The peer has a version we never saw: our state is older than what we signed
            # (restored from an old backup). Never broadcast our stale best; the peer holds newer.
            acts.append(Notify(self.channel_id, "data_loss", {"peer_number": msg.number, "ours": self.current.number}))
        # Turn recovery. A grant is persisted (durably) before it is sent, and taken only when
        # received, so at most one side holds the turn; a grant lost in flight is still in the
        # granter's outbox and is resent by reestablish(), and grants are numbered so that an
        # older grant resent from a stale outbox is ignored. Whoever has an outgoing version in
        # flight must be the holder.
        if self.pending is not None and self.pending_kind in ("update", "propose"):
            self.have_turn = True
            self.turn_wanted = False
        elif msg.pending and msg.pending > self.current.number:
            self.have_turn = False
        return [self._persist(durable=False)] + acts

    # ---- dispatch -----------------------------------------------------------------------

    def handle(self, msg: Message, height: int) -> list[Action]:
        """Feed one peer message; raises a RemoteError subclass (channel unchanged) if refused."""
        if msg.channel_id != self.channel_id:
            raise ProtocolViolation("message for another channel")
        handler = getattr(self, f"on_{msg.NAME}", None)
        if handler is None:
            raise ProtocolViolation(f"no handler for {msg.NAME}")
        # Guarantee "refused means unchanged": handlers validate before mutating, and as a safety
        # net the attributes (containers copied one level deep) are put back on any error.
        # (``type(v) in`` rather than isinstance: this runs on every message, and the attributes
        # hold plain dicts and lists, never subclasses of them.)
        saved = {k: (v.copy() if type(v) in _CONTAINERS else v) for k, v in self.__dict__.items()}
        try:
            result: list[Action] = handler(msg, height)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        return result


_CONTAINERS = (dict, list)

# Snapshot keys that only change while the channel opens; the store writes them once.
STATIC_KEYS = frozenset({
    "schema", "channel_id", "role", "params", "pubkey", "payout_script", "inputs", "change",
    "funding_locktime", "remote_pubkey", "remote_payout", "remote_inputs", "remote_change", "setup",
    "funding_raw", "funding_witnesses",
})


