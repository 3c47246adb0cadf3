"""Forwarding a paid query, sans-IO: a node with no result resells a neighbour's quote at the
neighbour's price plus its base; a payment is checked before it is claimed (``payable`` marks
nothing), counted once, and a forwarded answer must match the neighbour's commitment. The
answer decoder is fuzzed: any bytes give an ``Answer`` or a ``RecordError``, never a crash."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.dht import query as q
from eschaton.core.dht import records, statements
from eschaton.core.dht.errors import RecordError, Refused
from eschaton.core.dht.paid import Buyer, Seller, decode_answer
from eschaton.core.dht.pricing import Terms
from eschaton.core.dht.protocol import DhtNode
from eschaton.core.dht.routing import Contact
from eschaton.core.link.identity import NodeKeys

KEYS = NodeKeys.generate(random.Random(7).randbytes)
CTX = records.Context(5, lambda h: False)
KEY = records.signer_key(KEYS.node_id.raw)
QUERY = q.encode(q.Has((b"body", b"price")))
A, B, C = Contact(b"\x0a" * 32), Contact(b"\x0b" * 32), Contact(b"\x0c" * 32)


def holder() -> Seller:
    node = DhtNode(C.key)
    for price in (3, 8):
        data = records.encode(statements.sign(KEYS.sign, KEYS.node_id.raw, {b"price": price}, 0, 99))
        node.on_store(Contact(KEYS.node_id.raw), KEY, data, 0.0, CTX)
    return Seller(node, Terms(base=2, per_result=5, per_kib=1), quote_ttl=30.0)


def test_two_hops_exact_accounting_and_claims_once() -> None:
    c = holder()
    b = Seller(DhtNode(B.key), Terms(base=3, per_result=9, per_kib=9), quote_ttl=30.0)
    qid = b"f" * 16
    own = b.on_query(A, qid, KEY, QUERY, 1.0, CTX)
    assert own.count == 0  # b holds nothing: it forwards
    down = c.on_query(B, qid, KEY, QUERY, 1.0, CTX)
    assert down.count == 2 and down.price == 2 + 2 * 5 + 1
    b.forget(qid)
    up = b.resell(A, qid, C.key, down, 1.5)
    assert up.price == down.price + 3 and up.commitment == down.commitment and up.count == 2
    assert b.resell(A, qid, C.key, down, 1.6) == up  # a retry: the same quote
    with pytest.raises(Refused):
        b.resell(C, qid, C.key, down, 1.6)  # another peer cannot take the id

    with pytest.raises(Refused):
        b.payable(A.key, qid, up.price - 1, 2.0)  # short
    with pytest.raises(Refused):
        b.payable(C.key, qid, up.price, 2.0)  # from the wrong peer
    sale = b.payable(A.key, qid, up.price, 2.0)
    assert not sale.paid and b.earned == 0  # checked, nothing marked before the claim
    assert b.on_payment(A.key, qid, up.price, 2.0) is sale and sale.paid
    b.on_payment(A.key, qid, up.price, 2.5)  # the same payment named again
    assert b.earned == 3  # the margin, once

    data = c.on_paid(B.key, qid, down.price, 2.0)
    assert c.earned == down.price
    with pytest.raises(RecordError):
        b.delivered(qid, data + b"x")
    assert b.delivered(qid, data).answer == data
    ans = Buyer(max_price=up.price).on_answer(up, data, KEY, CTX)
    assert len(ans.records) == 2
    # asker paid up.price; b kept 3; c earned down.price: nothing created or lost
    assert up.price == b.earned + c.earned


def test_expired_quote_is_not_payable() -> None:
    c = holder()
    quote = c.on_query(B, b"e" * 16, KEY, QUERY, 1.0, CTX)
    with pytest.raises(Refused, match="expired"):
        c.payable(B.key, b"e" * 16, quote.price, 31.0)
    with pytest.raises(Refused):
        c.resell(B, b"g" * 16, C.key, quote, 1.0)  # a forwarded quote must be for the same id


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_answer_decoder_never_crashes(data: bytes) -> None:
    try:
        decode_answer(data, KEY, CTX)
    except RecordError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10), st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_answer_decoder_refuses_foreign_records(count: int, recs: list[bytes]) -> None:
    from eschaton.core.wire import bencode

    data = bencode.encode({"records": list(recs), "count": count})
    with pytest.raises(RecordError):  # random bytes are no record that belongs under KEY
        decode_answer(data, KEY, CTX)
