"""Paid stamps: the price per digest, quotes, payments and their claims (both sides).

Rules / theory of operation:
- A batch of up to ``PEER_BATCH`` digests is bought from a peer in three steps:
  ``stamp_quote_req(ref, count)`` -> ``stamp_quote(ref, price, request)``, where the request is
  a payment request the payee signed for price * count (the same one again for a repeated ref);
  the payer pays it through the routing service (one hop to a neighbour, or several), which
  pays through the payments facade's escrows by hash, and so learns the preimage; then
  ``stamp_paid_submit(ref, digests, preimage)`` -> ``stamp_answer(ref, "accepted")``.
- The preimage is the proof of payment: the payee made it and reveals it only by fulfilling
  an escrow of the request's amount. The payee answers "accepted" only after the claim of the
  payment (keyed by its hash) and the digests are durable, in one transaction; a repeat of the
  same batch is answered "accepted" again and pays nothing; another batch with a claimed
  preimage is refused ("claimed"). A batch without a preimage is refused ("unpaid") unless
  the price is 0. The old ``stamp_submit`` (a round root, no payment) is served only for free.
- A payment moves as an escrow by hash, which the channels refuse below the dust limit
  (``DUST_LIMIT``, 546 sat: an escrow is an output of the commitment): a batch costing less is
  refused at the quote ("below_dust", saying how many digests make a batch), never paid in
  part or rounded up.
- The payer writes each batch (and every digest in it, per peer) before it pays: a digest
  already sent to a peer is never sent nor paid for again, a quote above the batch's max price
  refuses the batch with nothing paid, and the payment id is derived from the batch's ref, so
  a retry after a crash pays through the routing service's record of it, never twice.
- Batches not yet accepted, and accepted ones still waiting for proofs, are driven again by the
  service's loop (every ``RESEND_S``); the proofs come back as ``stamp_proof``.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from eschaton.core.channel.params import DUST_LIMIT
from eschaton.core.wire.codec import Message, make
from eschaton.daemon.stamp_store import Batch, Invoice
from eschaton.errors import EschatonError, TransientError

if TYPE_CHECKING:
    from eschaton.daemon.stamp import StampService
    from eschaton.net.session import Session

log = logging.getLogger("eschaton.stamp")
PEER_BATCH = 1000
"""Digests per paid batch (one ``stamp_paid_submit`` frame: 32 KB of digests)."""
ASK_S = 15.0
"""How long the payer waits for a quote or an answer before it tries again later."""
INVOICE_S = 3600
"""How long a quoted payment request holds."""
PROOF_ASK_S = 30.0
"""How often an accepted batch still missing proofs is sent again (the payee pushes each proof
when its round confirms; this only covers a proof lost with a link)."""


class StampRefused(EschatonError):
    """The upstream peer refused a batch, or its price is above the max (nothing was paid)."""


class PeerSilent(TransientError):
    """The upstream peer did not answer (not linked, or no stamp service): tried again later."""


class PaidStamps:
    def __init__(self, svc: StampService) -> None:
        self.svc = svc
        self._asks: dict[tuple[str, bytes], asyncio.Future[Message]] = {}
        self._driving: dict[bytes, asyncio.Future[Batch]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._asked: dict[bytes, float] = {}  # accepted batch -> when it was last sent again

    @property
    def store(self) -> Any:
        assert self.svc.store is not None
        return self.svc.store

    # --- payee ----------------------------------------------------------------------------

    async def on_quote_req(self, session: Session, msg: Message) -> None:
        assert session.remote is not None
        peer, ref, count = session.remote.hex(), msg.get_bytes("ref"), msg.get_int("count")
        if not 1 <= count <= PEER_BATCH:
            await self._answer(session, ref, "bad_batch", f"a batch is 1..{PEER_BATCH} digests")
            return
        price = self.svc.cfg.price_sat
        if price == 0:
            await session.send(make("stamp_quote", ref=ref, price_sat=0, request=""))
            return
        if price * count < DUST_LIMIT:
            least = -(-DUST_LIMIT // price)
            await self._answer(session, ref, "below_dust", f"{count} digests at {price} sat cost less than the "
                                                           f"{DUST_LIMIT} sat a payment needs: send at least {least}")
            return
        inv = self.store.invoice_for(peer, ref, time.time())
        if inv is None or inv.count != count:
            try:
                req = self.svc.node.service("routing").create_request(price * count, f"timestamps: {count} digests",
                                                                      INVOICE_S)
            except (KeyError, EschatonError) as e:
                await self._answer(session, ref, "no_invoice", f"cannot make a payment request: {e}")
                return
            inv = Invoice(req.payment_hash, peer, ref, count, req.amount, req.encode(), float(req.expires))
            self.store.put_invoice(inv)
        await session.send(make("stamp_quote", ref=ref, price_sat=price, request=inv.request))

    async def on_paid_submit(self, session: Session, msg: Message) -> None:
        assert session.remote is not None
        peer, ref = session.remote.hex(), msg.get_bytes("ref")
        raw, preimage = msg.get_bytes("digests"), msg.get_bytes("preimage")
        if len(raw) % 32:
            await self._answer(session, ref, "bad_batch", "digests are 32 bytes each")
            return
        digests = [raw[i:i + 32] for i in range(0, len(raw), 32)]
        price = self.svc.cfg.price_sat
        if not preimage:
            if price:
                await self._answer(session, ref, "unpaid", f"the price is {price} sat per digest: "
                                                           "ask for a quote and pay its request")
                return
            self.svc.submit(digests, peer)
        else:
            h = hashlib.sha256(preimage).digest()
            inv = self.store.invoice(h)
            if inv is None or inv.peer != peer:
                await self._answer(session, ref, "unpaid", "no payment request of ours has this preimage")
                return
            if len(digests) > inv.count:
                await self._answer(session, ref, "underpaid", f"the payment bought {inv.count} digests, "
                                                              f"not {len(digests)}")
                return
            if not self.store.accept_paid(h, peer, digests, inv.amount, time.time()):
                await self._answer(session, ref, "claimed", "this payment already bought another batch")
                return
            self.svc.accepted()
        await self._answer(session, ref, "accepted", "")
        for d in digests:  # a repeat of a batch: the proofs that are ready go back at once
            _state, body = self.svc.proof(d, peer)
            if body is not None:
                await session.send(make("stamp_proof", digest=d, proof=body))

    async def _answer(self, session: Session, ref: bytes, code: str, detail: str) -> None:
        await session.send(make("stamp_answer", ref=ref, code=code, detail=detail[:256]))

    # --- payer ----------------------------------------------------------------------------

    def on_reply(self, session: Session, msg: Message) -> None:
        """``stamp_quote`` and ``stamp_answer``: wake the batch that asked."""
        assert session.remote is not None
        fut = self._asks.get((session.remote.hex(), msg.get_bytes("ref")))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _ask(self, peer: str, ref: bytes, msg: Message) -> Message:
        key = (peer, ref)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._asks[key] = fut
        try:
            if not await self.svc.send_to(peer, msg):
                raise PeerSilent(f"no link to {peer[:12]}: the batch is sent when it is back")
            try:
                return await asyncio.wait_for(fut, ASK_S)
            except TimeoutError:
                raise PeerSilent(f"{peer[:12]} did not answer in {ASK_S:.0f} s (does it run the stamp "
                                 "service?); tried again later") from None
        finally:
            if self._asks.get(key) is fut:
                del self._asks[key]

    def root_batch(self, peer: str, root: bytes, max_price: int) -> None:
        """A round's root for its upstream: one batch per root and peer, ever (its ref is derived
        from the root, so a refused one is not asked again every turn of the loop)."""
        ref = hashlib.sha256(b"eschaton-stamp-round\0" + root).digest()
        old = self.store.batch(ref)
        if old is not None and old.state == "refused" and not old.preimage and old.max_price != max_price:
            self.store.drop_batch(ref)  # refused unpaid at another max price (the config changed): ask again
            old = None
        if old is None:
            self.store.new_batch(ref, peer, [root], max_price, time.time())

    def new_batches(self, peer: str, digests: list[bytes], max_price: int) -> list[Batch]:
        """Record the digests not yet sent to ``peer`` as new batches (durable, nothing paid)."""
        fresh = [d for d in dict.fromkeys(digests) if self.store.sent(d, peer) is None]
        return [self.store.new_batch(os.urandom(32), peer, fresh[i:i + PEER_BATCH], max_price, time.time())
                for i in range(0, len(fresh), PEER_BATCH)]

    async def drive(self, b: Batch) -> Batch:
        """Take ``b`` as far as it goes (one driver per batch: a second caller waits for it)."""
        running = self._driving.get(b.ref)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
        self._driving[b.ref] = fut
        try:
            out = await self._drive(b)
            fut.set_result(out)
            return out
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: a waiting caller re-raises it
            raise
        finally:
            del self._driving[b.ref]

    def _refuse(self, b: Batch, detail: str) -> Batch:
        b.state, b.detail = "refused", detail
        self.store.refuse_batch(b)
        log.info("stamp batch %s to %s refused: %s", b.ref.hex()[:12], b.peer[:12], detail)
        return b

    async def _drive(self, b: Batch) -> Batch:
        from eschaton.core.routing.invoice import BadRequest, PaymentRequest

        n = len(b.digests) // 32
        if b.state == "new":
            m = await self._ask(b.peer, b.ref, make("stamp_quote_req", ref=b.ref, count=n))
            if m.name == "stamp_answer":
                return self._refuse(b, f"{m.get_text('code')}: {m.get_text('detail')}")
            price, text = m.get_int("price_sat"), m.get_text("request")
            if price > b.max_price:
                return self._refuse(b, f"price {price} sat per digest is above the max price {b.max_price}: "
                                       "nothing paid")
            amount = 0
            if text:
                try:
                    req = PaymentRequest.decode(text)
                    req.check(int(time.time()))
                except BadRequest as e:
                    return self._refuse(b, f"the peer's payment request is not valid ({e}): nothing paid")
                if req.payee.hex() != b.peer or req.amount > price * n:
                    return self._refuse(b, f"the peer's payment request asks {req.amount} sat of "
                                           f"{req.payee.hex()[:12]}, not {price * n} sat of itself: nothing paid")
                amount = req.amount
            elif price:
                return self._refuse(b, "the peer quoted a price without a payment request: nothing paid")
            b.state, b.price, b.amount, b.request = "quoted", price, amount, text
            b.payment_id = "stamp-" + b.ref.hex()[:40]
            self.store.put_batch(b)
        if b.state == "quoted":
            if b.request:
                req = PaymentRequest.decode(b.request)
                row = await self.svc.node.service("routing").pay(b.payment_id, req.payee, req.amount,
                                                                 req.payment_hash, req.secret, None, False)
                if row.state == "failed":  # every attempt's escrow came back: nothing was paid
                    return self._refuse(b, f"the payment failed ({row.error}): nothing paid")
                if row.state != "complete" or row.preimage is None:
                    # In flight (say, across a restart): it may still complete, so the batch
                    # stays as it is (its digests are never sent in another one) and the loop
                    # asks again; the routing record answers the same id without paying twice.
                    raise PeerSilent(f"the payment for batch {b.ref.hex()[:12]} is {row.state}: tried again later")
                b.preimage = bytes(row.preimage)
            b.state = "paid"
            self.store.put_batch(b)
        if b.state in ("paid", "accepted"):
            m = await self._ask(b.peer, b.ref, make("stamp_paid_submit", ref=b.ref, digests=b.digests,
                                                    preimage=b.preimage))
            if m.name != "stamp_answer":
                raise PeerSilent(f"{b.peer[:12]} answered a batch with {m.name}")
            code = m.get_text("code")
            if code == "accepted":
                if b.state != "accepted":
                    b.state = "accepted"
                    self.store.put_batch(b)
            else:
                return self._refuse(b, f"{code}: {m.get_text('detail')}")
        return b

    def resend(self, now: float) -> None:
        """The loop's turn: drive the batches not accepted yet, and ask again for missing proofs
        (every ``PROOF_ASK_S``)."""
        for b in self.store.batches(("new", "quoted", "paid")):
            self.spawn(b)
        for b in self.store.batches(("accepted",)):
            if now - self._asked.setdefault(b.ref, now) < PROOF_ASK_S:
                continue  # first seen (just accepted, or since a start): its proofs are pushed
            if self.store.unproven(b.ref):
                self._asked[b.ref] = now
                self.spawn(b)
            else:
                self._asked.pop(b.ref, None)

    def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    def spawn(self, b: Batch) -> None:
        if b.ref in self._driving:
            return

        async def run() -> None:
            try:
                await self.drive(b)
            except EschatonError as e:
                log.info("stamp batch %s to %s: %s", b.ref.hex()[:12], b.peer[:12], e)
            except Exception:  # supervision boundary: a background batch must not kill the loop
                log.exception("stamp batch %s failed", b.ref.hex()[:12])
        t = asyncio.get_running_loop().create_task(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
