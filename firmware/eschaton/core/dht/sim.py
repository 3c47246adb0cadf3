"""A deterministic simulator of a DHT network over the sans-IO core.

Rules / theory of operation:
- Every node is a real ``DhtNode``; messages are delivered by calling its handlers, in the order
  a lookup's ``actions()`` asks for them. A query to a node that has left times out
  (``on_timeout``, and the asker's table counts the failure); nothing else is faked. Records are
  real preimage records, verified on store and on receipt.
- Randomness comes from one ``random.Random(seed)`` and time from a counter, so a seed gives the
  same network, the same churn and the same figures on every run and machine.
- A run: ``n`` nodes join one after another (each through a random live node: a lookup of its
  own id, then one lookup per bucket it can fill), ``values`` records are published to the k
  closest of their keys, then ``churn`` of the nodes leave without a word and as many new ones
  join, one republish interval passes (holders push what is due, Kademlia's hourly
  republish), and ``lookups`` find-values start at random live nodes for random published keys.
- ``hops`` of a lookup is the hop number of the node that returned the value (1: a contact the
  asker already knew); a success is a lookup that got back a record that verifies.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from eschaton.core.dht import records
from eschaton.core.dht.errors import DhtRemoteError
from eschaton.core.dht.ids import ID_BITS
from eschaton.core.dht.lookup import Lookup
from eschaton.core.dht.protocol import DEFAULT_PARAMS, DhtNode, Params
from eschaton.core.dht.storage import DEFAULT_LIMITS, Limits

CTX = records.Context(height=0, known_header=lambda _h: False)


@dataclass(frozen=True, slots=True)
class Result:
    nodes: int
    churn: float
    lookups: int
    successes: int
    hops: tuple[int, ...]
    queries: tuple[int, ...]
    timeouts: int
    """Queries of the measured lookups that went to nodes that had left."""

    @property
    def success_rate(self) -> float:
        return self.successes / self.lookups if self.lookups else 0.0

    @property
    def median_hops(self) -> float:
        return statistics.median(self.hops) if self.hops else float("nan")

    @property
    def median_queries(self) -> float:
        return statistics.median(self.queries) if self.queries else float("nan")


class Sim:
    def __init__(self, seed: int, params: Params = DEFAULT_PARAMS, limits: Limits = DEFAULT_LIMITS,
                 republish: bool = True) -> None:
        self.rng = random.Random(seed)
        self.params = params
        self.limits = limits
        self.do_republish = republish
        self.now = 0.0
        self.nodes: dict[bytes, DhtNode] = {}
        self.live: list[bytes] = []
        self._live_set: set[bytes] = set()
        self.timeouts = 0

    # --- delivery ---------------------------------------------------------------------------

    def _tick(self) -> float:
        self.now += 0.001
        return self.now

    def drive(self, origin: DhtNode, lk: Lookup) -> Lookup:
        """Run ``lk`` for ``origin`` to its end, delivering its queries."""
        while True:
            acts = lk.actions()
            if not acts:
                break
            for a in acts:
                peer = self.nodes.get(a.to.id)
                if peer is None or a.to.id not in self._live_set:
                    lk.on_timeout(a.to)
                    origin.table.failed(a.to)
                    self.timeouts += 1
                    continue
                now = self._tick()
                try:
                    if a.want_value:
                        data, contacts = peer.on_find_value(origin.contact, a.target, now, CTX)
                        good = False
                        for d in data:
                            try:
                                records.check(d, a.target, CTX)
                                good = True
                            except DhtRemoteError:
                                pass
                        lk.on_response(a.to, contacts, has_value=good)
                    else:
                        lk.on_response(a.to, peer.on_find_node(origin.contact, a.target, now))
                except DhtRemoteError:
                    lk.on_timeout(a.to)
                    continue
                origin.table.observe(a.to, now)
        return lk

    # --- network life -----------------------------------------------------------------------

    def add_node(self) -> DhtNode:
        node = DhtNode(self.rng.randbytes(32), self.params, self.limits)
        boot = self.nodes[self.rng.choice(self.live)] if self.live else None
        self.nodes[node.id] = node
        if boot is not None:
            node.table.observe(boot.contact, self._tick())
            self.drive(node, node.lookup(node.id))
            # Refresh the buckets beyond the nearest neighbour: one lookup of a random id in
            # each, as a joining Kademlia node does.
            near = node.table.closest(node.id, 1)
            own = int.from_bytes(node.id, "big")
            lo = (own ^ near[0].num).bit_length() if near else ID_BITS
            for i in range(lo, ID_BITS):
                r = own ^ (1 << i) ^ self.rng.getrandbits(i)
                self.drive(node, node.lookup(r.to_bytes(32, "big")))
        self.live.append(node.id)
        self._live_set.add(node.id)
        return node

    def remove_random(self) -> None:
        i = self.rng.randrange(len(self.live))
        gone = self.live[i]
        self.live[i] = self.live[-1]
        self.live.pop()
        self._live_set.discard(gone)

    def publish(self, origin: DhtNode, data: bytes) -> int:
        """Store ``data`` at the k closest live nodes of its key; returns how many took it."""
        key = records.key_of(records.decode(data))
        lk = self.drive(origin, origin.lookup(key))
        stored = 0
        targets = lk.closest()
        if len(targets) < self.params.k and origin.id not in [c.id for c in targets]:
            targets.append(origin.contact)
        for c in targets:
            try:
                self.nodes[c.id].on_store(origin.contact, key, data, self._tick(), CTX)
                stored += 1
            except DhtRemoteError:
                pass
        return stored

    def republish_round(self) -> None:
        """One republish interval passes; every holder pushes what is due."""
        self.now += self.limits.republish + 1
        order = list(self.live)
        self.rng.shuffle(order)
        for nid in order:
            node = self.nodes[nid]
            for e in node.store.due(self.now):
                self.publish(node, e.data)

    def find(self, origin: DhtNode, key: bytes) -> Lookup:
        return self.drive(origin, origin.lookup(key, want_value=True))


def run(n: int, *, seed: int, churn: float = 0.2, values: int = 100, lookups: int = 500,
        params: Params = DEFAULT_PARAMS, republish: bool = True) -> Result:
    """Build, populate, churn and measure a network (see the module's rules)."""
    sim = Sim(seed, params, republish=republish)
    for _ in range(n):
        sim.add_node()
    keys = []
    for i in range(values):
        rec = records.encode(records.Preimage("sha256", b"value %d of %d" % (i, seed)))
        sim.publish(sim.nodes[sim.rng.choice(sim.live)], rec)
        keys.append(records.key_of(records.decode(rec)))
    moved = round(n * churn)
    for _ in range(moved):
        sim.remove_random()
    for _ in range(moved):
        sim.add_node()
    if republish:
        sim.republish_round()
    sim.timeouts = 0
    ok = 0
    hops: list[int] = []
    queries: list[int] = []
    for _ in range(lookups):
        origin = sim.nodes[sim.rng.choice(sim.live)]
        lk = sim.find(origin, sim.rng.choice(keys))
        queries.append(lk.queries)
        if lk.found is not None:
            ok += 1
            hops.append(lk.hops)
    return Result(n, churn, lookups, ok, tuple(hops), tuple(queries), sim.timeouts)
