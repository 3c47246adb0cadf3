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
  holds the turn after opening; grants are persisted durably before they are sent.
- One version in flight at a time. A payer's unacknowledged version is resent after a reconnect
  (``reestablish``) with the same signature; the receiver treats duplicates idempotently.
- Version rules live in ``ledger`` (``apply``); a peer's version is refused with a typed
  ``RuleViolation`` or ``BadSignature`` before anything changes.
- Unilateral close broadcasts the best version we hold as soon as it is final; when the channel's
  nLockTime budget runs out (``height >= current.locktime - safety_margin``) the channel force-closes
  itself, because from then on an older version could mature before ours confirms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import coincurve

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel import ledger as L
from eschaton.core.channel.errors import (
    BadSignature,
    BalanceViolation,
    EscrowViolation,
    FeeViolation,
    InvalidRequest,
    LocktimeViolation,
    ParamsRejected,
    ProtocolViolation,
    RuleViolation,
    VersionViolation,
)
from eschaton.core.channel.messages import (
    AcceptChannel,
    ChannelErrorMsg,
    ChannelReady,
    CloseAccept,
    CloseProposal,
    FundingSignatures,
    Message,
    MutualPropose,
    MutualSign,
    OpenChannel,
    Reestablish,
    RefundSignature,
    TurnGrant,
    TurnRequest,
    Update,
    UpdateAck,
)
from eschaton.core.channel.oracle import Announcement
from eschaton.core.channel.params import ChannelParams, Policy
from eschaton.core.channel.state import ChannelState, check_transition

FUNDING_SEQUENCE = T.SEQUENCE_LOCKTIME


# --- inputs and actions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FundingInput:
    """A segwit output one party contributes to the funding transaction."""

    txid: str
    vout: int
    value: int
    script_pubkey: bytes

    def to_fields(self) -> dict[str, Any]:
        return {"txid": self.txid, "vout": self.vout, "value": self.value, "script_pubkey": self.script_pubkey}

    @classmethod
    def from_fields(cls, d: Any) -> FundingInput:
        try:
            fi = cls(str(d["txid"]), int(d["vout"]), int(d["value"]), bytes(d["script_pubkey"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolViolation(f"malformed funding input: {e}") from e
        if len(fi.txid) != 64 or not _is_segwit(fi.script_pubkey) or fi.value <= 0:
            raise ProtocolViolation("funding inputs must be positive segwit v0 outputs")
        return fi


def _is_segwit(spk: bytes) -> bool:
    return (len(spk) == 22 and spk[:2] == b"\x00\x14") or (len(spk) == 34 and spk[:2] == b"\x00\x20")


def _txout_fields(o: T.TxOut) -> dict[str, Any]:
    return {"value": o.value, "script_pubkey": o.script_pubkey}


def _txout_from(d: Any) -> T.TxOut:
    try:
        o = T.TxOut(int(d["value"]), bytes(d["script_pubkey"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolViolation(f"malformed change output: {e}") from e
    if o.value <= 0 or not o.script_pubkey:
        raise ProtocolViolation("change outputs must be positive")
    return o


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version for the store's history (the watcher needs old ones to recognise and sweep)."""

    version: L.Version
    peer_signature: bytes | None
    txid: str


@dataclass(frozen=True, slots=True)
class PersistThenSend:
    channel_id: bytes
    snapshot: dict[str, Any]
    versions: tuple[StoredVersion, ...] = ()
    messages: tuple[Message, ...] = ()
    durable: bool = True


@dataclass(frozen=True, slots=True)
class Send:
    """A message that carries no new commitment (acks of duplicates, errors)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    channel_id: bytes
    raw_tx: bytes
    label: str


@dataclass(frozen=True, slots=True)
class SignFunding:
    """Sign our inputs ``input_indices`` of ``unsigned_tx``, then call ``Channel.funding_signed``."""

    channel_id: bytes
    unsigned_tx: bytes
    input_indices: tuple[int, ...]
    inputs: tuple[FundingInput, ...]


@dataclass(frozen=True, slots=True)
class Notify:
    channel_id: bytes
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


Action = PersistThenSend | Send | Broadcast | SignFunding | Notify


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    channel_id: bytes
    state: str
    role: str
    balances: tuple[int, int]
    local_balance: int
    remote_balance: int
    fee: int
    escrows: int
    bets: int
    number: int
    locktime: int
    switches_left: int
    budget_low: bool
    have_turn: bool


# --- the channel --------------------------------------------------------------------------


class Channel:
    """One trade channel seen from one side (``role``)."""

    def __init__(self, *, channel_id: bytes, role: str, params: ChannelParams, privkey: bytes,
                 payout_script: bytes, inputs: list[FundingInput], change: list[T.TxOut],
                 funding_locktime: int) -> None:
        if len(channel_id) != 32 or role not in L.ROLES:
            raise InvalidRequest("channel_id must be 32 bytes and role a channel role")
        self.channel_id = channel_id
        self.role = role
        self.params = params
        self._priv = privkey
        self._key = coincurve.PrivateKey(privkey)  # built once: key setup costs as much as a signature
        self.pubkey = T.pubkey_of(privkey)
        self.payout_script = payout_script
        self.inputs = list(inputs)
        self.change = list(change)
        self.funding_locktime = funding_locktime
        self.state = ChannelState.PROPOSED
        self.remote_pubkey = b""
        self.remote_payout = b""
        self.remote_inputs: list[FundingInput] = []
        self.remote_change: list[T.TxOut] = []
        self.setup: L.Setup | None = None
        self.funding_raw = b""
        self.funding_witnesses: dict[int, list[bytes]] = {}
        self.funding_sigs_sent = False
        self.current = L.initial_version(params)
        self.best: L.Version | None = None
        self.best_sig: bytes | None = None
        self.pending: L.Version | None = None
        self.pending_kind = ""  # "update" | "propose" | "signed" | "incoming"
        self.pending_op: L.Op | None = None
        self.pending_peer_sig: bytes | None = None
        self.outbox: list[Message] = []
        self.preimages: dict[bytes, bytes] = {}
        self.announcements: dict[bytes, Announcement] = {}
        self.have_turn = role == L.OPENER
        self.turn_seq = 0  # grants so far (sent or received); a grant with a lower number is stale
        self.turn_requested = False
        self.peer_ready = False
        self.budget_warned = False
        self.close_raw = b""
        self.close_sig = b""

    # ---- helpers ----------------------------------------------------------------------

    @property
    def me(self) -> int:
        return L.idx(self.role)

    @property
    def peer_role(self) -> str:
        return L.other(self.role)

    def _to(self, new: ChannelState) -> None:
        self.state = check_transition(self.state, new)

    def _setup(self) -> L.Setup:
        if self.setup is None:
            raise ProtocolViolation("the funding transaction is not agreed yet")
        return self.setup

    def _persist(self, messages: list[Message] | None = None, versions: list[StoredVersion] | None = None,
                 durable: bool = True) -> PersistThenSend:
        msgs = list(messages or [])
        if msgs:
            self.outbox = msgs
        return PersistThenSend(self.channel_id, self.snapshot(), tuple(versions or ()), tuple(msgs), durable)

    def _sign_version(self, v: L.Version) -> tuple[bytes, str]:
        digest, txid = L.version_digest(v, self._setup())
        return L.sign_digest(digest, self._key), txid

    def _check_peer_sig(self, v: L.Version, sig: bytes) -> str:
        digest, txid = L.version_digest(v, self._setup())
        if not L.verify_digest(digest, self.remote_pubkey, sig):
            raise BadSignature(f"peer signature on version {v.number} does not verify")
        return txid

    def version_raw(self, v: L.Version, peer_sig: bytes) -> bytes:
        """Fully signed serialisation of ``v`` (we add our signature to the peer's)."""
        s = self._setup()
        tx = L.version_tx(v, s)
        mine = L.sign(tx, s, self._key)
        return L.complete(tx, s, {self.pubkey: mine, self.remote_pubkey: peer_sig})

    def best_tx(self) -> bytes:
        """The best version we can broadcast (the newest one the peer signed)."""
        if self.best is None or self.best_sig is None:
            raise InvalidRequest("no fully signed version yet")
        return self.version_raw(self.best, self.best_sig)

    def best_txid(self) -> str:
        if self.best is None:
            return ""
        return L.version_digest(self.best, self._setup())[1]

    def status(self, height: int) -> ChannelStatus:
        v = self.current
        left = self.params.switches_left(v.locktime, height)
        return ChannelStatus(self.channel_id, self.state.name, self.role, v.balances, v.balances[self.me],
                             v.balances[1 - self.me], v.fee, len(v.escrows), len(v.bets), v.number,
                             v.locktime, left, left <= self.params.low_switch_warning, self.have_turn)

    def _require_usable(self) -> None:
        if self.state is not ChannelState.OPEN or not self.peer_ready:
            raise InvalidRequest(f"channel not usable in state {self.state.name}")
        if self.pending is not None:
            raise InvalidRequest("a version is still waiting for the peer")
        if not self.have_turn:
            raise NotMyTurn("the peer holds the turn; call request_turn() and wait for the grant")

    # ---- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, *, channel_id: bytes, params: ChannelParams, privkey: bytes, payout_script: bytes,
             inputs: list[FundingInput], change: list[T.TxOut], height: int) -> tuple[Channel, list[Action]]:
        """Propose a channel. ``inputs``/``change`` fund our contribution (empty if it is zero)."""
        try:
            params.check_sane(height)
        except ParamsRejected as e:
            raise InvalidRequest(str(e), e) from e
        _check_own_funding(inputs, change, params.opener_contribution)
        ch = cls(channel_id=channel_id, role=L.OPENER, params=params, privkey=privkey,
                 payout_script=payout_script, inputs=inputs, change=change, funding_locktime=height)
        msg = OpenChannel(channel_id, params.to_fields(), ch.pubkey, payout_script,
                          [i.to_fields() for i in inputs], [_txout_fields(o) for o in change], height)
        return ch, [ch._persist([msg], durable=False)]

    @classmethod
    def accept(cls, msg: OpenChannel, *, policy: Policy, privkey: bytes, payout_script: bytes,
               inputs: list[FundingInput], change: list[T.TxOut], height: int) -> tuple[Channel, list[Action]]:
        """Accept a proposal (raises ``ParamsRejected`` if it is outside ``policy``)."""
        params = ChannelParams.from_fields(dict(msg.params))
        policy.check(params, height)
        _check_own_funding(inputs, change, params.acceptor_contribution)
        ch = cls(channel_id=msg.channel_id, role=L.ACCEPTOR, params=params, privkey=privkey,
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
        contrib = (self.params.acceptor_contribution if self.role == L.OPENER
                   else self.params.opener_contribution)
        if sum(i.value for i in self.remote_inputs) < contrib + sum(o.value for o in self.remote_change):
            raise ProtocolViolation("peer's funding inputs do not cover its contribution and change")

    def _roles_ordered(self, mine: Any, theirs: Any) -> tuple[Any, Any]:
        return (mine, theirs) if self.role == L.OPENER else (theirs, mine)

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
        self.setup = L.Setup(T.txid(tx), 0, self.params.capacity, (pubkeys[0], pubkeys[1]),
                             (payouts[0], payouts[1]))

    def my_input_indices(self) -> tuple[int, ...]:
        return tuple(n for n, (_, mine) in enumerate(self._all_inputs()) if mine)

    def on_open_channel(self, msg: OpenChannel, height: int) -> list[Action]:
        """A resent open_channel for a channel we already accepted: answer with our last messages."""
        if self.role != L.ACCEPTOR or msg.funding_pubkey != self.remote_pubkey:
            raise ProtocolViolation("open_channel for an existing channel")
        return [Send(m) for m in self.outbox]

    def on_accept_channel(self, msg: AcceptChannel, height: int) -> list[Action]:
        if self.role != L.OPENER or self.state is not ChannelState.PROPOSED:
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
        if self.role == L.OPENER:
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
        return [self._persist(durable=False)] + self._maybe_opened()

    def _maybe_opened(self) -> list[Action]:
        if self.state is ChannelState.OPEN and self.peer_ready:
            return [Notify(self.channel_id, "opened", {"balances": list(self.current.balances)})]
        return []

    def abort(self) -> list[Action]:
        """Abandon an open attempt; allowed until our funding input signatures are out."""
        if self.funding_sigs_out():
            raise InvalidRequest("our funding signatures are out; only the refund path is safe now")
        self._to(ChannelState.ABORTED)
        return [self._persist(durable=False)]

    def funding_sigs_out(self) -> bool:
        return any(i in self.funding_witnesses for i in self.my_input_indices())

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
        if st is ChannelState.OPEN:
            if height >= self.current.locktime - self.params.safety_margin:
                # The nLockTime budget is spent: an older version could soon mature.
                acts.append(Notify(self.channel_id, "lifetime_expired", {"height": height}))
                return acts + self.force_close(height)
            left = self.params.switches_left(self.current.locktime, height)
            if left <= self.params.low_switch_warning and not self.budget_warned:
                self.budget_warned = True
                acts.append(self._persist(durable=False))
                acts.append(Notify(self.channel_id, "switch_budget_low",
                                   {"switches_left": left, "advice": "close cooperatively and reopen"}))
            return acts
        if st is ChannelState.FORCE_CLOSING and self.best is not None and self.best.locktime <= height:
            acts.append(Broadcast(self.channel_id, self.best_tx(), f"version {self.best.number}"))
        return acts

    def on_funding_spent(self, txid: str, confirmed: bool, height: int) -> list[Action]:
        """The funding output was spent by ``txid`` (in the mempool, or confirmed)."""
        if self.state in (ChannelState.CLOSED, ChannelState.ABORTED):
            return []
        ours = {self.best_txid(), T.txid(T.parse_tx(self.close_raw)) if self.close_raw else ""}
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

    # ---- turn taking ------------------------------------------------------------------

    def request_turn(self) -> list[Action]:
        if self.have_turn:
            return []
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
        self.turn_seq = msg.number
        return [self._persist(durable=False), Notify(self.channel_id, "turn", {})]

    # ---- single-signed updates ---------------------------------------------------------

    def _single(self, op: L.Op, height: int) -> list[Action]:
        self._require_usable()
        try:
            new = L.apply(self.params, self.current, op, self.role, height)
        except RuleViolation as e:
            raise InvalidRequest(str(e), e) from e
        sig, txid = self._sign_version(new)
        self.pending, self.pending_kind, self.pending_op = new, "update", op
        msg = Update(self.channel_id, new.to_fields(), L.op_to_fields(op), sig)
        return [self._persist([msg], [StoredVersion(new, None, txid)])]

    def pay(self, amount: int, height: int) -> list[Action]:
        return self._single(L.Pay(amount), height)

    def offer_escrow(self, amount: int, preimage: bytes, height: int) -> tuple[int, list[Action]]:
        """Offer an escrow whose hash is ``sha256(preimage)``; we keep the preimage to commit later."""
        if len(preimage) != 32:
            raise InvalidRequest("escrow preimages are 32 bytes")
        h = S.sha256(preimage)
        eid = self.current.next_id
        # The preimage goes into the same snapshot as our signed offer, so a restart can commit.
        self.preimages[h] = preimage
        try:
            acts = self._single(L.OfferEscrow(amount, h), height)
        except Exception:
            del self.preimages[h]
            raise
        return eid, acts

    def commit_escrow(self, escrow_id: int, height: int) -> list[Action]:
        e = self.current.escrow(escrow_id)
        pre = self.preimages.get(e.payment_hash)
        if pre is None:
            raise InvalidRequest("we do not know this escrow's preimage")
        return self._single(L.CommitEscrow(escrow_id, pre), height)

    def return_escrow(self, escrow_id: int, height: int) -> list[Action]:
        return self._single(L.ReturnEscrow(escrow_id), height)

    def settle_bet(self, bet_id: int, preimage: bytes, height: int) -> list[Action]:
        """Pay out a bet we lost (the oracle revealed ``preimage``)."""
        return self._single(L.SettleBet(bet_id, preimage), height)

    def on_update(self, msg: Update, height: int) -> list[Action]:
        if self.state is not ChannelState.OPEN:
            raise ProtocolViolation(f"update in state {self.state.name}")
        v = L.Version.from_fields(dict(msg.version))
        op = L.op_from_fields(dict(msg.op))
        if v.number == self.current.number and v == self.current and msg.signature == self.best_sig:
            return [Send(UpdateAck(self.channel_id, v.number))]  # duplicate after a reconnect
        if self.have_turn:
            raise ProtocolViolation("the peer signed a version while we hold the turn")
        if isinstance(op, L.MUTUAL):
            raise ProtocolViolation("bets need both signatures (mutual_propose)")
        self._check_proposal(v, op, height)
        txid = self._check_peer_sig(v, msg.signature)
        return self._accept_version(v, op, msg.signature, txid, [UpdateAck(self.channel_id, v.number)])

    def _check_proposal(self, v: L.Version, op: L.Op, height: int) -> None:
        cur = self.current
        if v.number != cur.number + 1:
            raise VersionViolation(f"version {v.number} after {cur.number}")
        if v.locktime > cur.locktime:
            raise LocktimeViolation(f"nLockTime {v.locktime} later than current {cur.locktime}")
        if v.fee < cur.fee:
            raise FeeViolation(f"fee {v.fee} below current {cur.fee}")
        L.check_invariants(self.params, v)
        signer = self.peer_role
        expected = L.apply(self.params, cur, op, signer, height)
        if v.locktime != expected.locktime:
            raise LocktimeViolation(f"nLockTime {v.locktime}, rules give {expected.locktime}")
        if v.fee != expected.fee:
            raise FeeViolation(f"fee {v.fee}, rules give {expected.fee}")
        if v.balances != expected.balances:
            raise BalanceViolation(f"balances {v.balances}, operation gives {expected.balances}")
        if v != expected:
            raise EscrowViolation("contracts or bookkeeping differ from what the operation gives")

    def _accept_version(self, v: L.Version, op: L.Op, sig: bytes, txid: str, reply: list[Message]) -> list[Action]:
        acts: list[Action] = []
        self.current = v
        self.best, self.best_sig = v, sig
        acts.extend(self._events_for(op, v))
        return [self._persist(reply, [StoredVersion(v, sig, txid)])] + acts

    def _events_for(self, op: L.Op, v: L.Version) -> list[Action]:
        cid = self.channel_id
        if isinstance(op, L.Pay):
            return [Notify(cid, "payment", {"amount": op.amount, "number": v.number})]
        if isinstance(op, L.OfferEscrow):
            return [Notify(cid, "escrow_offered", {"amount": op.amount, "payment_hash": op.payment_hash,
                                                   "escrow_id": v.next_id - 1})]
        if isinstance(op, L.CommitEscrow):
            self.preimages[S.sha256(op.preimage)] = op.preimage
            return [Notify(cid, "escrow_committed", {"escrow_id": op.escrow_id, "preimage": op.preimage})]
        if isinstance(op, L.ReturnEscrow):
            return [Notify(cid, "escrow_returned", {"escrow_id": op.escrow_id})]
        if isinstance(op, L.SettleBet):
            return [Notify(cid, "bet_settled", {"bet_id": op.bet_id})]
        if isinstance(op, L.PlaceBet):
            self.announcements[op.announcement.digest] = op.announcement
            return [Notify(cid, "bet_placed", {"bet_id": v.next_id - 1})]
        return [Notify(cid, "bet_cancelled", {"bet_id": op.bet_id})]

    def on_update_ack(self, msg: UpdateAck, height: int) -> list[Action]:
        if self.pending is None or self.pending_kind != "update" or msg.number != self.pending.number:
            if msg.number <= self.current.number:
                return []  # duplicate
            raise ProtocolViolation(f"ack for unknown version {msg.number}")
        return self._acked()

    def _acked(self) -> list[Action]:
        assert self.pending is not None and self.pending_op is not None
        v, op = self.pending, self.pending_op
        self.current = v
        self.pending, self.pending_kind, self.pending_op = None, "", None
        acts: list[Action] = [self._persist(durable=False)]
        if isinstance(op, L.Pay):
            acts.append(Notify(self.channel_id, "payment_sent", {"amount": op.amount, "number": v.number}))
        if self.turn_requested:
            acts.extend(self._grant())
        return acts

    # ---- mutual versions (bets) ----------------------------------------------------------

    def propose_bet(self, announcement: Announcement, winners: tuple[str, ...], stakes: tuple[int, int],
                    height: int) -> list[Action]:
        """Propose a bet: ``winners[i]`` (a role, or '' for a push) takes both stakes on outcome i."""
        return self._propose(L.PlaceBet(announcement, winners, stakes), height)

    def cancel_bet(self, bet_id: int, height: int) -> list[Action]:
        """Cancel a bet (stakes back); also the default case after the oracle's deadline."""
        return self._propose(L.CancelBet(bet_id), height)

    def _propose(self, op: L.Op, height: int) -> list[Action]:
        self._require_usable()
        try:
            new = L.apply(self.params, self.current, op, self.role, height)
        except RuleViolation as e:
            raise InvalidRequest(str(e), e) from e
        self.pending, self.pending_kind, self.pending_op = new, "propose", op
        if isinstance(op, L.PlaceBet):
            self.announcements[op.announcement.digest] = op.announcement
        return [self._persist([MutualPropose(self.channel_id, new.to_fields(), L.op_to_fields(op))])]

    def on_mutual_propose(self, msg: MutualPropose, height: int) -> list[Action]:
        if self.state is not ChannelState.OPEN:
            raise ProtocolViolation(f"mutual_propose in state {self.state.name}")
        v = L.Version.from_fields(dict(msg.version))
        op = L.op_from_fields(dict(msg.op))
        if self.pending is not None and self.pending_kind in ("signed", "incoming") and v == self.pending:
            return [Send(m) for m in self.outbox] if self.pending_kind == "signed" else []
        if v.number <= self.current.number:
            return []  # already complete
        if self.have_turn or self.pending is not None:
            raise ProtocolViolation("the peer proposed while we hold the turn")
        if not isinstance(op, L.MUTUAL):
            raise ProtocolViolation("only bets are mutual")
        self._check_proposal(v, op, height)
        self.pending, self.pending_kind, self.pending_op = v, "incoming", op
        info: dict[str, Any] = {"number": v.number, "op": op.kind}
        if isinstance(op, L.PlaceBet):
            info.update(event_id=op.announcement.event_id, stakes=list(op.stakes), winners=list(op.winners))
        return [self._persist(durable=False), Notify(self.channel_id, "proposal", info)]

    def accept_proposal(self) -> list[Action]:
        """Sign the peer's pending bet proposal (the local user agreed to it)."""
        if self.pending is None or self.pending_kind != "incoming":
            raise InvalidRequest("no proposal to accept")
        op = self.pending_op
        if isinstance(op, L.PlaceBet):
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
            if msg.number <= self.current.number:
                return [Send(m) for m in self.outbox if isinstance(m, MutualSign)]
            raise ProtocolViolation(f"mutual_sign for unknown version {msg.number}")
        v, op = self.pending, self.pending_op
        assert op is not None
        txid = self._check_peer_sig(v, msg.signature)
        kind = self.pending_kind
        self.pending, self.pending_kind, self.pending_op = None, "", None
        if kind == "propose":
            mine, _ = self._sign_version(v)
            return self._accept_version(v, op, msg.signature, txid, [MutualSign(self.channel_id, v.number, mine)])
        return self._accept_version(v, op, msg.signature, txid, [])

    def on_channel_error(self, msg: ChannelErrorMsg, height: int) -> list[Action]:
        acts: list[Action] = [Notify(self.channel_id, "peer_error", {"code": msg.code, "text": msg.text})]
        if self.pending is not None and self.pending_kind == "propose":
            # No signature of ours went out with a proposal, so it can be dropped safely.
            self.pending, self.pending_kind, self.pending_op = None, "", None
            acts.insert(0, self._persist(durable=False))
        return acts

    # ---- closing ------------------------------------------------------------------------

    def close(self, height: int) -> list[Action]:
        """Cooperative close at the current balances (final transaction, no nLockTime)."""
        self._require_usable()
        try:
            tx = L.close_tx(self.current, self._setup())
        except RuleViolation as e:
            raise InvalidRequest(str(e), e) from e
        self.close_sig = L.sign(tx, self._setup(), self._key)
        self._to(ChannelState.CLOSING)
        return [self._persist([CloseProposal(self.channel_id, self.close_sig)])]

    def on_close_proposal(self, msg: CloseProposal, height: int) -> list[Action]:
        if self.state is ChannelState.CLOSING and self.close_raw:
            again: list[Action] = [Send(m) for m in self.outbox]
            return again + [Broadcast(self.channel_id, self.close_raw, "close")]
        if self.state is not ChannelState.OPEN or self.pending is not None or self.have_turn:
            raise ProtocolViolation("close_proposal unexpected")
        s = self._setup()
        tx = L.close_tx(self.current, s)
        if not L.verify(tx, s, self.remote_pubkey, msg.signature):
            raise BadSignature("close signature does not verify")
        mine = L.sign(tx, s, self._key)
        self.close_raw = L.complete(tx, s, {self.pubkey: mine, self.remote_pubkey: msg.signature})
        self._to(ChannelState.CLOSING)
        return [self._persist([CloseAccept(self.channel_id, mine)]), Broadcast(self.channel_id, self.close_raw, "close")]

    def on_close_accept(self, msg: CloseAccept, height: int) -> list[Action]:
        if self.state is not ChannelState.CLOSING:
            return []
        if self.close_raw:
            return [Broadcast(self.channel_id, self.close_raw, "close")]
        s = self._setup()
        tx = L.close_tx(self.current, s)
        if not L.verify(tx, s, self.remote_pubkey, msg.signature):
            raise BadSignature("close signature does not verify")
        self.close_raw = L.complete(tx, s, {self.pubkey: self.close_sig, self.remote_pubkey: msg.signature})
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

    # ---- reconnecting -------------------------------------------------------------------

    def reestablish(self) -> list[Action]:
        """Messages to send after a (re)connect: our position, then our last outgoing messages."""
        pend = self.pending.number if self.pending is not None and self.pending_kind in ("update", "propose", "signed") else 0
        acts: list[Action] = [Send(Reestablish(self.channel_id, self.current.number, pend))]
        # Messages of the opening the peer may have missed (receivers ignore duplicates); the
        # outbox only holds the latest step's messages.
        if self.role == L.OPENER and self.best is not None and self.state is not ChannelState.ACCEPTED:
            sig, _ = self._sign_version(L.initial_version(self.params))
            acts.append(Send(RefundSignature(self.channel_id, sig)))
        if self.state is ChannelState.OPEN:
            acts.append(Send(ChannelReady(self.channel_id)))
        acts.extend(Send(m) for m in self.outbox if not isinstance(m, (RefundSignature, ChannelReady)) or
                    self.role == L.ACCEPTOR and isinstance(m, RefundSignature))
        acts.extend(self._funding_progress())
        return acts

    def on_reestablish(self, msg: Reestablish, height: int) -> list[Action]:
        acts: list[Action] = []
        if self.pending is not None and self.pending_kind == "update" and msg.number >= self.pending.number:
            acts.extend(self._acked())
        known = self.current.number + (1 if self.pending is not None else 0)
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
        saved = {k: (v.copy() if isinstance(v, (dict, list)) else v) for k, v in self.__dict__.items()}
        try:
            result: list[Action] = handler(msg, height)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        return result

    # ---- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "channel_id": self.channel_id, "role": self.role, "state": self.state.name,
            "params": self.params.to_fields(), "pubkey": self.pubkey, "payout_script": self.payout_script,
            "inputs": [i.to_fields() for i in self.inputs], "change": [_txout_fields(o) for o in self.change],
            "funding_locktime": self.funding_locktime,
            "remote_pubkey": self.remote_pubkey, "remote_payout": self.remote_payout,
            "remote_inputs": [i.to_fields() for i in self.remote_inputs],
            "remote_change": [_txout_fields(o) for o in self.remote_change],
            "setup": self.setup.to_fields() if self.setup else None,
            "funding_raw": self.funding_raw,
            "funding_witnesses": {str(k): v for k, v in self.funding_witnesses.items()},
            "current": self.current.to_fields(),
            "best": self.best.to_fields() if self.best else None, "best_sig": self.best_sig,
            "pending": self.pending.to_fields() if self.pending else None, "pending_kind": self.pending_kind,
            "pending_op": L.op_to_fields(self.pending_op) if self.pending_op else None,
            "outbox": [{"name": m.NAME, "fields": m.to_fields()} for m in self.outbox],
            "preimages": [[h, p] for h, p in self.preimages.items()],
            "announcements": [a.to_fields() for a in self.announcements.values()],
            "have_turn": self.have_turn, "turn_requested": self.turn_requested, "turn_seq": self.turn_seq,
            "peer_ready": self.peer_ready, "budget_warned": self.budget_warned,
            "close_raw": self.close_raw, "close_sig": self.close_sig,
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], privkey: bytes) -> Channel:
        ch = cls(channel_id=snap["channel_id"], role=snap["role"],
                 params=ChannelParams.from_fields(snap["params"]), privkey=privkey,
                 payout_script=snap["payout_script"], inputs=[], change=[],
                 funding_locktime=snap["funding_locktime"])
        if ch.pubkey != snap["pubkey"]:
            raise InvalidRequest("private key does not match the channel's funding key")
        ch._restore(snap)
        return ch

    def _restore(self, snap: dict[str, Any]) -> None:
        from eschaton.core.channel.messages import message_from_fields

        self.state = ChannelState[snap["state"]]
        self.inputs = [FundingInput.from_fields(i) for i in snap["inputs"]]
        self.change = [_txout_from(o) for o in snap["change"]]
        self.remote_pubkey = snap["remote_pubkey"]
        self.remote_payout = snap["remote_payout"]
        self.remote_inputs = [FundingInput.from_fields(i) for i in snap["remote_inputs"]]
        self.remote_change = [_txout_from(o) for o in snap["remote_change"]]
        self.setup = L.Setup.from_fields(snap["setup"]) if snap["setup"] else None
        self.funding_raw = snap["funding_raw"]
        self.funding_witnesses = {int(k): list(v) for k, v in snap["funding_witnesses"].items()}
        self.current = L.Version.from_fields(snap["current"])
        self.best = L.Version.from_fields(snap["best"]) if snap["best"] else None
        self.best_sig = snap["best_sig"]
        self.pending = L.Version.from_fields(snap["pending"]) if snap["pending"] else None
        self.pending_kind = snap["pending_kind"]
        self.pending_op = L.op_from_fields(snap["pending_op"]) if snap["pending_op"] else None
        self.outbox = [message_from_fields(m["name"], m["fields"]) for m in snap["outbox"]]
        self.preimages = {bytes(h): bytes(p) for h, p in snap["preimages"]}
        self.announcements = {}
        for a in snap["announcements"]:
            ann = Announcement.from_fields(a)
            self.announcements[ann.digest] = ann
        self.have_turn = snap["have_turn"]
        self.turn_requested = snap["turn_requested"]
        self.turn_seq = snap["turn_seq"]
        self.peer_ready = snap["peer_ready"]
        self.budget_warned = snap["budget_warned"]
        self.close_raw = snap["close_raw"]
        self.close_sig = snap["close_sig"]


# Snapshot keys that only change while the channel opens; the store writes them once.
STATIC_KEYS = frozenset({
    "schema", "channel_id", "role", "params", "pubkey", "payout_script", "inputs", "change",
    "funding_locktime", "remote_pubkey", "remote_payout", "remote_inputs", "remote_change", "setup",
    "funding_raw", "funding_witnesses",
})


class NotMyTurn(InvalidRequest):
    """The peer holds the turn: ``request_turn()`` and retry after the ``turn`` notification."""


def _check_own_funding(inputs: list[FundingInput], change: list[T.TxOut], contribution: int) -> None:
    for i in inputs:
        if not _is_segwit(i.script_pubkey):
            raise InvalidRequest("funding inputs must be segwit v0 (a fixed txid before signing)")
    if sum(i.value for i in inputs) < contribution + sum(o.value for o in change):
        raise InvalidRequest("funding inputs do not cover the contribution and change")
    if contribution > 0 and not inputs:
        raise InvalidRequest("a contribution needs funding inputs")
