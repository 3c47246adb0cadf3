"""The microgrid's buyer side: offers and invoices checked, payments made one at a time per
seller through the payments facade, crashes settled by payment id (``eschaton.daemon.microgrid``)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from eschaton.channel.payments import PaymentState
from eschaton.core.microgrid.decisions import Pay
from eschaton.core.microgrid.errors import Refusal
from eschaton.core.microgrid.routed import worth_handling
from eschaton.core.microgrid.wire import from_wire_fields
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make
from eschaton.daemon.mg_routed import RoutedSide
from eschaton.daemon.payments import NoChannel, Payments
from eschaton.errors import EschatonError, LocalError

log = logging.getLogger("eschaton.microgrid")


class BuyerSide(RoutedSide):
    """The buyer side; purchases paid through the network are in ``RoutedSide``."""

    async def _on_mg_invoice(self, peer: str, wm: WireMessage) -> None:
        d = from_wire_fields(wm)
        if self.buyer is None or peer not in self.buys:
            return self._refused(peer, "mg_invoice", LocalError("we buy nothing from this peer"))
        meter = str(d.get("meter_id", ""))
        if self.held.get(meter):
            self._stash[meter] = (peer, d)
            return
        if self.buys[peer].via == "routing" and meter in self.buyer.core.meters() \
                and not worth_handling(d, self.buyer.core.status(meter).paid_sat):
            return  # too little to pay through the network yet: a later (cumulative) invoice covers it
        await self._handle_invoice(peer, d)

    async def _handle_invoice(self, peer: str, d: dict[str, Any]) -> None:
        assert self.buyer is not None
        b = self.buys[peer]
        now = self.clock()
        try:
            meter = str(d.get("meter_id", ""))
            if b.meter is not None and meter in self.buyer.core.meters():
                base = self.buyer.core.agreement(meter).tariff.base_unit
                self.buyer.on_own_reading(b.meter, self.supply.base_units(b.meter, base), now)
            pays = self.buyer.on_invoice(d, now)
        except Refusal as e:
            self._sync_recent()
            self._refused(peer, "mg_invoice", e)
            await self._send(peer, make("mg_refused", meter_id=str(d.get("meter_id", ""))[:64],
                                        reason=str(e.reason)[:32], detail=str(e)[:256]))
            return
        self._sync_recent()
        for p in pays:
            self._worker(peer).put_nowait(p)

    def hold(self, meter: str, paused: bool) -> None:
        self.held[meter] = paused
        if not paused:
            stashed = self._stash.pop(meter, None)
            if stashed is not None:
                asyncio.get_running_loop().create_task(self._handle_invoice(*stashed))

    def _worker(self, peer: str) -> asyncio.Queue[Pay | None]:
        q = self._payq.get(peer)
        if q is None:
            q = self._payq[peer] = asyncio.Queue()
            self._tasks.append(asyncio.get_running_loop().create_task(self._pay_worker(peer, q)))
        return q

    @property
    def _pays(self) -> Payments:
        return self.node.channels.payments  # type: ignore[no-any-return]

    async def _pay_worker(self, peer: str, q: asyncio.Queue[Pay | None]) -> None:
        assert self.buyer is not None and self.intents is not None
        await self._resolve_pending(peer)
        while True:
            pay = await q.get()
            if pay is None:
                return
            await self._pay(peer, pay)

    async def _pay(self, peer: str, pay: Pay) -> None:
        assert self.buyer is not None and self.intents is not None
        if all(p.payment_id != pay.payment_id for p in self.buyer.pending_payments()):
            return  # already resolved (confirmed or failed): never start it again
        if self._capped(peer, pay):
            return
        if self.buys[peer].via == "routing":
            await self._pay_routed(peer, pay)
            return
        try:  # wait up to a minute for an open channel with room (on channel changes, not polled)
            ch = await self._pays.wait_channel(peer, pay.amount_sat,
                                               also=lambda: self._session(peer) is not None)
        except NoChannel as e:
            self.buyer.on_payment_failed(pay.payment_id, self.clock())
            self._sync_recent()
            log.warning("%s", e)
            return
        cid = ch.channel_id
        self.intents.add(pay, cid, self._pays.balance(cid))
        try:
            await self._pays.pay(ch, pay.amount_sat, pay.payment_id.hex())
        except Exception as e:  # supervision boundary: the channel decides what happened
            log.warning("channel payment of %d sat failed: %s", pay.amount_sat, e)
            await self._settle_intent(peer, pay.payment_id)
            return
        self.buyer.on_payment_confirmed(pay.payment_id, self.clock())
        self.intents.set_state(pay.payment_id, "confirmed")
        self._sync_recent()
        await self._send(peer, make("mg_paid", meter_id=pay.meter_id, ref=pay.ref,
                                    payment_id=pay.payment_id, amount_sat=pay.amount_sat,
                                    channel_id=cid))

    async def _settle_intent(self, peer: str, payment_id: bytes) -> None:
        """After a failure or a crash: did the channel move the money? Confirmed payments are
        announced to the seller (again: it ignores a payment id it has credited)."""
        assert self.buyer is not None and self.intents is not None
        if self.buys[peer].via == "routing":
            await self._settle_routed(payment_id)
            return
        it = self.intents.get(payment_id)
        if it is None:
            # Recorded as sent, but the channel update never started.
            self.buyer.on_payment_failed(payment_id, self.clock())
            self._sync_recent()
            return
        cid, before, amount = it
        # An update still in flight may complete when the link comes back (reestablish resends
        # it): deciding "failed" before it settles could pay the same amount twice.
        hid = payment_id.hex()
        rec = self._pays.get(hid)
        while rec is not None and rec.state is PaymentState.PENDING and not self._closed:
            try:
                await self._pays.quiet(cid)
            except EschatonError:
                continue  # still in flight: it can only complete, so keep waiting
            self._pays.settle()
            rec = self._pays.get(hid)
            break
        if rec is None or rec.state is PaymentState.PENDING:
            # An intent of firmware that paid without ids (or a channel gone while its version
            # was in flight): the balance noted before the update decides.
            with contextlib.suppress(EschatonError):
                await self._pays.quiet(cid)
            moved = before - self._pays.balance(cid) >= amount
        else:
            moved = rec.state is PaymentState.COMPLETE
        pay = next((p for p in self.buyer.pending_payments() if p.payment_id == payment_id), None)
        if moved:
            self.buyer.on_payment_confirmed(payment_id, self.clock())
            self.intents.set_state(payment_id, "confirmed")
            if pay is not None:
                await self._send(peer, make("mg_paid", meter_id=pay.meter_id, ref=pay.ref,
                                            payment_id=payment_id, amount_sat=amount, channel_id=cid))
        else:
            self.buyer.on_payment_failed(payment_id, self.clock())
            self.intents.set_state(payment_id, "failed")
        self._sync_recent()

    async def _resolve_pending(self, peer: str) -> None:
        """Settle payments left unresolved by a crash, then pay what is still outstanding."""
        assert self.buyer is not None
        pend = [p for p in self._unresolved.values()
                if self.buyer.core.agreement(p.meter_id).seller.hex() == peer]
        if self._session(peer) is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._link_event(peer).wait(), 60.0)
        for p in pend:
            await self._settle_intent(peer, p.payment_id)
            self._unresolved.pop(p.payment_id, None)
        for meter in self.buyer.core.meters():
            if self.buyer.core.agreement(meter).seller.hex() == peer and not self.held.get(meter):
                for pay in self.buyer.pay_outstanding(meter, self.clock()):
                    await self._pay(peer, pay)
        self._sync_recent()
