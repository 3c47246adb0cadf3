"""Payments by id inside the node: idempotent ``channel.pay`` and ``channel.payment``.

Rules / theory of operation (the record and its states: ``eschaton.channel.payments``):
- ``pay(channel, amount, id)``: an id the node already signed for is not paid again. The same
  channel and amount return that payment's outcome (waiting for a pending one to complete); other
  parameters are refused. A FAILED id is tried again (nothing of it was paid).
- Two requests with one id at the same time: the second waits for the first and then reports
  its outcome; only one of them ever signs.
- The record is written in the transaction that makes the paying version durable, which
  commits before the version leaves (``ChannelService.stage_update``). If that commit fails
  (a full disk), the caller is told at once and the id is recorded FAILED; that record is
  bookkeeping held in memory until the store can write again (if the node stops first, the id
  is unknown, which means the same: never paid).
- A request refused before anything was signed (no link to the peer, not enough balance, the
  peer never granted the turn) records nothing: the id stays free.
- A caller that goes away (the API cancels a request whose client disconnected) stops the
  payment only before it is signed: then nothing was signed and the id stays free. Once
  ``stage_update`` returned, the version is staged in the group commit and will leave; what
  remains (await the commit, record the id as pending) runs in its own task, shielded, and
  the id stays busy until it is done, so a retry with the same id waits for it rather than
  paying again.
- Completion is noticed on every change of the channels (``settle``), by channel id, so it
  survives the channel objects being reloaded after a failed commit.

The facade other services use (``docs/channels.md``, "Payments facade"):
- ``pay(channel, amount, id)``; to pay a peer, ``wait_channel(peer, amount)`` first (its open,
  ready channel with the most room for the amount, waited for on channel changes, not polled;
  a caller that records an intent does so between the two). ``get(id)``, ``balance(channel)``.
- Typed events, handed to the listeners given to ``subscribe`` (never a channel's fields):
  ``PaymentSettled`` (our payment's version was acknowledged), ``PaymentFailed`` (its commit
  failed: nothing was sent) and ``PaymentReceived`` (the peer paid us); for escrows by hash
  ``EscrowOffered``, ``EscrowFulfilled``, ``EscrowFailed`` and ``EscrowSettled``.
- Escrows by hash: ``offer_escrow(channel or peer, amount, payment_hash, timeout, id)`` (an id
  is never used twice, as for ``pay``; ``acked=False`` returns once the offer is durable and
  sent rather than acknowledged), ``fulfil(escrow, preimage)`` and ``fail(escrow)`` on the
  payee's side (rules in ``eschaton.daemon.escrows``). Events are emitted only
  after the channel store committed what they report.
- A received payment is known to the payee by its channel and version number: the ``update``
  message carries no payment id (the payer's id is the payer's own bookkeeping), so the
  receiver's id is ``recv:<channel id prefix>:<version number>``. A listener that must not lose
  one across a crash records the last number it handled per channel (with the balance then)
  and asks ``catch_up`` at start: the channel store holds the current version, so whatever was
  received after the recorded one comes back as one ``PaymentReceived`` for the difference.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eschaton.channel.payments import PaymentError, PaymentRecord, PaymentState, check_id
from eschaton.channel.store import StoreError
from eschaton.core.channel import Channel
from eschaton.daemon.escrows import RECORD_PREFIX as ESCROW_RECORD
from eschaton.daemon.escrows import EscrowEvent, Escrows
from eschaton.errors import TransientError

log = logging.getLogger("eschaton.payments")

PAY_CHANNEL_WAIT = 60.0  # s: ``wait_channel`` waits this long for a ready channel with room


class PaymentPending(TransientError):
    """Signed and sent, not yet acknowledged: the payment can only complete."""


class NoChannel(TransientError):
    """No open, ready channel with the peer can carry the amount (nothing was signed)."""


@dataclass(frozen=True, slots=True)
class PaymentReceived:
    """The peer paid us ``amount`` in version ``number`` of ``channel_id`` (committed here)."""

    payment_id: str
    channel_id: bytes
    peer: str  # node id hex of the channel's peer
    amount: int
    number: int
    balance: int  # our balance in the channel once this version holds


@dataclass(frozen=True, slots=True)
class PaymentSettled:
    """Our payment ``payment_id`` was acknowledged by the peer (version ``number``)."""

    payment_id: str
    channel_id: bytes
    amount: int
    number: int


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    """Our payment ``payment_id`` failed before anything of it left (the store could not write)."""

    payment_id: str
    channel_id: bytes
    amount: int
    error: str


PaymentEvent = PaymentReceived | PaymentSettled | PaymentFailed | EscrowEvent


def received_id(channel_id: bytes, number: int) -> str:
    """The payee's id of a received payment: its channel and version number."""
    return f"recv:{channel_id.hex()[:24]}:{number}"


class Payments:
    def __init__(self, svc: Any) -> None:
        self._svc = svc
        self._store = svc.store
        self.pending: dict[str, PaymentRecord] = {r.id: r for r in self._store.payments(PaymentState.PENDING)}
        self._busy: dict[str, asyncio.Future[None]] = {}
        self._listeners: list[Callable[[PaymentEvent], None]] = []
        self.escrows = Escrows(self, svc)

    # --- events ------------------------------------------------------------------------------

    def subscribe(self, fn: Callable[[PaymentEvent], None]) -> Callable[[], None]:
        """Call ``fn`` with every payment event from now on; returns the unsubscribe call."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def emit(self, ev: PaymentEvent) -> None:
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:  # supervision boundary: one listener must not stop the others
                log.exception("payment listener failed on %s", type(ev).__name__)

    def received(self, cid: bytes, amount: int, number: int, balance: int) -> None:
        """The channel service's report of a committed incoming payment."""
        peer = self._svc.peers.map.get(cid, "")
        self.emit(PaymentReceived(received_id(cid, number), cid, peer, amount, number, balance))

    def catch_up(self, cid: bytes, number: int, balance: int) -> PaymentReceived | None:
        """What ``cid`` received after version ``number`` (when our balance was ``balance``),
        as one event, or None. For listeners recovering from a crash (see the rules)."""
        pos = self.position(cid)
        if pos is None or pos[0] <= number or pos[1] <= balance:
            return None
        cur, bal = pos
        return PaymentReceived(received_id(cid, cur), cid, self._svc.peers.map.get(cid, ""),
                               bal - balance, cur, bal)

    # --- channels ----------------------------------------------------------------------------

    def position(self, cid: bytes) -> tuple[int, int] | None:
        """The channel's current version number and our balance in it (None: no such channel)."""
        ch = self._svc.endpoint.channels.get(cid)
        if ch is None or ch.best is None:
            return None
        return int(ch.current.number), int(ch.status(self._svc.height).local_balance)

    def balance(self, cid: bytes) -> int:
        pos = self.position(cid)
        return 0 if pos is None else pos[1]

    def channels_with(self, peer: str) -> list[tuple[bytes, str]]:
        """The channels with ``peer`` and our role in each (opener or acceptor)."""
        out = []
        for cid, p in self._svc.peers.map.items():
            ch = self._svc.endpoint.channels.get(cid)
            if p == peer and ch is not None and ch.best is not None:
                out.append((cid, str(ch.status(self._svc.height).role)))
        return out

    def channel_for(self, peer: str, amount: int) -> Channel | None:
        """The open, ready channel with ``peer`` (linked) that has the most room for ``amount``."""
        svc = self._svc
        if not svc.linked(peer):
            return None
        best: tuple[int, Channel] | None = None
        for cid, p in svc.peers.map.items():
            c = svc.endpoint.channels.get(cid)
            if p != peer or c is None or c.state.name != "OPEN" or not c.peer_ready or c.best is None:
                continue
            bal = int(c.status(svc.height).local_balance)
            if bal >= amount and (best is None or bal > best[0]):
                best = (bal, c)
        return None if best is None else best[1]

    async def wait_channel(self, peer: str, amount: int, timeout: float = PAY_CHANNEL_WAIT,
                           also: Callable[[], bool] = lambda: True) -> Channel:
        """``channel_for``, waited for on channel changes (and links) for up to ``timeout`` s."""
        try:
            await self._svc.wait_for(lambda: also() and self.channel_for(peer, amount) is not None,
                                     f"an open channel with {peer[:12]} for {amount} sat", timeout=timeout)
        except TransientError:
            raise NoChannel(f"no open trade channel with {peer[:12]} for {amount} sat") from None
        ch = self.channel_for(peer, amount)
        assert ch is not None
        return ch

    async def quiet(self, cid: bytes, timeout: float = 30.0) -> None:
        """Wait until ``cid`` has no version in flight (one may still complete after a relink:
        deciding from its balance before that could count a payment as never made)."""
        svc = self._svc

        def idle() -> bool:
            ch = svc.endpoint.channels.get(cid)
            return ch is None or ch.pending is None
        await svc.wait_for(idle, f"the versions in flight on channel {cid.hex()[:12]} to settle", timeout=timeout)

    # --- records -----------------------------------------------------------------------------

    def get(self, pid: str) -> PaymentRecord | None:
        return self.pending.get(pid) or self._store.payment(pid)

    def lookup(self, pid: str) -> PaymentRecord:
        rec = self.get(check_id(pid))
        if rec is None:
            if self._store.pruned_any():
                days, records = self._svc.retention
                raise PaymentError(f"no payment {pid}: never signed for here, or its record was pruned (records "
                                   f"are kept {days} days, at most {records} of them)")
            raise PaymentError(f"no payment {pid} (an id this node never signed for was never paid)")
        return rec

    def settle(self) -> None:
        """Mark pending payments whose version the peer acknowledged as complete."""
        done = []
        for rec in self.pending.values():
            ch = self._svc.endpoint.channels.get(rec.channel_id)
            if ch is not None and ch.current.number >= rec.number:
                done.append(rec.to(PaymentState.COMPLETE, time.time()))
        for rec in done:
            del self.pending[rec.id]
        if done:
            self._store.record_payments(done)
        for rec in done:
            if not rec.id.startswith(ESCROW_RECORD):  # an escrow offer acknowledged is not a payment made
                self.emit(PaymentSettled(rec.id, rec.channel_id, rec.amount, rec.number))

    async def pay(self, ch: Channel, amount: int, pid: str | None, created: float = 0.0) -> PaymentRecord:
        """``created``: when the caller first asked for this payment (unix seconds; 0: not said).
        A retry that says so is refused if its record may have been pruned (see the rules)."""
        if pid and created > 0 and self.get(pid) is None:
            self.check_not_pruned(ch.channel_id, pid, created)
        return await self.signed_once(ch, amount, check_id(pid) if pid else None, "pay", (amount,))

    def check_not_pruned(self, cid: bytes, pid: str, created: float) -> None:
        """Refuse an id we hold no record of, first asked for at ``created``, if a record made
        then may have been pruned: paying it could pay twice (docs/channels.md, "Payment ids")."""
        days, _records = self._svc.retention
        cutoff = max(self._store.pruned_before(cid), time.time() - days * 86_400)
        if created <= cutoff:
            raise PaymentError(
                f"payment id {pid} was first asked for at {created:.0f}, before the oldest payment record "
                f"this node still keeps for channel {cid.hex()[:12]} (records are kept {days} days, at most "
                f"{_records} of them): whether it was paid is no longer known here, so it is not paid "
                "again; check the channel's balance, and pay with a new id if it is still owed")

    async def signed_once(self, ch: Channel, amount: int, pid: str | None, method: str, args: tuple[Any, ...],
                          conflict: Callable[[PaymentRecord], str | None] = lambda _rec: None,
                          acked: bool = True) -> PaymentRecord:
        """Sign the single-signed request ``method(*args)`` for id ``pid`` at most once (see the
        rules; ``pay`` and escrow offers). ``conflict`` adds a check of a retry's parameters.
        ``acked=False`` returns once the signed version is durable and sent (its record PENDING)
        instead of waiting for the peer's acknowledgement."""
        pid = pid or secrets.token_hex(16)
        while (busy := self._busy.get(pid)) is not None:
            await asyncio.shield(busy)  # the same id in flight: its outcome is ours
        rec = self.get(pid)
        if rec is not None:
            why = rec.conflict(ch.channel_id, amount) or conflict(rec)
            if why is not None:
                raise PaymentError(why)
            if rec.state is not PaymentState.FAILED:
                return await self._outcome(pid) if acked else rec
        busy = asyncio.get_running_loop().create_future()
        self._busy[pid] = busy

        def release(task: asyncio.Future[None] | None = None) -> None:
            if self._busy.get(pid) is busy:
                del self._busy[pid]
            busy.set_result(None)
            if task is not None and not task.cancelled():
                task.exception()  # seen: the caller, if still there, gets it from the shield

        now = time.time()
        fresh = rec.to(PaymentState.PENDING, now) if rec is not None else \
            PaymentRecord(pid, ch.channel_id, amount, PaymentState.PENDING, 0, now, now)
        try:
            # Cancellable: until this returns, nothing is signed (see the rules).
            _value, mine, committed = await self._svc.stage_update(ch, method, *args, payment=fresh)
        except BaseException:
            release()
            raise
        signed = asyncio.ensure_future(self._signed(fresh, mine, committed))
        signed.add_done_callback(release)
        await asyncio.shield(signed)
        if not acked:
            rec = self.get(pid)
            assert rec is not None
            return rec
        return await self._outcome(pid)

    # --- escrows by hash (``eschaton.daemon.escrows``) -------------------------------------------

    async def offer_escrow(self, target: Channel | str, amount: int, payment_hash: bytes, timeout: int = 0,
                           pid: str | None = None, acked: bool = True) -> tuple[PaymentRecord, int]:
        """Lock ``amount`` for the peer under ``payment_hash`` until ``timeout`` (0: the default);
        ``target`` is a channel or a peer's node id. Returns the record and the escrow id once
        the peer acknowledged the offer, or with ``acked=False`` once the offer is durable and
        sent (the record PENDING: the escrow's events tell what becomes of it)."""
        return await self.escrows.offer(target, amount, payment_hash, timeout, pid, acked)

    async def fulfil(self, escrow: str, preimage: bytes, wait: bool = True) -> tuple[Channel, bool]:
        """(payee) Reveal the preimage of ``escrow`` (durable first); with ``wait``, return once a
        linked payer committed it. Returns the channel and whether it is committed."""
        return await self.escrows.fulfil(escrow, preimage, wait)

    async def fail(self, escrow: str, code: str = "failed") -> Channel:
        """(payee) Refuse ``escrow`` (``code`` says why) and return it to the payer."""
        return await self.escrows.fail(escrow, code)

    async def _signed(self, fresh: PaymentRecord, mine: int, committed: asyncio.Future[None]) -> None:
        """After signing: the commit's outcome decides the record (runs to its end)."""
        try:
            await committed
        except StoreError as e:
            # Never durable, never sent: the attempt failed (a new record, or FAILED again).
            self._store.record_payments([replace(fresh, state=PaymentState.FAILED, number=0,
                                                 updated_at=time.time(), error=str(e))])
            self.emit(PaymentFailed(fresh.id, fresh.channel_id, fresh.amount, str(e)))
            raise
        self.pending[fresh.id] = replace(fresh, number=mine)
        self.settle()

    async def _outcome(self, pid: str) -> PaymentRecord:
        if pid in self.pending:
            try:
                await self._svc.wait_for(lambda: pid not in self.pending, f"payment {pid} to be acknowledged")
            except TransientError:
                raise PaymentPending(f"payment {pid} is pending: signed and sent, the peer has not "
                                     f"acknowledged it yet (see: eschaton channel payment {pid})") from None
        rec = self.get(pid)
        assert rec is not None
        return rec
