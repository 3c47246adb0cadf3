"""Re-anchoring: a fresh nLockTime budget without closing the channel, and without stopping it.

Rules / theory of operation:
- Every direction switch spends ``locktime_step`` of the channel's nLockTime budget. Before it
  runs out (``switch_budget_low``), the turn holder may propose a re-anchor: a final transaction R
  spending the funding output into a new 2-of-2 output (same keys) whose initial refund V0' has
  the new lifetime and the current balances (the proposer pays R's fee). No escrow or bet may be
  open, and nothing may be in flight.
- Same order as opening: both sides sign V0' (which spends R's output) BEFORE anyone signs R, so
  once R can exist, each side already holds the refund that returns its balance from R's output.
  While this runs (two round trips) the channel is REANCHORING: nothing new is signed on the old
  anchor, and the peer's turn request waits for the end. Until the proposer's signature on R is
  out, a refusal (``channel_error``) returns to OPEN on the old anchor.
- Whoever completes R (both signatures) moves the channel to R's output AT ONCE: OPEN, new
  setup, new budget, V0' the current and best version; payments go on over the new anchor
  without waiting for a block. R joins ``anchors`` (unconfirmed re-anchors) and is broadcast.
  Why this is safe: R is final now, and the only other spends of the old output are old
  versions, every one time-locked at ``old_locktime`` or later, which is at least
  ``safety_margin`` blocks ahead (the budget check force-closes the channel before it gets
  closer). Any block mined before then may take R, and a miner that takes an old version could
  as well take R, which both sides broadcast and keep broadcasting. This is the assumption the
  channel rests on anyway (someone mines within the window). A further re-anchor may follow
  before R confirms: its R' spends R's output, a chain of unconfirmed transactions that one
  block confirms together (up to ``MAX_UNCONFIRMED_ANCHORS``).
- The watcher follows each unconfirmed R (``watched_anchors`` / ``on_old_anchor``): confirmed,
  it is forgotten; missing from the mempool, it is broadcast again; an old version spending the
  old output is answered with R (every block, and again when the old versions near maturity,
  with a ``reanchor_unconfirmed`` warning). The node never broadcasts an old version itself
  once R is signed: it would give up every payment made on the new anchor and compete with R
  for the same blocks. If an old version confirms anyway (R unminable for the whole window),
  the channel is CLOSED on it (``docs/channels.md``, the trade-off).
"""
from __future__ import annotations

from eschaton.core.channel.actions import Action
from eschaton.core.channel.base import ChannelBase
from eschaton.core.channel.errors import (
    BadSignature,
    InvalidRequest,
    ParamsRejected,
    ProtocolViolation,
)
from eschaton.core.channel.messages import ReanchorAnchor, ReanchorPropose, ReanchorRefund
from eschaton.core.channel.params import MAX_LOCKTIME_HEIGHT
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.transactions import (
    complete,
    reanchor_tx,
    sign,
    sign_digest,
    verify,
    verify_digest,
    version_digest,
)
from eschaton.core.channel.versions import idx

# Re-anchors moved to before any of them confirmed: each spends the previous one's output, and
# bitcoind relays a chain of at most 25 unconfirmed transactions (the refund or close on top).
MAX_UNCONFIRMED_ANCHORS = 20


class Reanchor(ChannelBase):
    def _check_reanchor(self, lifetime: int, fee: int, proposer: str, height: int) -> None:
        p = self.params
        if len(self.anchors) >= MAX_UNCONFIRMED_ANCHORS:
            raise ParamsRejected("too many re-anchors wait for a block; mine one first")
        if not height + p.safety_margin + p.locktime_step <= lifetime <= MAX_LOCKTIME_HEIGHT:
            raise ParamsRejected("the new lifetime must be a block height beyond one step from now")
        if lifetime <= self.current.locktime:
            raise ParamsRejected("a re-anchor must extend the channel's life")
        if self.current.escrows or self.current.bets:
            raise ParamsRejected("settle escrows and bets before re-anchoring")
        bal = self.current.balances[idx(proposer)]
        if fee <= 0 or fee > bal - p.reserve or fee > p.max_payment:
            raise ParamsRejected("re-anchor fee must be positive and payable by the proposer")

    def reanchor_channel(self, lifetime: int, fee: int, height: int) -> list[Action]:
        """Propose moving the channel to a new output with nLockTime budget up to ``lifetime``."""
        self._require_usable()
        try:
            self._check_reanchor(lifetime, fee, self.role, height)
        except ParamsRejected as e:
            raise InvalidRequest(str(e), e) from e
        self.reanchor = {"lifetime": lifetime, "fee": fee, "proposer": self.role, "peer_refund_sig": None,
                         "anchor_sig_sent": False, "anchor_raw": b""}
        self._to(ChannelState.REANCHORING)
        return [self._persist([ReanchorPropose(self.channel_id, lifetime, fee)])]

    def on_reanchor_propose(self, msg: ReanchorPropose, height: int) -> list[Action]:
        if self.state is ChannelState.REANCHORING and self.reanchor is not None:
            # A resend. Duplicates are never answered with messages (both sides resend their own
            # outbox on every reconnect): answering them could ping-pong forever.
            return []
        if self.reanchor is None and msg.lifetime == self.params.lifetime:
            return []  # a resend of the proposal we completed and moved on with
        if self.state is not ChannelState.OPEN or self.have_turn or self.pending is not None:
            raise ProtocolViolation("reanchor_propose unexpected")
        self._check_reanchor(msg.lifetime, msg.fee, self.peer_role, height)
        self.reanchor = {"lifetime": msg.lifetime, "fee": msg.fee, "proposer": self.peer_role,
                         "peer_refund_sig": None, "anchor_sig_sent": False, "anchor_raw": b""}
        setup, _, v0, _ = self._reanchor_plan(msg.lifetime, msg.fee, self.peer_role)
        digest, _ = version_digest(v0, setup)
        self._to(ChannelState.REANCHORING)
        # Our signature on the NEW refund only: harmless until R exists, and R needs ours too.
        return [self._persist([ReanchorRefund(self.channel_id, sign_digest(digest, self._key))])]

    def on_reanchor_refund(self, msg: ReanchorRefund, height: int) -> list[Action]:
        r = self.reanchor
        if r is None and self.state is not ChannelState.OPEN:
            raise ProtocolViolation("reanchor_refund unexpected")
        if r is None:
            return []  # a resend after we moved to the new anchor
        if self.state is not ChannelState.REANCHORING or r is None:
            raise ProtocolViolation("reanchor_refund unexpected")
        if r["peer_refund_sig"] is not None:
            return []  # a resend
        setup, _, v0, _ = self._reanchor_plan(r["lifetime"], r["fee"], r["proposer"])
        digest, _ = version_digest(v0, setup)
        if not verify_digest(digest, self.remote_pubkey, msg.signature):
            raise BadSignature("signature on the re-anchored refund does not verify")
        r["peer_refund_sig"] = msg.signature
        if r["proposer"] != self.role:
            return [self._persist()]
        # Proposer: we now hold the new refund fully signed; sign it for the peer, and sign R.
        mine = sign_digest(digest, self._key)
        anchor = sign(reanchor_tx(self._setup(), setup.capacity), self._setup(), self._key)
        r["anchor_sig_sent"] = True
        return [self._persist([ReanchorRefund(self.channel_id, mine), ReanchorAnchor(self.channel_id, anchor)])]

    def on_reanchor_anchor(self, msg: ReanchorAnchor, height: int) -> list[Action]:
        r = self.reanchor
        if r is None and self.state is ChannelState.OPEN:
            # A resend after we moved to the new anchor. Our own signature on R, if the peer
            # lacks it, is in our outbox: the reconnect that made the peer resend resends it.
            return []
        if self.state is not ChannelState.REANCHORING or r is None or r["peer_refund_sig"] is None:
            raise ProtocolViolation("reanchor_anchor before the new refund is fully signed")
        old = self._setup()
        tx = reanchor_tx(old, old.capacity - r["fee"])
        if not verify(tx, old, self.remote_pubkey, msg.signature):
            raise BadSignature("signature on the re-anchor transaction does not verify")
        mine = sign(tx, old, self._key)
        raw = complete(tx, old, {self.pubkey: mine, self.remote_pubkey: msg.signature})
        if r["proposer"] == self.role:
            return self._switch_anchor(raw, confirmed=False)
        r["anchor_sig_sent"] = True
        # The acceptor's signature on R goes out in the same commit that moves it to the new
        # anchor; it stays in the outbox (resent on reconnect) until the proposer, which needs it
        # to complete R, moves too and signs anything new.
        return self._switch_anchor(raw, confirmed=False, messages=[ReanchorAnchor(self.channel_id, mine)])

    def _reanchor_refused(self) -> list[Action]:
        """A refusal while our signature on R is not out: back to OPEN on the old output."""
        if self.reanchor is None or self.reanchor["anchor_sig_sent"]:
            return []
        self.reanchor = None
        self._to(ChannelState.OPEN)
        return [self._persist(durable=False)]
