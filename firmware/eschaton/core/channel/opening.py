"""Opening a channel: parameters, the jointly built funding transaction, the initial refund.

Rules: both sides build the same funding transaction from both sides' inputs (segwit only, so
the txid is fixed before any input is signed); both sign the initial refund; only then does a
side get ``SignFunding`` for its own inputs; whoever completes the funding broadcasts it.
"""
from __future__ import annotations

from typing import Any, Self

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel.actions import (
    Action,
    Broadcast,
    FundingInput,
    Notify,
    Send,
    SignFunding,
    StoredVersion,
    _is_segwit,
    _txout_fields,
    _txout_from,
)
from eschaton.core.channel.base import FUNDING_SEQUENCE, ChannelBase
from eschaton.core.channel.errors import (
    InvalidRequest,
    ParamsRejected,
    ProtocolViolation,
)
from eschaton.core.channel.messages import (
    AcceptChannel,
    ChannelReady,
    FundingSignatures,
    OpenChannel,
    RefundSignature,
)
from eschaton.core.channel.params import ChannelParams, Policy
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.transactions import Setup
from eschaton.core.channel.versions import ACCEPTOR, OPENER


class Opening(ChannelBase):

    @classmethod
    def open(cls, *, channel_id: bytes, params: ChannelParams, privkey: bytes, payout_script: bytes,
             inputs: list[FundingInput], change: list[T.TxOut], height: int) -> tuple[Self, list[Action]]:
        """Propose a channel. ``inputs``/``change`` fund our contribution (empty if it is zero)."""
        try:
            params.check_sane(height)
        except ParamsRejected as e:
            raise InvalidRequest(str(e), e) from e
        _check_own_funding(inputs, change, params.opener_contribution)
        ch = cls(channel_id=channel_id, role=OPENER, params=params, privkey=privkey,
                 payout_script=payout_script, inputs=inputs, change=change, funding_locktime=height)
        msg = OpenChannel(channel_id, params.to_fields(), ch.pubkey, payout_script,
                          [i.to_fields() for i in inputs], [_txout_fields(o) for o in change], height)
        return ch, [ch._persist([msg], durable=False)]

    @classmethod
    def accept(cls, msg: OpenChannel, *, policy: Policy, privkey: bytes, payout_script: bytes,
               inputs: list[FundingInput], change: list[T.TxOut], height: int) -> tuple[Self, list[Action]]:
        """Accept a proposal (raises ``ParamsRejected`` if it is outside ``policy``)."""
        params = ChannelParams.from_fields(dict(msg.params))
        policy.check(params, height)
        _check_own_funding(inputs, change, params.acceptor_contribution)
        ch = cls(channel_id=msg.channel_id, role=ACCEPTOR, params=params, privkey=privkey,
                 payout_script=payout_script, inputs=inputs, change=change,
                 funding_locktime=msg.funding_locktime)
        ch._take_remote(msg.funding_pubkey, msg.payout_script, msg.inputs, msg.change)
        ch._build_funding()
        ch._to(ChannelState.ACCEPTED)
        sig, _ = ch._sign_version(ch.current)
        reply = AcceptChannel(ch.channel_id, ch.pubkey, payout_script, [i.to_fields() for i in inputs],
                              [_txout_fields(o) for o in change])
        # Our refund signature may leave first: without our funding signatures (if we fund) or
        # before the opener signs its inputs, it commits us to nothing.
        return ch, [ch._persist([reply, RefundSignature(ch.channel_id, sig)])]

    def _take_remote(self, pubkey: bytes, payout: bytes, inputs: list[Any], change: list[Any]) -> None:
        try:
            S.multisig_2of2(self.pubkey, pubkey)
        except S.ScriptError as e:
            raise ProtocolViolation(f"bad funding pubkey: {e}") from e
        if not payout or len(payout) > 64:
            raise ProtocolViolation("bad payout script")
        self.remote_pubkey = pubkey
        self.remote_payout = payout
        self.remote_inputs = [FundingInput.from_fields(i) for i in inputs]
        self.remote_change = [_txout_from(o) for o in change]
        contrib = (self.params.acceptor_contribution if self.role == OPENER
                   else self.params.opener_contribution)
        if sum(i.value for i in self.remote_inputs) < contrib + sum(o.value for o in self.remote_change):
            raise ProtocolViolation("peer's funding inputs do not cover its contribution and change")

    def _roles_ordered(self, mine: Any, theirs: Any) -> tuple[Any, Any]:
        return (mine, theirs) if self.role == OPENER else (theirs, mine)

    def _all_inputs(self) -> list[tuple[FundingInput, bool]]:
        both = [(i, True) for i in self.inputs] + [(i, False) for i in self.remote_inputs]
        both.sort(key=lambda x: (x[0].txid, x[0].vout))
        return both

    def _build_funding(self) -> None:
        pubkeys = self._roles_ordered(self.pubkey, self.remote_pubkey)
        payouts = self._roles_ordered(self.payout_script, self.remote_payout)
        ws = S.multisig_2of2(pubkeys[0], pubkeys[1])
        ins = self._all_inputs()
        if not ins:
            raise ProtocolViolation("no funding inputs")
        if len({(i.txid, i.vout) for i, _ in ins}) != len(ins):
            raise ProtocolViolation("duplicate funding inputs")
        changes = sorted(self.change + self.remote_change, key=lambda o: (o.value, o.script_pubkey))
        outs = [T.TxOut(self.params.capacity, S.p2wsh(ws))] + changes
        tx = T.build_tx([T.TxIn(i.txid, i.vout, FUNDING_SEQUENCE) for i, _ in ins], outs,
                        self.funding_locktime, 2)
        self.funding_raw = T.serialize(tx)
        self.setup = Setup(T.txid(tx), 0, self.params.capacity, (pubkeys[0], pubkeys[1]),
                             (payouts[0], payouts[1]))

    def my_input_indices(self) -> tuple[int, ...]:
        return tuple(n for n, (_, mine) in enumerate(self._all_inputs()) if mine)

    def on_open_channel(self, msg: OpenChannel, height: int) -> list[Action]:
        """A resent open_channel for a channel we already accepted: answer with our last messages."""
        if self.role != ACCEPTOR or msg.funding_pubkey != self.remote_pubkey:
            raise ProtocolViolation("open_channel for an existing channel")
        return [Send(m) for m in self.outbox]

    def on_accept_channel(self, msg: AcceptChannel, height: int) -> list[Action]:
        if self.role != OPENER or self.state is not ChannelState.PROPOSED:
            if self.state is not ChannelState.PROPOSED and msg.funding_pubkey == self.remote_pubkey:
                return []  # duplicate after a reconnect
            raise ProtocolViolation("accept_channel unexpected")
        self._take_remote(msg.funding_pubkey, msg.payout_script, msg.inputs, msg.change)
        self._build_funding()
        self._to(ChannelState.ACCEPTED)
        return [self._persist(durable=False)]

    def on_refund_signature(self, msg: RefundSignature, height: int) -> list[Action]:
        if self.state is not ChannelState.ACCEPTED:
            if self.state is ChannelState.PROPOSED:
                raise ProtocolViolation("refund_signature before accept_channel")
            return []  # a resend after a reconnect: we already hold a fully signed refund
        v0 = self.current
        txid = self._check_peer_sig(v0, msg.signature)
        self.best, self.best_sig = v0, msg.signature
        self._to(ChannelState.REFUND_SIGNED)
        stored = [StoredVersion(v0, msg.signature, txid)]
        actions: list[Action] = []
        if self.role == OPENER:
            sig, _ = self._sign_version(v0)
            actions.append(self._persist([RefundSignature(self.channel_id, sig)], stored))
        else:
            actions.append(self._persist(versions=stored))
        actions.extend(self._funding_progress())
        return actions

    def _funding_progress(self) -> list[Action]:
        """After the refund is fully signed: ask for our input signatures, or broadcast if complete."""
        if self.state is not ChannelState.REFUND_SIGNED:
            return []
        mine = self.my_input_indices()
        if mine and not all(i in self.funding_witnesses for i in mine):
            ins = tuple(fi for fi, m in self._all_inputs() if m)
            return [SignFunding(self.channel_id, self.funding_raw, mine, ins)]
        if len(self.funding_witnesses) == len(self._all_inputs()):
            self._to(ChannelState.FUNDING_BROADCAST)
            raw = self.funding_tx()
            return [self._persist(durable=False), Broadcast(self.channel_id, raw, "funding"),
                    Notify(self.channel_id, "funding_broadcast", {"txid": self._setup().funding_txid})]
        return []

    def funding_tx(self) -> bytes:
        tx = T.parse_tx(self.funding_raw)
        for i, w in self.funding_witnesses.items():
            T.set_witness(tx, i, w)
        return T.serialize(tx)

    def funding_signed(self, witnesses: dict[int, list[bytes]]) -> list[Action]:
        """Our wallet signed our funding inputs; send the witnesses (after persisting them)."""
        if self.state is not ChannelState.REFUND_SIGNED:
            raise InvalidRequest("funding can only be signed once the refund is fully signed")
        mine = self.my_input_indices()
        if set(witnesses) != set(mine):
            raise InvalidRequest(f"need witnesses for inputs {mine}")
        self.funding_witnesses.update({i: list(w) for i, w in witnesses.items()})
        msg = FundingSignatures(self.channel_id, [list(witnesses[i]) for i in mine])
        return [self._persist([msg])] + self._funding_progress()

    def on_funding_signatures(self, msg: FundingSignatures, height: int) -> list[Action]:
        theirs = [n for n, (_, m) in enumerate(self._all_inputs()) if not m]
        if self.state is not ChannelState.REFUND_SIGNED:
            if self.state in (ChannelState.PROPOSED, ChannelState.ACCEPTED):
                raise ProtocolViolation("funding_signatures before the refund is fully signed")
            return []  # a resend: the funding is already complete or on chain
        if len(msg.witnesses) != len(theirs):
            raise ProtocolViolation("wrong number of funding witnesses")
        for n, w in zip(theirs, msg.witnesses, strict=True):
            if not isinstance(w, list) or not all(isinstance(x, bytes) for x in w):
                raise ProtocolViolation("malformed funding witness")
            self.funding_witnesses[n] = list(w)
        return [self._persist(durable=False)] + self._funding_progress()

    def on_channel_ready(self, msg: ChannelReady, height: int) -> list[Action]:
        if self.state in (ChannelState.CLOSED, ChannelState.ABORTED):
            return []
        if self.peer_ready:
            return []
        self.peer_ready = True
        acts: list[Action] = [self._persist(durable=False)]
        return acts + self._maybe_opened()

    def abort(self) -> list[Action]:
        """Abandon an open attempt; allowed until our funding input signatures are out."""
        if self.funding_sigs_out():
            raise InvalidRequest("our funding signatures are out; only the refund path is safe now")
        self._to(ChannelState.ABORTED)
        return [self._persist(durable=False)]

    def funding_sigs_out(self) -> bool:
        return any(i in self.funding_witnesses for i in self.my_input_indices())


def _check_own_funding(inputs: list[FundingInput], change: list[T.TxOut], contribution: int) -> None:
    for i in inputs:
        if not _is_segwit(i.script_pubkey):
            raise InvalidRequest("funding inputs must be segwit v0 (a fixed txid before signing)")
    if sum(i.value for i in inputs) < contribution + sum(o.value for o in change):
        raise InvalidRequest("funding inputs do not cover the contribution and change")
    if contribution > 0 and not inputs:
        raise InvalidRequest("a contribution needs funding inputs")

