"""The channel driver: executes the core's actions, persisting before anything is sent.

Rules / theory of operation:
- ``ChannelEndpoint`` owns the ``Channel`` objects of one node and its ``ChannelStore``. Every
  call into a channel (a local request or a peer message) returns actions that are executed here
  strictly in order: ``PersistThenSend`` commits (fsync when durable) and only then hands the
  messages to ``send``; ``Broadcast`` goes to the broadcast queue (drained by the watcher);
  ``SignFunding`` is answered by the funding signer and fed back; ``Notify`` goes to listeners.
- A peer message the core refuses raises a ``RemoteError``; the endpoint answers with a
  ``channel_error`` message and re-raises, the channel itself is unchanged and stays usable.
- ``restore()`` reloads every channel after a restart; ``reconnect(channel_id)`` sends
  ``reestablish`` and the last outgoing messages so the peer can reconcile.
- Group commit: inside ``with endpoint.batch():`` every ``PersistThenSend`` is staged and every
  outgoing message held; when the block ends, the store commits all staged states in one
  transaction (one fsync) and only then are the held messages sent, in order. A payer pipelining
  many versions, or a node taking a burst of messages for many channels, pays one fsync per
  burst instead of one per version, and nothing leaves before the state it depends on is
  durable; broadcasts and notifications of those states are held the same way, so nothing acts
  on a state before it is on disk. If the block raises, what was staged is still committed and
  its messages sent (the channels already moved to those states); if the commit itself fails,
  nothing is sent. Acks are cumulative (``update_ack(n)`` covers every version up to n), so of a
  burst's acks for one channel only the last is sent: one message back per burst instead of one
  per version.
- Payments: ``call(..., payment=record)`` writes the payment's record in the same transaction
  as the channel state holding the version that pays it (staged with it inside a batch), with
  ``number`` set to that version. A request that signs no version carries no record.
- Synchronous on purpose: the store is local SQLite, and the transport callable is expected to
  enqueue (the daemon's link writer, a file, a test queue).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from eschaton.channel.payments import PaymentRecord
from eschaton.channel.store import ChannelStore
from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel import (
    Action,
    Broadcast,
    Channel,
    Notify,
    PersistThenSend,
    Policy,
    Send,
    SignFunding,
)
from eschaton.core.channel.errors import ProtocolViolation
from eschaton.core.channel.messages import ChannelErrorMsg, Message, OpenChannel, UpdateAck
from eschaton.errors import RemoteError

log = logging.getLogger(__name__)

SendFn = Callable[[Message], None]
FundingSigner = Callable[[SignFunding], dict[int, list[bytes]]]


class KeyFundingSigner:
    """Signs P2WPKH funding inputs with keys it is given (node hot keys, tests, the demo)."""

    def __init__(self, privkeys: list[bytes]) -> None:
        self.by_script = {S.p2wpkh(T.pubkey_of(k)): k for k in privkeys}

    def __call__(self, req: SignFunding) -> dict[int, list[bytes]]:
        tx = T.parse_tx(req.unsigned_tx)
        out: dict[int, list[bytes]] = {}
        for i, fi in zip(req.input_indices, req.inputs, strict=True):
            k = self.by_script.get(fi.script_pubkey)
            if k is None:
                raise ProtocolViolation(f"no key for funding input {fi.txid}:{fi.vout}")
            pk = T.pubkey_of(k)
            out[i] = [T.sign_input(tx, i, S.p2wpkh_script_code(pk), fi.value, k), pk]
        return out


@dataclass
class ChannelEndpoint:
    store: ChannelStore
    key_for: Callable[[bytes], bytes]
    send: SendFn
    signer: FundingSigner | None = None
    policy: Policy = field(default_factory=Policy)
    channels: dict[bytes, Channel] = field(default_factory=dict)
    broadcasts: list[tuple[bytes, bytes, str]] = field(default_factory=list)
    # Notifications are events handed to the listeners as they happen, never kept here: a
    # channel makes one per payment for months, so any list of them is a leak.
    listeners: list[Callable[[Notify], None]] = field(default_factory=list)
    after_persist: Callable[[], None] | None = None  # test hook (crash harness)
    _staged: list[PersistThenSend] | None = None  # inside batch(): states to commit together
    _staged_payments: list[PaymentRecord] = field(default_factory=list)  # ... and their payments
    # inside batch(): messages, broadcasts and notifications held until the commit, in order
    _held: list[Message | Broadcast | Notify | None] = field(default_factory=list)
    _last_ack: dict[bytes, int] = field(default_factory=dict)  # inside batch(): index in _held

    # ---- executing actions --------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit (see the module rules). Nested batches join the outermost one."""
        if self._staged is not None:
            yield
            return
        self._staged, self._held, self._last_ack, self._staged_payments = [], [], {}, []
        try:
            yield
        finally:
            staged, held, payments = self._staged, self._held, self._staged_payments
            self._staged, self._held, self._last_ack, self._staged_payments = None, [], {}, []
            if staged:
                self.store.persist_many(staged, payments)
                if self.after_persist is not None:
                    self.after_persist()
            for m in held:
                if isinstance(m, Broadcast | Notify):
                    self._effect(m)
                elif m is not None:
                    self.send(m)

    def _effect(self, act: Broadcast | Notify) -> None:
        if isinstance(act, Broadcast):
            self.broadcasts.append((act.channel_id, act.raw_tx, act.label))
            return
        for fn in self.listeners:
            fn(act)

    def _out(self, m: Message) -> None:
        if self._staged is None:
            self.send(m)
            return
        if isinstance(m, UpdateAck):
            prev = self._last_ack.get(m.channel_id)
            if prev is not None:
                old = self._held[prev]
                if isinstance(old, UpdateAck) and old.number < m.number:
                    self._held[prev] = None  # superseded: acks are cumulative
            self._last_ack[m.channel_id] = len(self._held)
        self._held.append(m)

    def execute(self, ch: Channel, actions: list[Action], payment: PaymentRecord | None = None) -> None:
        for act in actions:
            if isinstance(act, PersistThenSend):
                recs: tuple[PaymentRecord, ...] = ()
                if payment is not None and act.versions:
                    # The version this action makes durable is the one that pays.
                    recs = (replace(payment, number=act.versions[-1].version.number),)
                    payment = None
                if self._staged is not None:
                    self._staged.append(act)
                    self._staged_payments.extend(recs)
                    for m in act.messages:
                        self._out(m)
                    continue
                self.store.persist_many((act,), recs)
                if self.after_persist is not None:
                    self.after_persist()
                for m in act.messages:
                    self.send(m)
            elif isinstance(act, Send):
                self._out(act.message)
            elif isinstance(act, Broadcast | Notify):
                if self._staged is not None:
                    self._held.append(act)  # effects of a state follow its commit
                else:
                    self._effect(act)
            elif isinstance(act, SignFunding):
                if self.signer is None:
                    raise ProtocolViolation("no funding signer configured")
                self.execute(ch, ch.funding_signed(self.signer(act)))

    def call(self, channel_id: bytes, method: str, *args: Any, payment: PaymentRecord | None = None) -> Any:
        """Run a local request on a channel (``pay``, ``offer_escrow``, ``close`` ...).

        ``payment``: the record of the payment this request makes, written with its version."""
        ch = self.channels[channel_id]
        res = getattr(ch, method)(*args)
        value, actions = res if isinstance(res, tuple) else (None, res)
        self.execute(ch, actions, payment)
        return value

    # ---- opening and receiving ----------------------------------------------------------

    def open(self, **kw: Any) -> Channel:
        """``Channel.open`` with the key derived for ``channel_id``; sends ``open_channel``."""
        cid = kw["channel_id"]
        ch, actions = Channel.open(privkey=self.key_for(cid), **kw)
        self.channels[cid] = ch
        self.execute(ch, actions)
        return ch

    def receive(self, msg: Message, height: int, accept_kw: dict[str, Any] | None = None) -> None:
        """Feed one peer message. ``accept_kw`` (payout_script, inputs, change) answers an open."""
        if isinstance(msg, OpenChannel) and msg.channel_id not in self.channels:
            kw = accept_kw or {}
            new, actions = Channel.accept(msg, policy=self.policy, privkey=self.key_for(msg.channel_id),
                                          height=height, payout_script=kw["payout_script"],
                                          inputs=kw.get("inputs", []), change=kw.get("change", []))
            self.channels[msg.channel_id] = new
            self.execute(new, actions)
            return
        found = self.channels.get(msg.channel_id)
        if found is None:
            raise ProtocolViolation("message for an unknown channel")
        ch = found
        try:
            actions = ch.handle(msg, height)
        except RemoteError as e:
            log.warning("channel %s refused %s: %s", msg.channel_id.hex()[:12], msg.NAME, e)
            self._out(ChannelErrorMsg(msg.channel_id, type(e).__name__, str(e)[:200]))
            raise
        self.execute(ch, actions)

    # ---- restart ----------------------------------------------------------------------------

    def restore(self) -> list[Channel]:
        self.channels = {}
        for snap in self.store.load_all():
            cid = snap["channel_id"]
            self.channels[cid] = Channel.from_snapshot(snap, self.key_for(cid))
        return list(self.channels.values())

    def reconnect(self, channel_id: bytes) -> None:
        ch = self.channels[channel_id]
        self.execute(ch, ch.reestablish())

    def take_broadcasts(self) -> list[tuple[bytes, bytes, str]]:
        out, self.broadcasts = self.broadcasts, []
        return out
