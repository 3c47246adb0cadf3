"""One DHT node's protocol logic: answering find-node, find-value and store; starting lookups.

Rules / theory of operation:
- A request's sender is the node key of the link it came over (authenticated by the link's
  handshake), so its ``Contact`` is trustworthy and goes into the k-buckets (``observe``): the
  routing table learns from traffic, as in Kademlia, with no extra pings.
- Every request first spends a token from the sender's rate bucket; an empty bucket is a
  ``Refused`` (the service answers with an error and may drop the peer).
- A store is decoded, checked to belong under its key and verified (``records.check``) before
  it touches the store, and it is charged to the sender's quota. A find-value returns only live
  records that verify now (a statement past its validity is not served).
- A query is evaluated over the records a find-value would return (verified, live): queries
  select among what a key holds (all statements of a signer, say), they do not scan the store.
- Lookups are ``lookup.Lookup`` state machines; this class only seeds them from the table.
- Time (``now``) and the verifier's chain view (``ctx``) are inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.dht import query, records
from eschaton.core.dht.errors import RecordError, Refused
from eschaton.core.dht.ids import dht_id
from eschaton.core.dht.lookup import Lookup
from eschaton.core.dht.routing import Contact, RoutingTable
from eschaton.core.dht.storage import DEFAULT_LIMITS, Entry, Limits, Store, TokenBuckets
from eschaton.core.wire import bencode


@dataclass(frozen=True, slots=True)
class Params:
    """The DHT's tunables (Kademlia's names)."""

    k: int = 20
    """Bucket size and replication factor."""
    alpha: int = 3
    """Queries in flight per lookup."""
    rate: float = 50.0
    """Requests per second a peer may make, sustained."""
    burst: float = 200.0
    """Requests a peer may make in a burst."""


DEFAULT_PARAMS = Params()


@dataclass(frozen=True, slots=True)
class Answer:
    """A query's answer: the matching records, or for a map/reduce the sum tree's root."""

    records: list[bytes]
    root: tuple[bytes, int] | None
    """(hash, total) of the Merkle sum tree, for a map/reduce."""
    count: int
    """Records matched."""


class DhtNode:
    def __init__(self, key: bytes, params: Params = DEFAULT_PARAMS,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.contact = Contact(key)
        self.id = dht_id(key)
        self.params = params
        self.table = RoutingTable(self.id, k=params.k)
        self.store = Store(limits)
        self.rates = TokenBuckets(params.rate, params.burst)

    def _admit(self, frm: Contact, now: float) -> None:
        if not self.rates.allow(frm.key, now):
            raise Refused("rate limit: too many requests")
        self.table.observe(frm, now)

    def on_find_node(self, frm: Contact, target: bytes, now: float) -> list[Contact]:
        self._admit(frm, now)
        return self.table.closest(target, exclude=frm.id)

    def on_find_value(self, frm: Contact, key: bytes, now: float,
                      ctx: records.Context) -> tuple[list[bytes], list[Contact]]:
        """The verified live records under ``key`` (if any) and the closest contacts."""
        self._admit(frm, now)
        out = []
        for e in self.store.get(key, now):
            try:
                records.check(e.data, key, ctx)
            except RecordError:
                continue  # e.g. a statement that expired by height since it was stored
            out.append(e.data)
        return out, ([] if out else self.table.closest(key, exclude=frm.id))

    def on_store(self, frm: Contact, key: bytes, data: bytes, now: float,
                 ctx: records.Context) -> Entry:
        self._admit(frm, now)
        records.check(data, key, ctx)
        return self.store.put(key, records.record_id(data), data, frm.key, now)

    def on_query(self, frm: Contact, key: bytes, q: query.Query | query.Sum, now: float,
                 ctx: records.Context) -> Answer:
        """Evaluate ``q`` over the verified live records under ``key``."""
        data, _ = self.on_find_value(frm, key, now, ctx)
        docs = [(records.record_id(d), bencode.decode(d, records.LIMITS)) for d in data]
        if isinstance(q, query.Sum):
            tree = query.map_reduce(q, docs)
            return Answer([], tree.root, len(tree.layers[0]))
        hits = [d for d, (_, doc) in zip(data, docs, strict=True) if query.matches(q, doc)]
        return Answer(hits, None, len(hits))

    def lookup(self, target: bytes, want_value: bool = False) -> Lookup:
        p = self.params
        return Lookup(target, self.table.closest(target), k=p.k, alpha=p.alpha,
                      want_value=want_value, own=self.id)
