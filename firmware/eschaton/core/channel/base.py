"""State and helpers shared by the channel's parts (opening, updates, closing).

``ChannelBase`` holds every field of a channel and its snapshot; the behaviour lives in the
mixins ``Opening``, ``Updates`` and ``Closing`` that ``channel.Channel`` combines.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Self

import coincurve

from eschaton.core import tx as T
from eschaton.core.channel.actions import (
    Action,
    Broadcast,
    ChannelStatus,
    FundingInput,
    Notify,
    PersistThenSend,
    StoredVersion,
    _txout_fields,
    _txout_from,
)
from eschaton.core.channel.errors import (
    BadSignature,
    InvalidRequest,
    NotMyTurn,
    ProtocolViolation,
)
from eschaton.core.channel.messages import (
    Message,
    TurnGrant,
)
from eschaton.core.channel.ops import Op, op_from_fields, op_to_fields
from eschaton.core.channel.oracle import Announcement
from eschaton.core.channel.params import ChannelParams
from eschaton.core.channel.state import ChannelState, check_transition
from eschaton.core.channel.transactions import (
    Setup,
    complete,
    reanchor_tx,
    sign,
    sign_digest,
    verify_digest,
    version_digest,
    version_tx,
)
from eschaton.core.channel.versions import (
    OPENER,
    ROLES,
    Version,
    close_balances,
    idx,
    initial_version,
    other,
    reanchored_version,
)

FUNDING_SEQUENCE = T.SEQUENCE_LOCKTIME


class ChannelBase:
    """One trade channel seen from one side (``role``): fields, helpers, snapshot."""

    def __init__(self, *, channel_id: bytes, role: str, params: ChannelParams, privkey: bytes,
                 payout_script: bytes, inputs: list[FundingInput], change: list[T.TxOut],
                 funding_locktime: int) -> None:
        if len(channel_id) != 32 or role not in ROLES:
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
        self.setup: Setup | None = None
        self.funding_raw = b""
        self.funding_witnesses: dict[int, list[bytes]] = {}
        self.funding_sigs_sent = False
        self.current = initial_version(params)
        self.best: Version | None = None
        self.best_sig: bytes | None = None
        self.pending: Version | None = None
        self.pending_kind = ""  # "update" | "propose" | "signed" | "incoming"
        self.pending_op: Op | None = None
        self.pending_peer_sig: bytes | None = None
        self.outbox: list[Message] = []
        self.preimages: dict[bytes, bytes] = {}
        # Escrows fulfilled and not yet committed, by escrow id -> preimage: as payee, those we
        # fulfilled (``escrow_fulfil`` is resent by ``reestablish`` until the commit arrives); as
        # payer, those the peer fulfilled that we still have to commit.
        self.fulfilled: dict[int, bytes] = {}
        self.announcements: dict[bytes, Announcement] = {}
        self.have_turn = role == OPENER
        self.turn_seq = 0  # grants so far (sent or received); a grant with a lower number is stale
        self.turn_requested = False  # (holder) the peer asked for the turn; granted once nothing is in flight
        # (requester) we asked for the turn and have not received it: ``reestablish`` asks again,
        # so a request lost in flight or forgotten by a restarted holder costs one round trip
        # after the relink, not a timeout. Not persisted: it is the wish of a local request in
        # this process, and after a restart no one waits for the turn.
        self.turn_wanted = False
        self.peer_ready = False
        self.budget_warned = False
        self.close_raw = b""
        self.close_sig = b""
        # A re-anchor being signed: {"lifetime", "fee", "proposer", "peer_refund_sig",
        # "anchor_sig_sent", "anchor_raw"}; None otherwise. ("anchor_raw" is set only in
        # snapshots of older firmware, which waited for R to confirm before moving.)
        self.reanchor: dict[str, Any] | None = None
        # Re-anchor transactions fully signed and moved to, not yet confirmed, oldest first:
        # {"txid", "raw", "spends": [txid, vout] (the earlier anchor), "old_locktime" (the
        # earliest nLockTime of any version on that anchor), "warned"}. The channel already
        # lives on the newest one; the watcher follows each until it confirms (``reanchor``).
        self.anchors: list[dict[str, Any]] = []
        self.mutual_proposer = ""  # who proposed the last mutual version (answers resends)
        self._outbox_memo: dict[int, tuple[Message, dict[str, Any]]] = {}
        self._static_memo: tuple[ChannelParams, Setup | None, dict[str, Any]] | None = None

    # ---- helpers ----------------------------------------------------------------------

    @property
    def me(self) -> int:
        return idx(self.role)

    @property
    def peer_role(self) -> str:
        return other(self.role)

    @property
    def asks_turn(self) -> bool:
        """We asked for the turn and have not received it: ``reestablish`` asks again."""
        return self.turn_wanted and not self.have_turn and self.state is ChannelState.OPEN

    def _to(self, new: ChannelState) -> None:
        self.state = check_transition(self.state, new)

    def _setup(self) -> Setup:
        if self.setup is None:
            raise ProtocolViolation("the funding transaction is not agreed yet")
        return self.setup

    def _persist(self, messages: list[Message] | None = None, versions: list[StoredVersion] | None = None,
                 durable: bool = True) -> PersistThenSend:
        msgs = list(messages or [])
        if msgs:
            self.outbox = msgs
        return PersistThenSend(self.channel_id, self.snapshot, tuple(versions or ()), tuple(msgs), durable)

    def _sign_version(self, v: Version) -> tuple[bytes, str]:
        digest, txid = version_digest(v, self._setup())
        return sign_digest(digest, self._key), txid

    def _check_peer_sig(self, v: Version, sig: bytes) -> str:
        digest, txid = version_digest(v, self._setup())
        if not verify_digest(digest, self.remote_pubkey, sig):
            raise BadSignature(f"peer signature on version {v.number} does not verify")
        return txid

    def version_raw(self, v: Version, peer_sig: bytes) -> bytes:
        """Fully signed serialisation of ``v`` (we add our signature to the peer's)."""
        s = self._setup()
        tx = version_tx(v, s)
        mine = sign(tx, s, self._key)
        return complete(tx, s, {self.pubkey: mine, self.remote_pubkey: peer_sig})

    def best_tx(self) -> bytes:
        """The best version we can broadcast (the newest one the peer signed)."""
        if self.best is None or self.best_sig is None:
            raise InvalidRequest("no fully signed version yet")
        return self.version_raw(self.best, self.best_sig)

    def best_txid(self) -> str:
        if self.best is None:
            return ""
        return version_digest(self.best, self._setup())[1]

    def status(self, height: int) -> ChannelStatus:
        v = self.current
        left = self.params.switches_left(v.locktime, height)
        close = close_balances(self.params, v)[self.me] if not (v.escrows or v.bets) else 0
        return ChannelStatus(self.channel_id, self.state.name, self.role, v.balances, v.balances[self.me],
                             v.balances[1 - self.me], v.fee, len(v.escrows), len(v.bets), v.number,
                             v.locktime, left, left <= self.params.low_switch_warning, self.have_turn,
                             v.fee_paid[self.me], close)

    def _require_usable(self, allow_inflight: bool = False) -> None:
        """``allow_inflight``: a single-signed update may pipeline behind ours still in flight."""
        if self.state is not ChannelState.OPEN or not self.peer_ready:
            raise InvalidRequest(f"channel not usable in state {self.state.name}")
        if self.pending is not None and not (allow_inflight and self.pending_kind == "update"):
            raise InvalidRequest("a version is still waiting for the peer")
        if not self.have_turn:
            raise NotMyTurn("the peer holds the turn; call request_turn() and wait for the grant")


    def _maybe_opened(self) -> list[Action]:
        if self.state is ChannelState.OPEN and self.peer_ready:
            return [Notify(self.channel_id, "opened", {"balances": list(self.current.balances)})]
        return []

    # ---- re-anchoring (shared with the chain-facts code) ------------------------------------

    def _reanchor_plan(self, lifetime: int, fee: int, proposer: str) -> tuple[Setup, ChannelParams, Version, str]:
        """(new setup, new params, new initial version, re-anchor txid) for a re-anchor."""
        old = self._setup()
        cap = old.capacity - fee
        tx = reanchor_tx(old, cap)
        txid = T.txid(tx)
        new_setup = Setup(txid, 0, cap, old.pubkeys, old.payout_scripts)
        # Contributions are history once the channel runs; capacity is what the rules use.
        params = replace(self.params, opener_contribution=cap, acceptor_contribution=0, lifetime=lifetime)
        # The fee reserve of the old output goes back to whoever paid it (docs/channels.md).
        v0 = reanchored_version(self.params, self.current, self.current.number + 1, lifetime, fee, proposer)
        return new_setup, params, v0, txid

    def reanchor_txid(self) -> str:
        if self.reanchor is None:
            return ""
        return self._reanchor_plan(self.reanchor["lifetime"], self.reanchor["fee"], self.reanchor["proposer"])[3]

    def _switch_anchor(self, raw: bytes, confirmed: bool, messages: list[Message] | None = None) -> list[Action]:
        """The re-anchor transaction R is fully signed (``raw``) or seen confirmed: continue on
        R's output with the new budget at once (``reanchor`` module rules). Unless it is
        confirmed, R joins ``anchors`` for the watcher to follow."""
        assert self.reanchor is not None and self.reanchor["peer_refund_sig"] is not None
        r = self.reanchor
        old = self._setup()
        setup, params, v0, rtxid = self._reanchor_plan(r["lifetime"], r["fee"], r["proposer"])
        if not confirmed:
            self.anchors.append({"txid": rtxid, "raw": raw, "spends": [old.funding_txid, old.funding_vout],
                                 "old_locktime": self.current.locktime, "warned": False})
        sig = r["peer_refund_sig"]
        self.setup, self.params = setup, params
        self.current, self.best, self.best_sig = v0, v0, sig
        self.reanchor = None
        self.budget_warned = False
        acts: list[Action] = []
        if self.state is ChannelState.REANCHORING:
            self.state = check_transition(self.state, ChannelState.OPEN)
            if self.turn_requested and self.have_turn and self.pending is None:
                # The peer asked for the turn while the re-anchor was being signed.
                self.have_turn = False
                self.turn_requested = False
                self.turn_seq += 1
                messages = [*(messages or []), TurnGrant(self.channel_id, self.turn_seq)]
        # (in FORCE_CLOSING we stay there: on_block broadcasts the new refund once it is final)
        # The proposal's messages are done with: the peer signed R, so it has them all.
        self.outbox = list(messages or [])
        digest, txid = version_digest(v0, setup)
        acts.append(self._persist(messages, versions=[StoredVersion(v0, sig, txid)]))
        if raw:
            acts.append(Broadcast(self.channel_id, raw, "re-anchor"))
        acts.append(Notify(self.channel_id, "reanchored", {"funding_txid": setup.funding_txid,
                                                          "lifetime": params.lifetime, "confirmed": confirmed}))
        return acts

    def _anchors_near_maturity(self, height: int) -> list[Action]:
        """Part of the budget check: an unconfirmed R whose old versions will soon be valid is
        broadcast again and reported once (``reanchor_unconfirmed``)."""
        acts: list[Action] = []
        for n, a in enumerate(self.anchors):
            if height >= a["old_locktime"] - self.params.safety_margin and not a["warned"]:
                a["warned"] = True
                acts.append(self._persist(durable=False))
                acts.extend(Broadcast(self.channel_id, b["raw"], "re-anchor") for b in self.anchors[n:])
                acts.append(Notify(self.channel_id, "reanchor_unconfirmed",
                                   {"txid": a["txid"], "old_locktime": a["old_locktime"], "height": height}))
                break
        return acts

    def on_old_anchor(self, txid: str, vout: int, spender: str | None, confirmed: bool,
                      height: int) -> list[Action]:
        """What the chain says about an earlier anchor (``watched_anchors``): ``spender`` is the
        transaction spending it (None: unspent), ``confirmed`` whether that one is in a block."""
        i = next((n for n, a in enumerate(self.anchors) if a["spends"] == [txid, vout]), None)
        if i is None:
            return []
        a = self.anchors[i]
        if spender == a["txid"]:
            if not confirmed:
                return []  # on its way
            # R (and every earlier one: R spends their outputs) is in a block.
            del self.anchors[:i + 1]
            return [self._persist(durable=False),
                    Notify(self.channel_id, "reanchor_confirmed", {"txid": spender})]
        chain: list[Action] = [Broadcast(self.channel_id, b["raw"], "re-anchor") for b in self.anchors[i:]]
        if spender is None:
            return chain  # R left the mempool (or never reached it): again
        if not confirmed:
            # An old version competes with R for the old output: answer with R (see the rules).
            return chain + [Notify(self.channel_id, "reanchor_contested", {"txid": spender})]
        # An old version confirmed: the new anchor can never exist. The channel ended on chain.
        self.anchors = []
        acts: list[Action] = []
        if self.state is not ChannelState.FORCE_CLOSING:
            self._to(ChannelState.FORCE_CLOSING)
        self._to(ChannelState.CLOSED)
        acts.append(self._persist(durable=False))
        acts.append(Notify(self.channel_id, "closed", {"txid": spender, "ours": False}))
        return acts

    def watched_anchors(self) -> list[tuple[str, int]]:
        """Outpoints of earlier anchors whose re-anchor transaction is not confirmed yet."""
        return [(a["spends"][0], int(a["spends"][1])) for a in self.anchors]

    def _outbox_fields(self) -> list[dict[str, Any]]:
        """The outbox as snapshot fields. A pipelining payer's outbox holds every unacknowledged
        version and is snapshotted on each new one, so each (immutable) message's fields are
        built once and reused while it stays in the outbox."""
        memo = self._outbox_memo
        fresh: dict[int, tuple[Message, dict[str, Any]]] = {}
        out = []
        for m in self.outbox:
            hit = memo.get(id(m))
            if hit is None or hit[0] is not m:
                hit = (m, {"name": m.NAME, "fields": m.to_fields()})
            fresh[id(m)] = hit
            out.append(hit[1])
        self._outbox_memo = fresh
        return out

    def _static_fields(self) -> dict[str, Any]:
        """The snapshot's opening-time part (``channel.STATIC_KEYS``). Once the channel is OPEN
        these fields only change by re-anchoring, which replaces ``params`` and ``setup`` (frozen
        objects, held by the cache so their identity cannot be reused); so while OPEN the part is
        built once and reused by every update's snapshot."""
        cached = self._static_memo
        if cached is not None and cached[0] is self.params and cached[1] is self.setup \
                and self.state is ChannelState.OPEN:
            return cached[2]
        fields: dict[str, Any] = {
            "schema": 1,
            "channel_id": self.channel_id, "role": self.role,
            "params": self.params.to_fields(), "pubkey": self.pubkey, "payout_script": self.payout_script,
            "inputs": [i.to_fields() for i in self.inputs], "change": [_txout_fields(o) for o in self.change],
            "funding_locktime": self.funding_locktime,
            "remote_pubkey": self.remote_pubkey, "remote_payout": self.remote_payout,
            "remote_inputs": [i.to_fields() for i in self.remote_inputs],
            "remote_change": [_txout_fields(o) for o in self.remote_change],
            "setup": self.setup.to_fields() if self.setup else None,
            "funding_raw": self.funding_raw,
            "funding_witnesses": {str(k): v for k, v in self.funding_witnesses.items()},
        }
        self._static_memo = (self.params, self.setup, fields) if self.state is ChannelState.OPEN else None
        return fields

    def snapshot(self) -> dict[str, Any]:
        snap = dict(self._static_fields())
        snap.update({
            "state": self.state.name,
            "current": self.current.to_fields(),
            "best": self.best.to_fields() if self.best else None, "best_sig": self.best_sig,
            "pending": self.pending.to_fields() if self.pending else None, "pending_kind": self.pending_kind,
            "pending_op": op_to_fields(self.pending_op) if self.pending_op else None,
            "outbox": self._outbox_fields(),
            "preimages": [[h, p] for h, p in self.preimages.items()],
            "fulfilled": [[i, p] for i, p in self.fulfilled.items()],
            "announcements": [a.to_fields() for a in self.announcements.values()],
            "have_turn": self.have_turn, "turn_requested": self.turn_requested, "turn_seq": self.turn_seq,
            "peer_ready": self.peer_ready, "budget_warned": self.budget_warned,
            "close_raw": self.close_raw, "close_sig": self.close_sig, "reanchor": self.reanchor,
            "anchors": [dict(a) for a in self.anchors],
            "mutual_proposer": self.mutual_proposer,
        })
        return snap

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], privkey: bytes) -> Self:
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
        self.setup = Setup.from_fields(snap["setup"]) if snap["setup"] else None
        self.funding_raw = snap["funding_raw"]
        self.funding_witnesses = {int(k): list(v) for k, v in snap["funding_witnesses"].items()}
        self.current = Version.from_fields(snap["current"])
        self.best = Version.from_fields(snap["best"]) if snap["best"] else None
        self.best_sig = snap["best_sig"]
        self.pending = Version.from_fields(snap["pending"]) if snap["pending"] else None
        self.pending_kind = snap["pending_kind"]
        self.pending_op = op_from_fields(snap["pending_op"]) if snap["pending_op"] else None
        self.outbox = [message_from_fields(m["name"], m["fields"]) for m in snap["outbox"]]
        self.preimages = {bytes(h): bytes(p) for h, p in snap["preimages"]}
        # Absent from snapshots written before escrows could be fulfilled by the payee.
        self.fulfilled = {int(i): bytes(p) for i, p in snap.get("fulfilled", [])}
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
        self.reanchor = snap.get("reanchor")
        self.anchors = [dict(a) for a in snap.get("anchors", [])]
        self.mutual_proposer = snap.get("mutual_proposer", "")


