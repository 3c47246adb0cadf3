"""Microgrid sales paid through the network (``via = "routing"``): the buyer asks the seller for a
payment request per payment (``mg_ask`` / ``mg_request``) and pays it with a multi-hop payment;
the seller credits each of its requests once paid (``eschaton.core.microgrid.routed`` has the
rules; ``eschaton.daemon.microgrid`` the rest of the service).

The buyer and the seller need a link (they talk over IP across the mesh, as any two nodes can),
not a channel: the money goes through the buyer's channels and whoever forwards it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

from eschaton.core.microgrid.decisions import Pay
from eschaton.core.microgrid.routed import (
    REQUEST_EXPIRY_S,
    RequestRefused,
    Tag,
    askable,
    check_request,
    payable,
    routing_id,
    within_cap,
)
from eschaton.core.routing.invoice import BadRequest, PaymentRequest
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make
from eschaton.daemon.mg_base import MicrogridBase
from eschaton.errors import EschatonError, LocalError

log = logging.getLogger("eschaton.microgrid")

ASK_TIMEOUT_S = 30.0
"""How long the buyer waits for the seller's request before it counts the payment failed (it is
paid again with the next invoice)."""
ASKED_KEPT = 1024
"""Requests the seller remembers by payment id, to answer a repeated ask with the same request."""


class RoutedSide(MicrogridBase):
    _asks: dict[tuple[str, bytes], asyncio.Future[str]]
    _asked: OrderedDict[bytes, PaymentRequest]
    _paid_source: Any

    @property
    def _routing(self) -> Any:
        return self.node.service("routing")

    # --- seller --------------------------------------------------------------------------------

    async def _on_mg_ask(self, peer: str, wm: WireMessage) -> None:
        meter = wm.get_text("meter_id")
        s = self.sells.get(meter)
        if self.seller is None or s is None or s.via != "routing" or s.buyer != peer \
                or meter not in self.seller.core.meters():
            return self._refused(peer, "mg_ask", LocalError(f"we sell nothing through the network on {meter!r} "
                                                            "to this peer"))
        pid, ref, amount = wm.get_bytes("payment_id"), wm.get_bytes("ref"), wm.get_int("amount_sat")
        if self.seller.core.has_payment(pid):
            return self._refused(peer, "mg_ask", LocalError(f"payment {pid.hex()[:12]} is credited already"))
        req = self._asked.get(pid)
        if req is None or req.amount != amount or req.expires <= int(time.time()) + 60:
            st = self.seller.core.status(meter)
            if not askable(st.invoiced_due_sat, st.paid_sat, amount):
                return self._refused(peer, "mg_ask", LocalError(
                    f"asks a request of {amount} sat; the invoices leave {st.invoiced_due_sat - st.paid_sat} unpaid"))
            req = self._routing.create_request(amount, Tag(meter, pid, ref).text(), REQUEST_EXPIRY_S)
            self._asked[pid] = req
            while len(self._asked) > ASKED_KEPT:
                self._asked.popitem(last=False)
        await self._send(peer, make("mg_request", payment_id=pid, request=req.encode()))

    def _on_request_paid(self, h: bytes, amount: int, description: str) -> None:
        """(routing service) One of our requests was paid: credit the payment it names, once."""
        tag = Tag.parse(description)
        s = self.sells.get(tag.meter_id) if tag is not None else None
        if tag is None or s is None or s.via != "routing" or self.seller is None or self.received is None \
                or self.received.request_credited(h):
            return
        if not self.seller.core.has_payment(tag.payment_id):
            try:
                self.seller.on_payment(tag.ref, tag.payment_id, amount, self.clock(), meter_hint=tag.meter_id,
                                       payer=bytes.fromhex(s.buyer))
            except EschatonError as e:
                # Not marked: the replay at the next start tries again (a ledger failure stops
                # the service until then).
                return self._refused(s.buyer, "request_paid", e)
        self.received.mark_request(h)  # after the credit: see ``eschaton.microgrid.received``
        self._sync_recent()

    # --- buyer ---------------------------------------------------------------------------------

    async def _on_mg_request(self, peer: str, wm: WireMessage) -> None:
        fut = self._asks.get((peer, wm.get_bytes("payment_id")))
        if fut is not None and not fut.done():
            fut.set_result(wm.get_text("request"))

    def _spent(self, peer: str) -> int:
        """What we paid this seller and have in flight, over all our agreements with it."""
        assert self.buyer is not None
        total = 0
        for m in self.buyer.core.meters():
            if self.buyer.core.agreement(m).seller.hex() == peer:
                total += self.buyer.core.status(m).paid_sat  # counts the payments in flight too
        return total

    def _capped(self, peer: str, pay: Pay) -> bool:
        """Over the purchase's ``max_total_sat``: the payment fails (and we stop paying)."""
        assert self.buyer is not None
        cap = self.buys[peer].max_total_sat
        if within_cap(self._spent(peer) - pay.amount_sat, pay.amount_sat, cap):
            return False
        log.warning("not paying %d sat to %s: the purchase's max_total_sat %s would be passed",
                    pay.amount_sat, peer[:12], cap)
        self.buyer.on_payment_failed(pay.payment_id, self.clock())
        self._sync_recent()
        return True

    async def _ask(self, peer: str, pay: Pay) -> PaymentRequest:
        key = (peer, pay.payment_id)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._asks[key] = fut
        try:
            if not await self._send(peer, make("mg_ask", meter_id=pay.meter_id, ref=pay.ref,
                                               payment_id=pay.payment_id, amount_sat=pay.amount_sat)):
                raise LocalError("the seller is not linked")
            try:
                text = await asyncio.wait_for(fut, ASK_TIMEOUT_S)
            except TimeoutError:
                raise LocalError(f"no payment request from the seller within {ASK_TIMEOUT_S:.0f} s") from None
        finally:
            self._asks.pop(key, None)
        req = PaymentRequest.decode(text)
        check_request(req, seller=bytes.fromhex(peer), pay=pay, now_s=self.clock() // 1000)
        return req

    async def _pay_routed(self, peer: str, pay: Pay) -> None:
        """Pay ``pay`` through the network: ask for its request, check it, pay it by a routing id
        derived from the payment id (never twice), and record the outcome."""
        assert self.buyer is not None
        rid = routing_id(pay.payment_id)
        row = self._routing.payment(rid)
        if row is None and not payable(pay.amount_sat):
            log.debug("payment of %d sat deferred: below what an escrow can carry", pay.amount_sat)
            return self._routed_outcome(pay.payment_id, None)  # paid with a later invoice
        if row is None:
            try:
                req = await self._ask(peer, pay)
            except (RequestRefused, BadRequest) as e:
                self._refused(peer, "mg_request", e)
                return self._routed_outcome(pay.payment_id, None)
            except EschatonError as e:
                log.warning("payment %s to %s not started: %s", pay.payment_id.hex()[:12], peer[:12], e)
                return self._routed_outcome(pay.payment_id, None)
            try:
                row = await self._routing.pay(rid, req.payee, req.amount, req.payment_hash, req.secret, None, False)
            except EschatonError as e:
                log.warning("routed payment %s failed: %s", rid, e)
                row = self._routing.payment(rid)
        await self._settle_routed(pay.payment_id)

    async def _settle_routed(self, payment_id: bytes) -> None:
        """The outcome of a routed payment by its record (after a crash too): complete ->
        confirmed; failed or never started -> failed (paid again with the next invoice);
        pending -> wait until the routing service settles it (its escrow always ends)."""
        rid = routing_id(payment_id)
        row = self._routing.payment(rid)
        while row is not None and row.state in ("pending", "held") and not self._closed:
            await asyncio.sleep(0.5)  # the routing service keeps no waiters for a restarted payment
            row = self._routing.payment(rid)
        self._routed_outcome(payment_id, row)

    def _routed_outcome(self, payment_id: bytes, row: Any) -> None:
        assert self.buyer is not None
        if not any(p.payment_id == payment_id for p in self.buyer.pending_payments()):
            return
        if row is not None and row.state == "complete":
            self.buyer.on_payment_confirmed(payment_id, self.clock())
        elif row is None or row.state == "failed":
            if row is not None:
                log.warning("routed payment %s of %d sat failed: %s", row.id, row.amount, row.error)
            self.buyer.on_payment_failed(payment_id, self.clock())
        self._sync_recent()

    def _close_routed(self) -> None:
        for fut in self._asks.values():
            if not fut.done():
                fut.cancel()
        if self._paid_source is not None:
            with contextlib.suppress(ValueError):
                self._paid_source.paid_listeners.remove(self._on_request_paid)
            self._paid_source = None
