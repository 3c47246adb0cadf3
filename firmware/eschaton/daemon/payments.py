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
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from typing import Any

from eschaton.channel.payments import PaymentError, PaymentRecord, PaymentState, check_id
from eschaton.channel.store import StoreError
from eschaton.core.channel import Channel
from eschaton.errors import TransientError


class PaymentPending(TransientError):
    """Signed and sent, not yet acknowledged: the payment can only complete."""


class Payments:
    def __init__(self, svc: Any) -> None:
        self._svc = svc
        self._store = svc.store
        self.pending: dict[str, PaymentRecord] = {r.id: r for r in self._store.payments(PaymentState.PENDING)}
        self._busy: dict[str, asyncio.Future[None]] = {}

    def get(self, pid: str) -> PaymentRecord | None:
        return self.pending.get(pid) or self._store.payment(pid)

    def lookup(self, pid: str) -> PaymentRecord:
        rec = self.get(check_id(pid))
        if rec is None:
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

    async def pay(self, ch: Channel, amount: int, pid: str | None) -> PaymentRecord:
        pid = check_id(pid) if pid else secrets.token_hex(16)
        while (busy := self._busy.get(pid)) is not None:
            await asyncio.shield(busy)  # the same id in flight: its outcome is ours
        rec = self.get(pid)
        if rec is not None:
            why = rec.conflict(ch.channel_id, amount)
            if why is not None:
                raise PaymentError(why)
            if rec.state is not PaymentState.FAILED:
                return await self._outcome(pid)
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
            _value, mine, committed = await self._svc.stage_update(ch, "pay", amount, payment=fresh)
        except BaseException:
            release()
            raise
        signed = asyncio.ensure_future(self._signed(fresh, mine, committed))
        signed.add_done_callback(release)
        await asyncio.shield(signed)
        return await self._outcome(pid)

    async def _signed(self, fresh: PaymentRecord, mine: int, committed: asyncio.Future[None]) -> None:
        """After signing: the commit's outcome decides the record (runs to its end)."""
        try:
            await committed
        except StoreError as e:
            # Never durable, never sent: the attempt failed (a new record, or FAILED again).
            self._store.record_payments([replace(fresh, state=PaymentState.FAILED, number=0,
                                                 updated_at=time.time(), error=str(e))])
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
