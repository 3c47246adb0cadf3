"""k-buckets, ids, the iterative lookup state machine and the bounded store."""
from __future__ import annotations

import hashlib
import random

import pytest

from eschaton.core.dht.errors import Refused
from eschaton.core.dht.ids import bucket_index, dht_id, distance, meets_puzzle
from eschaton.core.dht.lookup import Lookup
from eschaton.core.dht.routing import Contact, RoutingTable
from eschaton.core.dht.storage import Limits, Store, TokenBuckets


def contacts(n: int, seed: int = 1) -> list[Contact]:
    r = random.Random(seed)
    return [Contact(r.randbytes(32)) for _ in range(n)]


def test_id_is_bound_to_the_key_and_puzzle_costs_work() -> None:
    k = b"\x01" * 32
    assert Contact(k).id == dht_id(k) == hashlib.sha256(b"eschaton-dht-id-v1" + k).digest()
    assert dht_id(k) != dht_id(b"\x02" * 32)
    ids = [dht_id(bytes([i]) * 32) for i in range(256)]
    solved = [i for i in ids if meets_puzzle(i, 4)]
    assert 0 < len(solved) < 64  # about 1 in 16 meets 4 bits
    for i in solved:
        assert hashlib.sha256(i).digest()[0] >> 4 == 0
    assert all(meets_puzzle(i, 0) for i in ids)


def test_xor_metric() -> None:
    a, b = b"\x00" * 32, b"\x80" + b"\x00" * 31
    assert distance(a, b) == distance(b, a) == 1 << 255
    assert bucket_index(a, b) == 255 and bucket_index(a, a) == -1
    assert bucket_index(a, b"\x00" * 31 + b"\x01") == 0


def test_closest_equals_brute_force() -> None:
    r = random.Random(9)
    t = RoutingTable(r.randbytes(32), k=5)
    for c in contacts(500):
        t.observe(c, 0.0)
    everyone = t.contacts()
    for _ in range(100):
        target = r.randbytes(32)
        tn = int.from_bytes(target, "big")
        assert t.closest(target, 9) == sorted(everyone, key=lambda c: c.num ^ tn)[:9]


def test_full_bucket_keeps_old_contacts_and_caches_new() -> None:
    own = b"\x00" * 32
    t = RoutingTable(own, k=3, max_failures=2)
    far = [c for c in contacts(400) if bucket_index(own, c.id) == 255][:5]
    for c in far[:3]:
        assert t.observe(c, 1.0) is None
    assert t.observe(far[3], 2.0) == far[0]  # probe the oldest; the new one waits
    assert far[3] not in t and far[0] in t
    assert t.observe(far[0], 3.0) is None  # seen again: now the newest
    assert t.observe(far[4], 4.0) == far[1]
    assert not t.failed(far[1])  # one failure is forgiven
    assert t.failed(far[1])  # the second evicts it; the newest cached replacement moves in
    assert far[1] not in t and far[4] in t and len(t) == 3


def replies(everyone: list[Contact], target: bytes, n: int = 20) -> list[Contact]:
    tn = int.from_bytes(target, "big")
    return sorted(everyone, key=lambda c: c.num ^ tn)[:n]


def test_lookup_converges_on_the_k_closest_despite_dead_nodes() -> None:
    r = random.Random(4)
    net = contacts(300, seed=5)
    dead = {c.id for c in r.sample(net, 60)}
    target = r.randbytes(32)
    lk = Lookup(target, net[:3], k=8, alpha=3)
    seen_in_flight = 0
    while True:
        acts = lk.actions()
        if not acts:
            break
        seen_in_flight = max(seen_in_flight, lk.in_flight)
        for a in acts:
            if a.to.id in dead:
                lk.on_timeout(a.to)
            else:
                lk.on_response(a.to, replies(net, target))
    assert lk.done and seen_in_flight <= 3
    live = [c for c in net if c.id not in dead]
    assert lk.closest() == replies(live, target, 8)


def test_lookup_for_a_value_stops_at_the_first_holder() -> None:
    net = contacts(50)
    target = b"\x11" * 32
    lk = Lookup(target, net[:5], k=8, alpha=2, want_value=True)
    first = lk.actions()
    assert len(first) == 2
    lk.on_response(first[0].to, replies(net, target), has_value=True)
    assert lk.done and lk.found == first[0].to and lk.hops == 1
    assert lk.actions() == []


def test_unsolicited_responses_are_ignored() -> None:
    net = contacts(30)
    lk = Lookup(b"\x00" * 32, net[:2], k=4, alpha=1)
    (a,) = lk.actions()
    lk.on_response(net[1], net)  # never asked
    assert lk.in_flight == 1
    lk.on_response(a.to, net[2:6])
    assert lk.in_flight == 0


def test_store_quotas_expiry_and_republish() -> None:
    s = Store(Limits(per_publisher_records=2, per_publisher_bytes=100, total_bytes=150,
                     max_record=60, ttl=100.0, republish=10.0))
    s.put(b"k1", b"r1", b"x" * 40, b"alice", now=0.0)
    s.put(b"k1", b"r1", b"x" * 40, b"alice", now=1.0)  # a refresh does not count twice
    s.put(b"k2", b"r2", b"y" * 40, b"alice", now=5.0)
    with pytest.raises(Refused, match="most allowed"):
        s.put(b"k3", b"r3", b"z", b"alice", now=1.0)
    with pytest.raises(Refused, match="exceeds 60"):
        s.put(b"k3", b"r3", b"z" * 61, b"bob", now=1.0)
    s.put(b"k3", b"r3", b"z" * 60, b"bob", now=5.0)
    with pytest.raises(Refused, match="full"):
        s.put(b"k4", b"r4", b"w" * 20, b"carol", now=1.0)
    assert s.usage(b"alice") == (2, 80) and s.total == 140
    assert s.due(10.5) == []  # r1's timer started again at its refresh
    assert [e.rid for e in s.due(11.0)] == [b"r1"]
    assert s.due(11.0) == []  # re-armed
    assert sorted(e.rid for e in s.due(15.0)) == [b"r2", b"r3"]
    assert s.get(b"k1", 100.5) != [] and s.get(b"k1", 101.0) == []
    assert s.expire(101.0) == 1 and s.usage(b"alice") == (1, 40)
    assert s.expire(105.0) == 2 and s.total == 0 and s.usage(b"alice") == (0, 0)


def test_rate_limit_refills_with_time() -> None:
    tb = TokenBuckets(rate=2.0, burst=3.0)
    assert [tb.allow(b"p", 0.0) for _ in range(4)] == [True, True, True, False]
    assert tb.allow(b"q", 0.0)  # per peer
    assert tb.allow(b"p", 0.5) and not tb.allow(b"p", 0.5)
