"""The DHT's wire protocol: nodes exchanging real encoded messages through the message table."""
from __future__ import annotations

import copy
import itertools
import random
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.dht import records
from eschaton.core.dht.ids import ID_BITS
from eschaton.core.dht.protocol import DhtNode, Params
from eschaton.core.dht.rpc import Rpc, Send
from eschaton.core.wire.codec import decode_message, encode_message, make
from eschaton.core.wire.errors import WireError

CTX = records.Context(0, lambda h: False)


class Net:
    """Nodes linked in memory; messages go through the wire codec; dead nodes drop them.

    The nodes join one after another the Kademlia way, over the wire: through a random node
    already in, a lookup of their own id, then one lookup of a random id in each bucket beyond
    their nearest neighbour (as ``core/dht/sim.py`` does). Nodes that only know a few random
    others have tables too sparse for a lookup to reach the k closest live nodes: which of the
    holders it reaches then depends on which ones left."""

    def __init__(self, n: int, seed: int) -> None:
        r = random.Random(seed)
        self.now = 0.0
        self.rpcs: dict[bytes, Rpc] = {}
        self.dead: set[bytes] = set()
        self.queue: deque[tuple[bytes, Send]] = deque()
        for _ in range(n):
            rpc = Rpc(DhtNode(r.randbytes(32), Params(k=6, alpha=2)), timeout=2.0)
            if self.rpcs:
                boot = self.rpcs[r.choice(sorted(self.rpcs))]
                rpc.node.table.observe(boot.node.contact, self.now)
            self.rpcs[rpc.node.contact.key] = rpc
            self._join(rpc, r)

    def _join(self, rpc: Rpc, r: random.Random) -> None:
        me = rpc.node
        self._lookup(rpc, me.id)
        near = me.table.closest(me.id, 1)
        own = int.from_bytes(me.id, "big")
        for i in range((own ^ near[0].num).bit_length() if near else ID_BITS, ID_BITS):
            self._lookup(rpc, (own ^ (1 << i) ^ r.getrandbits(i)).to_bytes(32, "big"))

    def _lookup(self, rpc: Rpc, target: bytes) -> None:
        _, sends = rpc.find(target, self.now)
        self.send(rpc.node.contact.key, sends)
        self.run()

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
    holders = sorted(r.to for r in results)  # sorted: a set's order changes with the hash seed
    others = set(keys[30:]) - set(holders)
    asker_key = next(k for k in keys[1:30] if k not in holders)
    # Whichever half of the holders leaves (with a quarter of the other nodes), the value is
    # found by a node that did not store it.
    for gone in itertools.combinations(holders, 3):
        after = copy.deepcopy(net)
        after.dead = set(gone) | others
        asker = after.rpcs[asker_key]
        job, sends = asker.find(key, after.now, want_value=True)
        after.send(asker_key, sends)
        after.run()
        assert job.values == [data], [holders.index(g) for g in gone]
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
