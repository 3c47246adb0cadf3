"""Paid queries, sans-IO: quote, pay, answer; an unpaid query gets nothing but its quote.

Rules / theory of operation:
- The asker names its query with a fresh 16-byte ``qid`` (it doubles as the payment id, so a
  retried query or payment is recognised and never charged twice). The holder evaluates the
  query at once, keeps the answer, and replies with a ``Quote``: the price under its ``Terms``,
  the number of records, the answer's size and ``sha256`` of the answer (its commitment).
- The asker's ``Buyer`` refuses a quote above its ``max_price`` before anything is paid
  (``TooExpensive``), else pays exactly the quoted price through the payments facade.
- The holder's ``Seller`` releases the answer only when a payment for that qid of at least the
  price has been received from the same peer (``on_paid``, called with the facade's
  ``PaymentReceived``); a repeated ``on_paid`` returns the same answer and counts once. Unpaid
  answers are forgotten after ``quote_ttl`` seconds and their quotes are then refused.
- The asker checks the answer against the quote's commitment and re-verifies every record
  (``records.check``), so a holder cannot sell one answer and deliver another.
- ``earned`` / ``spent`` are what the store records for accounting (by qid, so a restart
  replays them idempotently).
- Which payment pays which quote is the adapter's to prove (the node binds a direct channel
  payment to the qid and claims it durably once); ``on_payment`` is told the amount.
- Forwarding (``resell``): a node with no result quotes a neighbour's answer under the
  neighbour's commitment at ``Terms.forward`` (the neighbour's price plus our base). Once paid
  it pays the neighbour, checks the neighbour's answer against the commitment (``delivered``)
  and passes it on: each hop pays the next and charges the previous, and keeps its base.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eschaton.core.dht import query, records
from eschaton.core.dht.errors import QueryError, RecordError, Refused
from eschaton.core.dht.pricing import Terms, accept
from eschaton.core.dht.protocol import DhtNode
from eschaton.core.dht.routing import Contact
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError

QID_LEN = 16
MAX_ANSWER = 60_000
"""Bytes of one encoded answer: it travels in one ``dht_answer`` row."""

@dataclass(frozen=True, slots=True)
class Quote:
    qid: bytes
    price: int
    count: int
    size: int
    commitment: bytes

@dataclass(slots=True)
class Sale:
    """One quote given to ``peer``: its answer (None while a neighbour holds it), and for a
    forwarded query the neighbour (``via``) and its quote (``downstream``)."""

    peer: bytes
    quote: Quote
    answer: bytes | None
    expires: float
    paid: bool = False
    via: bytes | None = None
    downstream: Quote | None = None

    @property
    def margin(self) -> int:
        """What this node keeps of the price once paid (all of it unless forwarded)."""
        return self.quote.price - (self.downstream.price if self.downstream is not None else 0)

Sale = Sale  # the name the tests and older callers use

def _encode(recs: list[bytes], root: tuple[bytes, int] | None, count: int) -> bytes:
    d: dict[str, bencode.EValue] = {"records": list(recs), "count": count}
    if root is not None:
        d["root"] = [root[0], root[1]]
    return bencode.encode(d)

@dataclass(frozen=True, slots=True)
class Answer:
    records: list[records.Record]
    root: tuple[bytes, int] | None
    count: int

class Seller:
    def __init__(self, node: DhtNode, terms: Terms, *, quote_ttl: float = 60.0,
                 max_open: int = 1024) -> None:
        self.node = node
        self.terms = terms
        self.quote_ttl = quote_ttl
        self.max_open = max_open
        self._sales: dict[bytes, Sale] = {}
        self.earned = 0

    def known(self, frm: Contact, qid: bytes) -> Quote | None:
        """The quote already given to ``frm`` for ``qid`` (a retry), or None for a new query;
        ``Refused`` if another peer used that id."""
        if len(qid) != QID_LEN:
            raise QueryError(f"query id must be {QID_LEN} bytes")
        old = self._sales.get(qid)
        if old is None:
            return None
        if old.peer != frm.key:
            raise Refused("query id already used")
        return old.quote

    def on_query(self, frm: Contact, qid: bytes, key: bytes, q: bytes, now: float,
                 ctx: records.Context) -> Quote:
        """Evaluate and quote; raises ``QueryError`` or ``Refused`` (sent back as a refusal)."""
        old = self.known(frm, qid)
        if old is not None:
            return old  # a retry: the same quote, never a second sale
        self._room(now)
        ans = self.node.on_query(frm, key, query.decode(q), now, ctx)
        data = _encode(ans.records, ans.root, ans.count)
        if len(data) > MAX_ANSWER:
            raise Refused(f"answer of {len(data)} bytes exceeds {MAX_ANSWER}: narrow the query")
        quote = Quote(qid, self.terms.quote(len(ans.records), len(data)), len(ans.records),
                      len(data), hashlib.sha256(data).digest())
        self._sales[qid] = Sale(frm.key, quote, data, now + self.quote_ttl)
        return quote

    def resell(self, frm: Contact, qid: bytes, via: bytes, down: Quote, now: float) -> Quote:
        """Quote ``frm`` the answer neighbour ``via`` quoted us (``down``), plus our base."""
        old = self.known(frm, qid)
        if old is not None:
            return old
        if down.qid != qid:
            raise Refused("a forwarded quote must be for the same query")
        self._room(now)
        quote = Quote(qid, self.terms.forward(down.price), down.count, down.size, down.commitment)
        self._sales[qid] = Sale(frm.key, quote, None, now + self.quote_ttl, via=via, downstream=down)
        return quote

    def _room(self, now: float) -> None:
        self.expire(now)
        if len(self._sales) >= self.max_open:
            raise Refused("too many unpaid quotes open")

    def sale(self, qid: bytes) -> Sale | None:
        return self._sales.get(qid)

    def payable(self, frm: bytes, qid: bytes, amount: int, now: float) -> Sale:
        """The sale a payment of ``amount`` for ``qid`` from ``frm`` would pay (nothing marked),
        or ``Refused``: lets the adapter claim the payment durably before ``on_payment``."""
        sale = self._sales.get(qid)
        if sale is None or sale.peer != frm:
            raise Refused("no open quote for this payment")
        if not sale.paid:
            if sale.expires <= now:
                raise Refused("quote expired before it was paid")
            if amount < sale.quote.price:
                raise Refused(f"paid {amount} sat of a {sale.quote.price} sat quote")
        return sale

    def on_payment(self, frm: bytes, qid: bytes, amount: int, now: float) -> Sale:
        """A payment of ``amount`` for ``qid`` arrived from ``frm``: the sale it pays (marked
        paid, its margin earned once), or ``Refused``."""
        sale = self.payable(frm, qid, amount, now)
        if not sale.paid:
            sale.paid = True
            self.earned += sale.margin
        return sale

    def delivered(self, qid: bytes, data: bytes) -> Sale:
        """A forwarded sale's answer arrived from its neighbour: checked against the quote's
        commitment (``RecordError`` otherwise) and kept for a retry."""
        sale = self._sales.get(qid)
        if sale is None or sale.via is None:
            raise Refused("no forwarded query with this id")
        if hashlib.sha256(data).digest() != sale.quote.commitment or len(data) != sale.quote.size:
            raise RecordError("answer does not match its quote")
        sale.answer = data
        return sale

    def on_paid(self, frm: bytes, qid: bytes, amount: int, now: float) -> bytes:
        """``on_payment`` for a sale of our own: its answer, once paid in full."""
        sale = self.on_payment(frm, qid, amount, now)
        if sale.answer is None:
            raise Refused("the answer is a neighbour's and has not arrived")
        return sale.answer

    def expire(self, now: float) -> None:
        """Forget unpaid quotes past their time (paid ones stay for retries until forgotten)."""
        for qid, s in list(self._sales.items()):
            if s.expires <= now and not s.paid:
                del self._sales[qid]

    def forget(self, qid: bytes) -> None:
        self._sales.pop(qid, None)


@dataclass(slots=True)
class Buyer:
    max_price: int
    spent: int = 0
    _paid: dict[bytes, int] = field(default_factory=dict)

    def on_quote(self, quote: Quote) -> int:
        """The amount to pay for ``quote`` (``TooExpensive`` above the ceiling); a quote for a
        qid already paid costs nothing more."""
        if quote.qid in self._paid:
            return 0
        amount = accept(quote.price, self.max_price)
        self._paid[quote.qid] = amount
        self.spent += amount
        return amount

    def on_answer(self, quote: Quote, data: bytes, key: bytes, ctx: records.Context) -> Answer:
        """Check the answer against the quote's commitment and verify every record."""
        if hashlib.sha256(data).digest() != quote.commitment or len(data) != quote.size:
            raise RecordError("answer does not match its quote")
        ans = decode_answer(data, key, ctx)
        if len(ans.records) != quote.count:
            raise RecordError("answer: records do not match the quote")
        return ans


def decode_answer(data: bytes, key: bytes, ctx: records.Context) -> Answer:
    """An encoded answer, strictly: every record verified under ``key`` (``RecordError``)."""
    try:
        v = bencode.decode(data, bencode.Limits(max_size=1 << 20, max_depth=10, max_items=100_000))
    except BencodeError as exc:
        raise RecordError(f"answer: {exc}") from None
    if not isinstance(v, dict) or not {b"records", b"count"} <= set(v) <= {
            b"records", b"count", b"root"}:
        raise RecordError("answer: want records, count and an optional root")
    recs, count, root = v[b"records"], v[b"count"], v.get(b"root")
    if not isinstance(recs, list) or not isinstance(count, int):
        raise RecordError("answer: records must be a list and count an integer")
    out = [records.check(r, key, ctx) if isinstance(r, bytes) else _bad() for r in recs]
    rt: tuple[bytes, int] | None = None
    if root is not None:
        if not (isinstance(root, list) and len(root) == 2 and isinstance(root[0], bytes)
                and len(root[0]) == 32 and isinstance(root[1], int)):
            raise RecordError("answer: root must be [hash, total]")
        rt = (root[0], root[1])
    return Answer(out, rt, count)

def _bad() -> records.Record:
    raise RecordError("answer: a record is not bytes")
