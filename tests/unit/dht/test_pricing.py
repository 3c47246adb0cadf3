"""Queries answered by a node, priced, forwarded with the forwarder's cost, capped by the asker."""
from __future__ import annotations

import random

import pytest

from eschaton.core.dht import query as q
from eschaton.core.dht import records, statements, sumtree
from eschaton.core.dht.errors import DhtLocalError, Refused
from eschaton.core.dht.pricing import Terms, TooExpensive, accept
from eschaton.core.dht.protocol import DhtNode
from eschaton.core.dht.routing import Contact
from eschaton.core.link.identity import NodeKeys

KEYS = NodeKeys.generate(random.Random(11).randbytes)
ASKER = Contact(b"\x0b" * 32)


def holder_with_statements() -> tuple[DhtNode, bytes, list[bytes]]:
    node = DhtNode(b"\x0c" * 32)
    key = records.signer_key(KEYS.node_id.raw)
    stored = []
    for i, (svc, price, until) in enumerate([(b"weather", 5, 50), (b"water", 7, 50),
                                             (b"weather", 11, 50), (b"weather", 13, 9)]):
        st = statements.sign(KEYS.sign, KEYS.node_id.raw,
                             {b"svc": svc, b"price": price, b"n": i}, 0, until)
        data = records.encode(st)
        node.on_store(Contact(KEYS.node_id.raw), key, data, 0.0, records.Context(5, lambda h: False))
        stored.append(data)
    return node, key, stored


def test_query_selects_among_a_signers_statements() -> None:
    node, key, stored = holder_with_statements()
    ctx = records.Context(20, lambda h: False)  # the fourth statement expired at height 9
    ans = node.on_query(ASKER, key, q.And((q.Eq((b"body", b"svc"), b"weather"),
                                           q.Range((b"body", b"price"), 0, 100))), 1.0, ctx)
    assert sorted(ans.records) == sorted([stored[0], stored[2]]) and ans.root is None
    total = node.on_query(ASKER, key, q.Sum(q.Prefix((b"body", b"svc"), b"wea"),
                                            (b"body", b"price")), 1.0, ctx)
    assert total.records == [] and total.count == 2 and total.root is not None
    assert total.root[1] == 5 + 11
    # The asker, holding the two records, checks them against the root.
    leaves = sorted((records.record_id(stored[i]), p) for i, p in ((0, 5), (2, 11)))
    tree = sumtree.SumTree(leaves)
    assert tree.root == total.root
    assert all(sumtree.verify(total.root, lbl, v, tree.prove(j))
               for j, (lbl, v) in enumerate(leaves))


def test_quotes_caps_and_forwarding_account_exactly() -> None:
    holder, forwarder = Terms(base=3, per_result=2, per_kib=1), Terms(base=4)
    assert holder.quote(0, 0) == 3 and holder.quote(2, 1) == 3 + 4 + 1
    assert holder.quote(2, 1025) == 3 + 4 + 2
    hq = holder.quote(2, 900)
    fq = forwarder.forward(hq)
    assert fq == hq + 4
    paid_by_asker = accept(fq, max_price=fq)
    forwarder_net = paid_by_asker - hq  # it pays the holder the holder's quote
    assert (paid_by_asker, forwarder_net) == (12, 4)
    with pytest.raises(TooExpensive, match="exceeds --max-price 11"):
        accept(fq, max_price=11)
    with pytest.raises(Refused):
        forwarder.forward(2**63 - 1)
    with pytest.raises(DhtLocalError):
        Terms(base=-1)
