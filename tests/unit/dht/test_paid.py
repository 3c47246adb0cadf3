"""Paid queries: an unpaid query gets only its quote; the answer matches what was quoted; a
quote above the ceiling is refused before paying; retries never pay or earn twice."""
from __future__ import annotations

import random

import pytest

from eschaton.core.dht import query as q
from eschaton.core.dht import records, statements
from eschaton.core.dht.errors import QueryError, RecordError, Refused
from eschaton.core.dht.paid import Buyer, Quote, Seller
from eschaton.core.dht.pricing import Terms, TooExpensive
from eschaton.core.dht.protocol import DhtNode
from eschaton.core.dht.routing import Contact
from eschaton.core.link.identity import NodeKeys

KEYS = NodeKeys.generate(random.Random(21).randbytes)
CTX = records.Context(5, lambda h: False)
ASKER = Contact(b"\x0d" * 32)
KEY = records.signer_key(KEYS.node_id.raw)
QUERY = q.encode(q.Range((b"body", b"price"), 0, 10))


def seller() -> tuple[Seller, list[bytes]]:
    node = DhtNode(b"\x0e" * 32)
    stored = []
    for price in (3, 8, 30):
        data = records.encode(statements.sign(KEYS.sign, KEYS.node_id.raw,
                                              {b"price": price}, 0, 99))
        node.on_store(Contact(KEYS.node_id.raw), KEY, data, 0.0, CTX)
        stored.append(data)
    return Seller(node, Terms(base=2, per_result=5, per_kib=1), quote_ttl=30.0), stored


def test_quote_pay_answer_with_exact_accounting() -> None:
    s, stored = seller()
    b = Buyer(max_price=100)
    quote = s.on_query(ASKER, b"q" * 16, KEY, QUERY, 1.0, CTX)
    assert quote.count == 2 and quote.price == 2 + 2 * 5 + 1
    with pytest.raises(Refused, match="no open quote"):  # someone else paying gets nothing
        s.on_paid(b"\x99" * 32, b"q" * 16, quote.price, 2.0)
    with pytest.raises(Refused, match="paid 12 sat of a 13 sat"):
        s.on_paid(ASKER.key, b"q" * 16, quote.price - 1, 2.0)
    assert s.earned == 0
    amount = b.on_quote(quote)
    assert amount == quote.price and b.spent == quote.price
    data = s.on_paid(ASKER.key, b"q" * 16, amount, 2.0)
    ans = b.on_answer(quote, data, KEY, CTX)
    assert sorted(records.encode(r) for r in ans.records) == sorted(stored[:2])
    # A retried query and payment: the same quote and answer, paid and earned once.
    assert s.on_query(ASKER, b"q" * 16, KEY, QUERY, 3.0, CTX) == quote
    assert b.on_quote(quote) == 0
    assert s.on_paid(ASKER.key, b"q" * 16, amount, 3.0) == data
    assert (s.earned, b.spent) == (quote.price, quote.price)


def test_too_expensive_is_refused_before_paying() -> None:
    s, _ = seller()
    b = Buyer(max_price=12)
    quote = s.on_query(ASKER, b"r" * 16, KEY, QUERY, 1.0, CTX)
    with pytest.raises(TooExpensive, match="exceeds --max-price 12"):
        b.on_quote(quote)
    assert b.spent == 0 and s.earned == 0


def test_unpaid_quotes_expire_and_bad_queries_are_typed() -> None:
    s, _ = seller()
    quote = s.on_query(ASKER, b"s" * 16, KEY, QUERY, 1.0, CTX)
    with pytest.raises(Refused, match="expired"):
        s.on_paid(ASKER.key, b"s" * 16, quote.price, 31.0)
    with pytest.raises(QueryError):
        s.on_query(ASKER, b"t" * 16, KEY, b"garbage", 1.0, CTX)
    with pytest.raises(Refused, match="already used"):
        s.on_query(Contact(b"\x01" * 32), b"s" * 16, KEY, QUERY, 2.0, CTX)


def test_an_answer_other_than_the_quoted_one_is_refused() -> None:
    s, stored = seller()
    b = Buyer(max_price=100)
    quote = s.on_query(ASKER, b"u" * 16, KEY, QUERY, 1.0, CTX)
    b.on_quote(quote)
    data = s.on_paid(ASKER.key, b"u" * 16, quote.price, 2.0)
    for i in range(0, len(data) * 8, 7):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(RecordError):
            b.on_answer(quote, bytes(bad), KEY, CTX)
    # Even with a matching commitment, records must verify and belong under the key.
    forged = Quote(quote.qid, quote.price, quote.count, quote.size, quote.commitment)
    with pytest.raises(RecordError):
        b.on_answer(forged, data, records.signer_key(b"\x02" * 32), CTX)
