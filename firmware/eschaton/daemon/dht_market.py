"""Paid DHT queries in the node: ask, quote, pay by escrow, answer; forward to a neighbour.

Rules / theory of operation (the exchange itself is ``eschaton.core.dht.paid``, sans-IO):
- Asking (``query``): the query goes to every DHT neighbour we hold a trade channel with
  (``dht_query``, with how many more hops it may be forwarded); each answers ``dht_quote`` or
  ``dht_refused``. The cheapest quote with results is taken; above the caller's ``max_price`` it
  is refused before anything is paid (``TooExpensive``, one line). Otherwise the ask is written
  to the ledger, then the price is locked in an escrow under the quote's payment hash through
  the payments facade (payment id ``dhtq-<qid>``: a retry never locks twice), and the answer
  (``dht_answer``) is checked against the quote's commitment and every record re-verified.
  A retried query id that was answered is answered from the ledger, never paid again.
- Selling: a ``dht_query`` is evaluated at once (``Seller.on_query``, a fresh random preimage
  per quote) and only its quote goes back. When an escrow under a quoted hash arrives
  (``EscrowOffered``), the hash is claimed in the ledger (durable, once), then the escrow is
  taken by revealing the preimage, then the answer is sent. An escrow under a hash claimed by
  another escrow, or for less than the price, or from another peer, is refused and returned.
- Forwarding: a query with no result here, with hops left and ``[dht] forward`` on, is asked of
  our other neighbours; the cheapest quote with results is resold upstream at its price plus
  our base, under the neighbour's own hash (``Seller.resell``). When the upstream escrow
  arrives it is claimed, and an escrow for the neighbour's price is offered downstream under
  the same hash (id ``dhtf-<qid>``); the neighbour's preimage (``EscrowFulfilled``) takes the
  upstream escrow (looked up by hash in the ledger, so it survives a restart), and the
  neighbour's answer, checked against the commitment, is relayed. Each hop pays the next and
  charges the previous; its margin is exactly its base. Both escrows use the channels' default
  timeout: a neighbour that reveals its preimage after our upstream escrow timed out costs us
  its price (a query's price, bounded by what we accepted to forward).
- Quotes live in memory for ``QUOTE_TTL`` seconds: a quote lost in a restart is not paid for
  (an escrow under its hash is left to time out and return to its payer); claims are durable.
"""
from __future__ import annotations

import asyncio
import logging
import os
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
from eschaton.daemon.escrows import EscrowFulfilled, EscrowOffered
from eschaton.errors import EschatonError

if TYPE_CHECKING:
    from eschaton.daemon.dht import DhtService

log = logging.getLogger("eschaton.dht")
ROWS = ("dht_query", "dht_quote", "dht_answer")
QUOTE_TTL = 60.0
"""Seconds a quote may be paid in."""
QUOTE_WAIT = 5.0
"""Seconds to wait for the neighbours' quotes."""
ANSWER_WAIT = 30.0
"""Seconds to wait for a paid answer (the escrows of every hop are committed first)."""
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
        self._answers: dict[tuple[bytes, bytes], asyncio.Future[bytes]] = {}
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
        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision boundary: one query's failure must not stop the rest
                log.exception("dht: %s failed", what)
        t = asyncio.get_running_loop().create_task(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

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
        return msg.name == "dht_refused" and (frm, msg.get_int("nonce")) in self._quotes

    async def on_row(self, frm: bytes, msg: Message) -> None:
        name = msg.name
        if name == "dht_query":
            self._spawn(self._on_query(frm, msg), "query")
        elif name in ("dht_quote", "dht_refused"):
            fut = self._quotes.pop((frm, msg.get_int("nonce")), None)
            if fut is None or fut.done():
                return
            if name == "dht_refused":
                fut.set_result(msg.get_text("reason"))
            else:
                fut.set_result(Quote(msg.get_bytes("qid"), msg.get_int("price"), msg.get_int("count"),
                                     msg.get_int("size"), msg.get_bytes("commitment"),
                                     msg.get_bytes("payment_hash")))
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
                                   count=quote.count, size=quote.size, commitment=quote.commitment,
                                   payment_hash=quote.payment_hash))

    async def _quote(self, frm: bytes, qid: bytes, key: bytes, q: bytes, hops: int) -> Quote:
        _ledger, seller = self._book()
        peer = Contact(frm)
        old = seller.known(peer, qid)
        if old is not None:
            return old
        now = self.svc.now()
        quote = seller.on_query(peer, qid, key, q, now, self.svc.ctx(), preimage=os.urandom(32))
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
        await asyncio.wait([f for _, f in futs], timeout=QUOTE_WAIT)
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
            if r.qid != qid or r.count == 0 or len(r.payment_hash) != 32:
                continue
            if best is None or r.price < best[1].price:
                best = (p, r)
        return best

    # --- payments ----------------------------------------------------------------------------

    def _on_payment(self, ev: Any) -> None:
        if isinstance(ev, EscrowOffered):
            if self.seller is not None and self.seller.by_hash(ev.payment_hash) is not None:
                self._spawn(self._take(ev), f"escrow {ev.escrow}")
            elif self.ledger is not None:
                row = self.ledger.db.execute("SELECT escrow FROM claims WHERE payment_hash = ?",
                                             (ev.payment_hash,)).fetchone()
                if row is not None and row[0] != ev.escrow:  # a replay after a restart
                    self._spawn(self._refuse(ev.escrow, "payment hash already claimed"), "refusal")
        elif isinstance(ev, EscrowFulfilled) and self.ledger is not None:
            row = self.ledger.db.execute(
                "SELECT c.escrow FROM claims c JOIN queries q ON q.payment_hash = c.payment_hash"
                " AND q.role = 'forward' WHERE c.payment_hash = ?", (ev.payment_hash,)).fetchone()
            if row is not None:  # our downstream escrow of a forward: take the upstream one
                self._spawn(self._payments.fulfil(row[0], ev.preimage, wait=False), "upstream fulfil")

    async def _refuse(self, escrow: str, why: str) -> None:
        log.info("dht: escrow %s refused: %s", escrow, why)
        await self._payments.fail(escrow, why[:64])

    async def _take(self, ev: EscrowOffered) -> None:
        ledger, seller = self._book()
        frm = bytes.fromhex(ev.peer)
        try:
            sale = seller.on_escrow(frm, ev.payment_hash, ev.amount, self.svc.now())
        except Refused as exc:
            await self._refuse(ev.escrow, str(exc))
            return
        q = sale.quote
        role = "sell" if sale.via is None else "forward"
        cost = sale.downstream.price if sale.downstream is not None else 0
        if not ledger.claim(q.payment_hash, ev.escrow, q.qid, role, ev.peer, self._keys.get(q.qid, b""),
                            q.price, ev.amount, cost):
            await self._refuse(ev.escrow, "payment hash already claimed")
            return
        if sale.via is None:
            assert sale.preimage is not None and sale.answer is not None
            await self._payments.fulfil(ev.escrow, sale.preimage, wait=False)
            ledger.answered(q.qid, role, q.count, sale.answer)
            await self._send(frm, make("dht_answer", qid=q.qid, answer=sale.answer))
            return
        await self._relay(sale, frm)

    async def _relay(self, sale: Sale, frm: bytes) -> None:
        ledger, seller = self._book()
        assert sale.via is not None and sale.downstream is not None
        q = sale.quote
        fut = self._expect(sale.via, q.qid)
        try:
            await self._payments.offer_escrow(sale.via.hex(), sale.downstream.price, q.payment_hash, 0,
                                              f"dhtf-{q.qid.hex()}")
            data = await asyncio.wait_for(fut, ANSWER_WAIT)
            seller.delivered(q.qid, data)
        except (EschatonError, TimeoutError) as exc:
            ledger.failed(q.qid, "forward", str(exc) or "no answer from the neighbour")
            log.info("dht: forward of %s failed: %s", q.qid.hex()[:8], exc)
            return
        finally:
            self._answers.pop((sale.via, q.qid), None)
        ledger.answered(q.qid, "forward", q.count, data)
        await self._send(frm, make("dht_answer", qid=q.qid, answer=data))

    def _expect(self, peer: bytes, qid: bytes) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._answers[(peer, qid)] = fut
        return fut

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
            if row.state == "answered" and row.answer is not None:
                return self._result(qid, key, row.peer, row.price, row.answer, None)
            raise ApiError(f"query {qid.hex()} is {row.state} ({row.error or 'paid, its answer not received'}); "
                           "it is not paid again: ask with a new id")
        best = await self._best_quote(qid, key, q, hops, exclude=None)
        if best is None:
            return {"qid": qid.hex(), "key": key.hex(), "peer": "", "price": 0, "paid": 0, "records": [],
                    "count": 0}
        via, quote = best
        try:
            Buyer(max_price).on_quote(quote)
        except TooExpensive as exc:
            raise ApiError(f"{exc}; nothing paid") from None
        ledger.ask(qid, via.hex(), key, quote.price, quote.payment_hash)
        fut = self._expect(via, qid)
        try:
            await self._payments.offer_escrow(via.hex(), quote.price, quote.payment_hash, 0, f"dhtq-{qid.hex()}")
        except EschatonError as exc:
            self._answers.pop((via, qid), None)
            ledger.failed(qid, "ask", str(exc))
            raise ApiError(f"paying for the query failed: {exc}") from None
        try:
            data = await asyncio.wait_for(fut, ANSWER_WAIT)
        except TimeoutError:
            raise ApiError(f"query {qid.hex()}: paid {quote.price} sat, no answer within {ANSWER_WAIT:.0f} s"
                           ) from None
        finally:
            self._answers.pop((via, qid), None)
        try:
            ans = Buyer(max_price).on_answer(quote, data, key, self.svc.ctx())
        except DhtRemoteError as exc:
            ledger.failed(qid, "ask", f"bad answer: {exc}")
            raise ApiError(f"query {qid.hex()}: paid {quote.price} sat for a bad answer: {exc}") from None
        ledger.answered(qid, "ask", quote.count, data)
        return self._result(qid, key, via.hex(), quote.price, data, ans.root)

    def _result(self, qid: bytes, key: bytes, peer: str, price: int, data: bytes,
                root: tuple[bytes, int] | None) -> dict[str, Any]:
        ans = decode_answer(data, key, self.svc.ctx())
        out: dict[str, Any] = {"qid": qid.hex(), "key": key.hex(), "peer": peer, "price": price, "paid": price,
                               "count": ans.count, "records": [records.encode(r) for r in ans.records]}
        if ans.root is not None:
            out["root"] = {"hash": ans.root[0].hex(), "total": ans.root[1]}
        return out

    def totals(self) -> dict[str, int]:
        return self.ledger.totals() if self.ledger is not None else {}

