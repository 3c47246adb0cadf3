"""Paid DHT queries in the node: ask, quote, pay by escrow, answer; forward to a neighbour.

Rules / theory of operation (the exchange itself is ``eschaton.core.dht.paid``, sans-IO):
- Asking (``query``): the query goes to every DHT neighbour we hold a trade channel with
  (``dht_query``, with how many more hops it may be forwarded); each answers ``dht_quote`` or
  ``dht_refused``. The cheapest quote with results is taken; above the caller's ``max_price`` it
  is refused before anything is paid (``TooExpensive``, one line). Otherwise the ask and its
  quote are written to the ledger, the price is paid over the channel through the payments
  facade with the payment id ``dhtq-<qid>`` (a retry never pays twice), and ``dht_paid`` names
  the payment (channel, version number) for the qid. The answer (``dht_answer``) is checked
  against the quote's commitment and every record re-verified. A retried query id is answered
  from the ledger, or its payment named again: never paid twice.
- Selling: a ``dht_query`` is evaluated at once (``Seller.on_query``) and only its quote goes
  back. On ``dht_paid`` the seller waits for the facade's ``PaymentReceived`` of that version
  (the channel store committed it), checks it came from the asker and covers the price, claims
  the payment for the qid in the ledger (durable, once: a payment named for another query is
  refused), and only then sends the answer. No escrow is used: a query costs a few satoshis,
  below the dust limit an escrow output needs.
- Forwarding: a query with no result here, with hops left and ``[dht] forward`` on, is asked of
  our other neighbours; the cheapest quote with results is resold upstream at its price plus
  our base (``Seller.resell``). Once the upstream payment is claimed, the neighbour is paid
  (id ``dhtf-<qid>``), its answer checked against the commitment and relayed: each hop pays
  the next and charges the previous and keeps its base. Hop by hop, the forwarder pays before
  it is answered; a neighbour that takes the payment and never answers costs the forwarder its
  price, and the ledger keeps the forward as failed with what it cost.
- Quotes live in memory for ``QUOTE_TTL`` seconds; a payment for a quote lost in a restart is
  refused (nothing is claimed), and the asker's ledger row says it paid.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import ApiError
from eschaton.core.dht import query as dq
from eschaton.core.dht import records
from eschaton.core.dht.errors import DhtRemoteError, QueryError, Refused
from eschaton.core.dht.paid import QID_LEN, Buyer, Quote, Sale, Seller, decode_answer
from eschaton.core.dht.pricing import Terms, TooExpensive
from eschaton.core.dht.routing import Contact
from eschaton.core.wire.codec import Message, make
from eschaton.daemon.dht_store import DhtLedger
from eschaton.daemon.payments import PaymentReceived
from eschaton.daemon.tasks import spawn_supervised
from eschaton.errors import EschatonError

if TYPE_CHECKING:
    from eschaton.daemon.dht import DhtService

log = logging.getLogger("eschaton.dht")
ROWS = ("dht_query", "dht_quote", "dht_answer", "dht_paid")
QUOTE_TTL = 60.0
"""Seconds a quote may be paid in."""
QUOTE_HOP = 2.0
"""Seconds to wait for the neighbours' quotes, per hop the query may still travel: a query sent
with ``h`` hops left is waited for ``QUOTE_HOP * (h + 1)`` s, so a forwarder (which waits for
its own neighbours with ``h - 1``) always answers before its asker gives up."""
ANSWER_WAIT = 30.0
"""Seconds to wait for a paid answer (every hop's payment is acknowledged first)."""
RECEIPT_WAIT = 10.0
"""Seconds a seller waits for the payment a ``dht_paid`` names to be committed here."""
PAY_WAIT = 10.0
"""Seconds to wait for a channel with room for a query's price."""
MAX_RECEIPTS = 4096
"""Received payments remembered for ``dht_paid`` (the newest)."""
MAX_WAITING = 64
"""``dht_paid`` naming payments not seen yet that may wait at once (a peer naming made-up
payments gets refusals, not a pile of waiting tasks)."""
NONCE_BASE = 1 << 62
"""Our quote requests' nonces start here: the lookups' nonces count up from 1."""


class Market:
    def __init__(self, svc: DhtService, node: Any, terms: Terms, *, forward: bool, hops: int) -> None:
        self.svc = svc
        self.node = node
        self.terms = terms
        self.forward = forward
        self.hops = hops
        self.ledger: DhtLedger | None = None
        self.seller: Seller | None = None
        self._nonce = NONCE_BASE
        self._quotes: dict[tuple[bytes, int], asyncio.Future[Quote | str]] = {}
        self._answers: dict[tuple[bytes, bytes], asyncio.Future[bytes | str]] = {}
        self._paid_nonces: dict[tuple[bytes, int], asyncio.Future[bytes | str]] = {}
        self._received: dict[tuple[bytes, int], tuple[str, int]] = {}
        self._receipts: dict[tuple[bytes, int], asyncio.Future[tuple[str, int]]] = {}
        self._keys: dict[bytes, bytes] = {}  # qid -> key, for the ledger rows of our sales
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsub: Any = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.ledger = DhtLedger(self.node.datadir / "dht.sqlite")
        assert self.svc.rpc is not None  # started first
        self.seller = Seller(self.svc.rpc.node, self.terms, quote_ttl=QUOTE_TTL)
        self._unsub = self.node.channels.payments.subscribe(self._on_payment)

    async def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    def _spawn(self, coro: Any, what: str) -> None:
        spawn_supervised(self._tasks, coro, log, f"dht: {what}")

    @property
    def _payments(self) -> Any:
        return self.node.channels.payments

    def _book(self) -> tuple[DhtLedger, Seller]:
        if self.ledger is None or self.seller is None:
            raise ApiError("the DHT service is not running")
        return self.ledger, self.seller

    async def _send(self, peer: bytes, msg: Message) -> bool:
        session = self.svc.link(peer)
        if session is None:
            return False
        try:
            await session.send(msg)
        except (EschatonError, ConnectionError, OSError, RuntimeError) as e:
            log.info("dht: %s to %s not sent: %s", msg.name, peer.hex()[:12], e)
            return False
        return True

    def _neighbours(self, exclude: bytes | None) -> list[bytes]:
        """DHT peers we hold a channel with (a query is paid through it)."""
        out = []
        for peer in self.svc.linked_keys():
            if peer != exclude and self._payments.channels_with(peer.hex()):
                out.append(peer)
        return out

    # --- messages ----------------------------------------------------------------------------

    def handles(self, frm: bytes, msg: Message) -> bool:
        if msg.name in ROWS:
            return True
        if msg.name != "dht_refused":
            return False
        key = (frm, msg.get_int("nonce"))
        return key in self._quotes or key in self._paid_nonces

    async def on_row(self, frm: bytes, msg: Message) -> None:
        name = msg.name
        if name == "dht_query":
            self._spawn(self._on_query(frm, msg), "query")
        elif name == "dht_paid":
            self._spawn(self._on_paid(frm, msg), "payment")
        elif name == "dht_refused" and (frm, msg.get_int("nonce")) in self._paid_nonces:
            pfut = self._paid_nonces.pop((frm, msg.get_int("nonce")))
            if not pfut.done():
                pfut.set_result(msg.get_text("reason"))
        elif name in ("dht_quote", "dht_refused"):
            fut = self._quotes.pop((frm, msg.get_int("nonce")), None)
            if fut is None or fut.done():
                return
            if name == "dht_refused":
                fut.set_result(msg.get_text("reason"))
            else:
                fut.set_result(Quote(msg.get_bytes("qid"), msg.get_int("price"), msg.get_int("count"),
                                     msg.get_int("size"), msg.get_bytes("commitment")))
        elif name == "dht_answer":
            afut = self._answers.get((frm, msg.get_bytes("qid")))
            if afut is not None and not afut.done():
                afut.set_result(msg.get_bytes("answer"))

    async def _on_query(self, frm: bytes, msg: Message) -> None:
        nonce = msg.get_int("nonce")
        try:
            quote = await self._quote(frm, msg.get_bytes("qid"), msg.get_bytes("key"),
                                      msg.get_bytes("query"), msg.get_int("hops"))
        except DhtRemoteError as exc:
            await self._send(frm, make("dht_refused", nonce=nonce, reason=str(exc)[:256]))
            return
        await self._send(frm, make("dht_quote", nonce=nonce, qid=quote.qid, price=quote.price,
                                   count=quote.count, size=quote.size, commitment=quote.commitment))

    async def _quote(self, frm: bytes, qid: bytes, key: bytes, q: bytes, hops: int) -> Quote:
        _ledger, seller = self._book()
        peer = Contact(frm)
        old = seller.known(peer, qid)
        if old is not None:
            return old
        now = self.svc.now()
        quote = seller.on_query(peer, qid, key, q, now, self.svc.ctx())
        self._keys[qid] = key
        if quote.count == 0 and self.forward and hops > 0:
            best = await self._best_quote(qid, key, q, hops - 1, exclude=frm)
            if best is not None and seller.known(peer, qid) == quote:
                seller.forget(qid)
                quote = seller.resell(peer, qid, best[0], best[1], self.svc.now())
        return quote

    async def _best_quote(self, qid: bytes, key: bytes, q: bytes, hops: int,
                          exclude: bytes | None) -> tuple[bytes, Quote] | None:
        """Ask every neighbour with a channel for a quote; the cheapest one with results."""
        peers = self._neighbours(exclude)
        futs: list[tuple[bytes, asyncio.Future[Quote | str]]] = []
        loop = asyncio.get_running_loop()
        for p in peers:
            self._nonce += 1
            fut: asyncio.Future[Quote | str] = loop.create_future()
            self._quotes[(p, self._nonce)] = fut
            if await self._send(p, make("dht_query", nonce=self._nonce, qid=qid, key=key, query=q,
                                        hops=min(hops, 255))):
                futs.append((p, fut))
            else:
                self._quotes.pop((p, self._nonce), None)
        if not futs:
            return None
        await asyncio.wait([f for _, f in futs], timeout=QUOTE_HOP * (min(hops, 255) + 1))
        best: tuple[bytes, Quote] | None = None
        for p, f in futs:
            for k, v in list(self._quotes.items()):
                if v is f:
                    del self._quotes[k]
            if not f.done():
                f.cancel()
                continue
            r = f.result()
            if isinstance(r, str):
                log.info("dht: %s refused query %s: %s", p.hex()[:12], qid.hex()[:8], r)
                continue
            if r.qid != qid or r.count == 0:
                continue
            if best is None or r.price < best[1].price:
                best = (p, r)
        return best

    # --- payments ----------------------------------------------------------------------------

    def _on_payment(self, ev: Any) -> None:
        if isinstance(ev, PaymentReceived):
            k = (ev.channel_id, ev.number)
            self._received[k] = (ev.peer, ev.amount)
            while len(self._received) > MAX_RECEIPTS:
                del self._received[next(iter(self._received))]
            w = self._receipts.pop(k, None)
            if w is not None and not w.done():
                w.set_result((ev.peer, ev.amount))

    async def _receipt(self, cid: bytes, number: int) -> tuple[str, int]:
        got = self._received.get((cid, number))
        if got is not None:
            return got
        fut = self._receipts.get((cid, number))
        if fut is None:
            if len(self._receipts) >= MAX_WAITING:
                raise Refused("too many payments waited for")
            fut = asyncio.get_running_loop().create_future()
            self._receipts[(cid, number)] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), RECEIPT_WAIT)
        except TimeoutError:
            self._receipts.pop((cid, number), None)
            raise Refused("no such payment received here") from None

    async def _on_paid(self, frm: bytes, msg: Message) -> None:
        nonce, qid = msg.get_int("nonce"), msg.get_bytes("qid")
        cid, number = msg.get_bytes("channel_id"), msg.get_int("number")
        try:
            await self._claim(frm, qid, cid, number)
        except DhtRemoteError as exc:
            await self._send(frm, make("dht_refused", nonce=nonce, reason=str(exc)[:256]))

    async def _claim(self, frm: bytes, qid: bytes, cid: bytes, number: int) -> None:
        ledger, seller = self._book()
        peer_hex = frm.hex()
        if ledger.claimed(cid, number) == qid:  # a retry: the same payment for the same query
            for role in ("sell", "forward"):
                row = ledger.row(qid, role)
                if row is not None and row.peer == peer_hex and row.state == "answered" and row.answer:
                    await self._send(frm, make("dht_answer", qid=qid, answer=row.answer))
                    return
        peer, amount = await self._receipt(cid, number)
        if peer != peer_hex:
            raise Refused("that payment came from another peer")
        now = self.svc.now()
        sale = seller.payable(frm, qid, amount, now)
        q = sale.quote
        role = "sell" if sale.via is None else "forward"
        if not ledger.claim(cid, number, qid, role, peer_hex, self._keys.get(qid, b""), q.price, q.count,
                            q.size, q.commitment, amount, sale.answer):
            raise Refused("payment already claimed for another query")
        if sale.paid:
            return  # claimed and in progress (a retry while we forward)
        seller.on_payment(frm, qid, amount, now)
        if sale.via is None:
            assert sale.answer is not None  # claimed with the answer, in one commit
            await self._send(frm, make("dht_answer", qid=qid, answer=sale.answer))
            return
        await self._relay(sale, frm)

    async def _pay(self, peer: bytes, amount: int, pid: str) -> tuple[bytes, int]:
        """Pay ``peer`` ``amount`` once per ``pid``; returns the payment (channel, version)."""
        payments = self._payments
        ch = await payments.wait_channel(peer.hex(), amount, timeout=PAY_WAIT)
        rec = await payments.pay(ch, amount, pid)
        return bytes(rec.channel_id), int(rec.number)

    async def _name_payment(self, peer: bytes, qid: bytes, cid: bytes, number: int,
                            sent: Callable[[], None]) -> bytes:
        """Send ``dht_paid``, run ``sent`` (a ledger write, while the peer works) and wait for
        the answer (``Refused`` with the peer's reason)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes | str] = loop.create_future()
        self._answers[(peer, qid)] = fut
        self._nonce += 1
        nonce = self._nonce
        self._paid_nonces[(peer, nonce)] = fut
        try:
            if not await self._send(peer, make("dht_paid", nonce=nonce, qid=qid, channel_id=cid, number=number)):
                raise Refused("the peer is not linked")
            sent()
            try:
                r = await asyncio.wait_for(fut, ANSWER_WAIT)
            except TimeoutError:
                raise Refused(f"no answer within {ANSWER_WAIT:.0f} s") from None
        finally:
            self._answers.pop((peer, qid), None)
            self._paid_nonces.pop((peer, nonce), None)
        if isinstance(r, str):
            raise Refused(f"refused: {r}")
        return r

    async def _relay(self, sale: Sale, frm: bytes) -> None:
        ledger, seller = self._book()
        assert sale.via is not None and sale.downstream is not None
        q = sale.quote
        try:
            cid, number = await self._pay(sale.via, sale.downstream.price, f"dhtf-{q.qid.hex()}")
            cost = sale.downstream.price
            data = await self._name_payment(sale.via, q.qid, cid, number,
                                            lambda: ledger.forward_paid(q.qid, cost))
            seller.delivered(q.qid, data)
        except (EschatonError, DhtRemoteError) as exc:
            ledger.failed(q.qid, "forward", str(exc))
            log.info("dht: forward of %s failed: %s", q.qid.hex()[:8], exc)
            return
        await self._send(frm, make("dht_answer", qid=q.qid, answer=data))
        ledger.answered(q.qid, "forward", data)  # the claim is what must precede the answer

    # --- asking ------------------------------------------------------------------------------

    async def query(self, key: bytes, q: bytes, max_price: int, hops: int,
                    qid: bytes | None = None) -> dict[str, Any]:
        """Ask our neighbours, pay the cheapest answer within ``max_price``, return it."""
        ledger, _seller = self._book()
        try:
            dq.decode(q)
        except QueryError as exc:
            raise ApiError(f"query refused: {exc}") from None
        qid = qid if qid is not None else os.urandom(QID_LEN)
        row = ledger.row(qid, "ask")
        if row is not None:
            if row.key != key:
                raise ApiError(f"query id {qid.hex()} was used for another key")
            if row.state == "answered" and row.answer is not None:
                return self._result(qid, key, row.peer, row.price, row.answer)
            quote = Quote(qid, row.price, row.count, row.size, row.commitment)
            via = bytes.fromhex(row.peer)
        else:
            best = await self._best_quote(qid, key, q, hops, exclude=None)
            if best is None:
                return {"qid": qid.hex(), "key": key.hex(), "peer": "", "price": 0, "paid": 0, "records": [],
                        "count": 0}
            via, quote = best
            try:
                Buyer(max_price).on_quote(quote)
            except TooExpensive as exc:
                raise ApiError(f"{exc}; nothing paid") from None
            ledger.ask(qid, via.hex(), key, quote.price, quote.count, quote.size, quote.commitment)
        try:
            cid, number = await self._pay(via, quote.price, f"dhtq-{qid.hex()}")
        except EschatonError as exc:
            raise ApiError(f"paying for query {qid.hex()} failed: {exc}") from None
        try:
            data = await self._name_payment(via, qid, cid, number,
                                            lambda: ledger.ask_paid(qid, cid, number, quote.price))
            Buyer(max_price).on_answer(quote, data, key, self.svc.ctx())
        except DhtRemoteError as exc:
            ledger.failed(qid, "ask", str(exc))
            raise ApiError(f"query {qid.hex()}: paid {quote.price} sat, {exc} (retry with --id {qid.hex()}; "
                           "it is not paid again)") from None
        ledger.answered(qid, "ask", data)
        return self._result(qid, key, via.hex(), quote.price, data)

    def _result(self, qid: bytes, key: bytes, peer: str, price: int, data: bytes) -> dict[str, Any]:
        ans = decode_answer(data, key, self.svc.ctx())
        out: dict[str, Any] = {"qid": qid.hex(), "key": key.hex(), "peer": peer, "price": price, "paid": price,
                               "count": ans.count, "records": [records.encode(r) for r in ans.records]}
        if ans.root is not None:
            out["root"] = {"hash": ans.root[0].hex(), "total": ans.root[1]}
        return out

    def totals(self) -> dict[str, int]:
        return self.ledger.totals() if self.ledger is not None else {}
