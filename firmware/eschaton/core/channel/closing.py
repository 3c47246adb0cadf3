"""Chain facts and closing: depth, the nLockTime budget, spends of the funding output,
cooperative and unilateral close.
"""
from __future__ import annotations

from eschaton.core import tx as T
from eschaton.core.channel.actions import (
    Action,
    Broadcast,
    Notify,
    Send,
)
from eschaton.core.channel.base import ChannelBase
from eschaton.core.channel.errors import (
    BadSignature,
    InvalidRequest,
    ProtocolViolation,
    RuleViolation,
)
from eschaton.core.channel.messages import (
    ChannelReady,
    CloseAccept,
    CloseProposal,
)
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.transactions import close_tx, complete, sign, verify


class Closing(ChannelBase):
    # ---- chain facts ------------------------------------------------------------------

    def on_block(self, height: int, funding_confirmations: int) -> list[Action]:
        """Called for every new tip with the funding transaction's confirmations."""
        acts: list[Action] = []
        st = self.state
        if st in (ChannelState.REFUND_SIGNED, ChannelState.FUNDING_BROADCAST) and funding_confirmations > 0:
            if st is ChannelState.REFUND_SIGNED:
                self._to(ChannelState.FUNDING_BROADCAST)  # the peer broadcast it
            if funding_confirmations >= self.params.min_depth:
                self._to(ChannelState.OPEN)
                acts.append(self._persist([ChannelReady(self.channel_id)]))
                acts.extend(self._maybe_opened())
            else:
                acts.append(self._persist(durable=False))
            return acts
        if st in (ChannelState.OPEN, ChannelState.REANCHORING):
            return self.check_budget(height)
        if st is ChannelState.FORCE_CLOSING and self.best is not None and self.best.locktime <= height:
            acts.append(Broadcast(self.channel_id, self.best_tx(), f"version {self.best.number}"))
        return acts

    def check_budget(self, height: int) -> list[Action]:
        """The nLockTime budget against ``height``: part of ``on_block``, and also to be called
        when the current version's nLockTime moved (a direction switch) between blocks. It needs
        no chain fact but the height, so the adapter need not query the chain for it."""
        if self.state not in (ChannelState.OPEN, ChannelState.REANCHORING):
            return []
        acts: list[Action] = []
        if height >= self.current.locktime - self.params.safety_margin:
            # The nLockTime budget is spent: an older version could soon mature.
            acts.append(Notify(self.channel_id, "lifetime_expired", {"height": height}))
            return acts + self.force_close(height)
        if self.anchors:
            acts.extend(self._anchors_near_maturity(height))
        left = self.params.switches_left(self.current.locktime, height)
        if left <= self.params.low_switch_warning and not self.budget_warned:
            self.budget_warned = True
            acts.append(self._persist(durable=False))
            acts.append(Notify(self.channel_id, "switch_budget_low",
                               {"switches_left": left, "advice": "close cooperatively and reopen"}))
        return acts

    def on_funding_spent(self, txid: str, confirmed: bool, height: int) -> list[Action]:
        """The funding output was spent by ``txid`` (in the mempool, or confirmed)."""
        if self.state in (ChannelState.CLOSED, ChannelState.ABORTED):
            return []
        if self.reanchor is not None and txid == self.reanchor_txid():
            # The re-anchor (even if we meanwhile started a unilateral close: R is final at once
            # and usually wins): the channel now lives on R's output.
            r = self.reanchor
            if r["peer_refund_sig"] is not None and (confirmed or r["anchor_raw"]):
                # Confirmed: the proposer need not wait for the peer's signature on R any more.
                # (A fully signed R still in the proposal: a snapshot of older firmware.)
                return self._switch_anchor(b"" if confirmed else r["anchor_raw"], confirmed)
            return []  # the re-anchor is on its way: the peer's signature on R comes by message
        for a in self.anchors:
            if a["txid"] == txid:
                # R spending an earlier anchor, reported as a spend of "the" funding output by a
                # look at the chain that began before we moved to R's output: not a foreign spend.
                return self.on_old_anchor(a["spends"][0], int(a["spends"][1]), txid, confirmed, height)
        ours = {self.best_txid(), self._close_txid()}
        acts: list[Action] = []
        if confirmed:
            if self.state is not ChannelState.FORCE_CLOSING and txid not in ours:
                self._to(ChannelState.FORCE_CLOSING)
            self._to(ChannelState.CLOSED)
            acts.append(self._persist(durable=False))
            acts.append(Notify(self.channel_id, "closed", {"txid": txid, "ours": txid in ours}))
            return acts
        if txid in ours:
            return []
        # Someone broadcast a version that is not our best (an older one, or the peer's newer one
        # that we do not hold). Ours competes only if it is final now.
        if self.state is not ChannelState.FORCE_CLOSING:
            self._to(ChannelState.FORCE_CLOSING)
            acts.append(self._persist(durable=False))
        if self.best is not None and self.best.locktime <= height:
            acts.append(Broadcast(self.channel_id, self.best_tx(), f"version {self.best.number}"))
        return acts

    # ---- closing ------------------------------------------------------------------------

    def _close_txid(self) -> str:
        """The cooperative close's txid once we signed or completed it, else "". Segwit txids do
        not cover signatures, so the proposer knows it before the peer's ``close_accept``
        arrives: the peer broadcasts the close as it accepts, and its spend can reach us (through
        the chain) before its message does (through a slow link). Without this the proposer took
        its own close for a foreign spend, went FORCE_CLOSING and then ignored the accept."""
        if self.close_raw:
            return T.txid(T.parse_tx(self.close_raw))
        if self.close_sig and self.state is ChannelState.CLOSING:
            return T.txid(close_tx(self.params, self.current, self._setup()))
        return ""

    def close(self, height: int) -> list[Action]:
        """Cooperative close at the current balances (final transaction, no nLockTime)."""
        self._require_usable()
        try:
            tx = close_tx(self.params, self.current, self._setup())
        except RuleViolation as e:
            raise InvalidRequest(str(e), e) from e
        self.close_sig = sign(tx, self._setup(), self._key)
        self._to(ChannelState.CLOSING)
        return [self._persist([CloseProposal(self.channel_id, self.close_sig)])]

    def on_close_proposal(self, msg: CloseProposal, height: int) -> list[Action]:
        if self.state is ChannelState.CLOSING and self.close_raw:
            again: list[Action] = [Send(m) for m in self.outbox]
            return again + [Broadcast(self.channel_id, self.close_raw, "close")]
        if self.state is not ChannelState.OPEN or self.pending is not None or self.have_turn:
            raise ProtocolViolation("close_proposal unexpected")
        s = self._setup()
        tx = close_tx(self.params, self.current, s)
        if not verify(tx, s, self.remote_pubkey, msg.signature):
            raise BadSignature("close signature does not verify")
        mine = sign(tx, s, self._key)
        self.close_raw = complete(tx, s, {self.pubkey: mine, self.remote_pubkey: msg.signature})
        self._to(ChannelState.CLOSING)
        return [self._persist([CloseAccept(self.channel_id, mine)]), Broadcast(self.channel_id, self.close_raw, "close")]

    def on_close_accept(self, msg: CloseAccept, height: int) -> list[Action]:
        if self.state is not ChannelState.CLOSING:
            return []
        if self.close_raw:
            return [Broadcast(self.channel_id, self.close_raw, "close")]
        s = self._setup()
        tx = close_tx(self.params, self.current, s)
        if not verify(tx, s, self.remote_pubkey, msg.signature):
            raise BadSignature("close signature does not verify")
        self.close_raw = complete(tx, s, {self.pubkey: self.close_sig, self.remote_pubkey: msg.signature})
        return [self._persist(durable=False), Broadcast(self.channel_id, self.close_raw, "close")]

    def force_close(self, height: int) -> list[Action]:
        """Unilateral close: broadcast our best version now if final, else as soon as it is."""
        if self.state is ChannelState.FORCE_CLOSING:
            return self.on_block(height, 0)
        if self.best is None:
            raise InvalidRequest("nothing to close: the refund is not fully signed")
        self._to(ChannelState.FORCE_CLOSING)
        acts: list[Action] = [self._persist(durable=False)]
        if self.best.locktime <= height:
            acts.append(Broadcast(self.channel_id, self.best_tx(), f"version {self.best.number}"))
        return acts

