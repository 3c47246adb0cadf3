"""The DHT's wire protocol: nodes exchanging real encoded messages through the message table."""
from __future__ import annotations

import random
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.dht import records
from eschaton.core.dht.protocol import DhtNode, Params
from eschaton.core.dht.rpc import Rpc, Send
from eschaton.core.wire.codec import decode_message, encode_message, make
from eschaton.core.wire.errors import WireError

CTX = records.Context(0, lambda h: False)


class Net:
    """Nodes linked in memory; messages go through the wire codec; dead nodes drop them."""

    def __init__(self, n: int, seed: int) -> None:
        r = random.Random(seed)
        self.now = 0.0
        self.rpcs = {}
        for _ in range(n):
            rpc = Rpc(DhtNode(r.randbytes(32), Params(k=6, alpha=2)), timeout=2.0)
            self.rpcs[rpc.node.contact.key] = rpc
        self.dead: set[bytes] = set()
        self.queue: deque[tuple[bytes, Send]] = deque()
        keys = list(self.rpcs)
        for k in keys:  # everyone knows a few others to start from
            for other in r.sample(keys, 4):
                if other != k:
                    self.rpcs[k].node.table.observe(self.rpcs[other].node.contact, 0.0)

    def send(self, frm: bytes, sends: list[Send]) -> None:
        self.queue.extend((frm, s) for s in sends)

    def run(self) -> None:
        while True:
            while self.queue:
                frm, s = self.queue.popleft()
                if s.to in self.dead:
                    continue
                msg = decode_message(encode_message(s.msg))  # the real wire bytes
                self.now += 0.01
                self.send(s.to, self.rpcs[s.to].on_message(frm, msg, self.now, CTX))
            deadlines = [d for r in self.rpcs.values() if (d := r.next_deadline()) is not None]
            if not deadlines:
                return
            self.now = max(self.now, min(deadlines))
            for k, r in self.rpcs.items():
                self.send(k, r.expire(self.now))


def test_store_then_find_over_the_wire_with_dead_nodes() -> None:
    net = Net(40, seed=2)
    keys = list(net.rpcs)
    publisher = net.rpcs[keys[0]]
    data = records.encode(records.Preimage("sha256d", b"over the wire"))
    key = records.key_of(records.decode(data))
    job, sends = publisher.find(key, net.now)
    net.send(keys[0], sends)
    net.run()
    assert job.done and len(job.lookup.closest()) == 6
    results = []
    for c in job.lookup.closest():
        res, s = publisher.store(c, key, data, net.now)
        assert s is not None
        results.append(res)
        net.send(keys[0], [s])
    net.run()
    assert all(r.ok for r in results)
    holders = {r.to for r in results}
    net.dead = set(list(holders)[:3]) | set(keys[30:])  # half the holders and a quarter leave
    asker = next(net.rpcs[k] for k in keys[1:30] if k not in holders)
    job, sends = asker.find(key, net.now, want_value=True)
    net.send(asker.node.contact.key, sends)
    net.run()
    assert job.values == [data]
    assert asker.node.table.closest(key)  # learned while asking


def test_refusals_and_unmatched_answers() -> None:
    net = Net(4, seed=3)
    a, b = list(net.rpcs.values())[:2]
    bad = records.encode(records.Preimage("sha256", b"x"))
    res, s = a.store(b.node.contact, b"\x00" * 32, bad, 0.0)  # the wrong key for this record
    assert s is not None
    net.send(a.node.contact.key, [s])
    net.run()
    assert res.ok is False and "belong" in res.reason
    out = a.on_message(b.node.contact.key, make("dht_stored", nonce=999), 1.0, CTX)
    assert out == [] and a.unmatched == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(320, 335))
def test_random_dht_messages_never_crash(body: bytes, type_id: int) -> None:
    rpc = Rpc(DhtNode(b"\x01" * 32))
    try:
        msg = decode_message(type_id.to_bytes(2, "big") + body)
    except WireError:
        return
    for s in rpc.on_message(b"\x02" * 32, msg, 0.0, CTX):
        encode_message(s.msg)  # every answer fits the table


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=3),
       st.lists(st.binary(min_size=32, max_size=32), max_size=8), st.booleans())
def test_hostile_answers_to_a_lookup_count_as_no_value(recs: list[bytes], nodes: list[bytes],
                                                       want_value: bool) -> None:
    rpc = Rpc(DhtNode(b"\x01" * 32))
    peer = DhtNode(b"\x02" * 32).contact
    rpc.node.table.observe(peer, 0.0)
    job, (s,) = rpc.find(b"\x03" * 32, 0.0, want_value=want_value)
    nonce = s.msg.get_int("nonce")
    msg = (make("dht_values", nonce=nonce, records=recs, nodes=nodes) if want_value
           else make("dht_nodes", nonce=nonce, nodes=nodes))
    out = rpc.on_message(peer.key, decode_message(encode_message(msg)), 1.0, CTX)
    assert job.values == []
    assert rpc.bad_records == (len(recs) if want_value else 0)
    assert {x.to for x in out} <= set(nodes)  # it goes on asking the nodes it was told of
