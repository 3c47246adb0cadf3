"""k-buckets: who a node knows, kept the Kademlia way.

Rules / theory of operation:
- One bucket per distance class (the bit length of ``own XOR other``), each holding at most
  ``k`` contacts, least recently seen first. This is the split-bucket tree of the paper with the
  own-id branch always split, which is what it converges to.
- A contact seen again moves to the tail. A new contact for a full bucket does not evict anyone:
  it waits in the bucket's replacement cache, and ``observe`` returns the head (oldest) as a
  contact worth probing. Long-lived contacts are the most likely to stay (the paper's uptime
  argument), and an attacker cannot flush a bucket by announcing many fresh ids.
- A contact that fails ``max_failures`` requests in a row is dropped and the newest cached
  replacement takes its place. Time is an input (``now``), used only for ``last_seen``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eschaton.core.dht.ids import ID_BITS, dht_id


@dataclass(frozen=True, slots=True)
class Contact:
    """A node as the DHT knows it: its public key and the id derived from it."""

    key: bytes
    id: bytes = field(init=False)
    num: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        i = dht_id(self.key)
        object.__setattr__(self, "id", i)
        object.__setattr__(self, "num", int.from_bytes(i, "big"))


@dataclass(slots=True)
class _Entry:
    contact: Contact
    last_seen: float
    failures: int = 0


class RoutingTable:
    """The k-buckets of the node whose DHT id is ``own``."""

    def __init__(self, own: bytes, k: int = 20, max_failures: int = 2,
                 replacements: int = 8) -> None:
        self.own = own
        self._own_num = int.from_bytes(own, "big")
        self.k = k
        self.max_failures = max_failures
        self.replacements = replacements
        self._buckets: list[dict[bytes, _Entry]] = [{} for _ in range(ID_BITS)]
        self._cache: list[dict[bytes, Contact]] = [{} for _ in range(ID_BITS)]
        self._nonempty: set[int] = set()

    def _index(self, c: Contact) -> int:
        return (self._own_num ^ c.num).bit_length() - 1

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def __contains__(self, c: Contact) -> bool:
        i = self._index(c)
        return i >= 0 and c.id in self._buckets[i]

    def observe(self, c: Contact, now: float) -> Contact | None:
        """We heard from ``c`` (a request or a response). Returns the bucket's oldest contact
        if ``c`` had to wait in the replacement cache (probe it; ``failed`` evicts it)."""
        i = self._index(c)
        if i < 0:
            return None  # ourselves
        bucket = self._buckets[i]
        e = bucket.pop(c.id, None)
        if e is not None:
            e.last_seen = now
            e.failures = 0
            bucket[c.id] = e  # dicts keep insertion order: re-inserting moves it to the tail
            return None
        if len(bucket) < self.k:
            bucket[c.id] = _Entry(c, now)
            self._nonempty.add(i)
            return None
        cache = self._cache[i]
        cache.pop(c.id, None)
        cache[c.id] = c
        while len(cache) > self.replacements:
            del cache[next(iter(cache))]
        return next(iter(bucket.values())).contact

    def failed(self, c: Contact) -> bool:
        """``c`` did not answer. Returns True if it was dropped from the table."""
        i = self._index(c)
        if i < 0:
            return False
        bucket = self._buckets[i]
        e = bucket.get(c.id)
        if e is None:
            self._cache[i].pop(c.id, None)
            return False
        e.failures += 1
        if e.failures < self.max_failures:
            return False
        del bucket[c.id]
        cache = self._cache[i]
        if cache:
            newest = next(reversed(cache))
            bucket[newest] = _Entry(cache.pop(newest), e.last_seen)
        if not bucket:
            self._nonempty.discard(i)
        return True

    def remove(self, c: Contact) -> None:
        i = self._index(c)
        if i >= 0:
            self._buckets[i].pop(c.id, None)
            self._cache[i].pop(c.id, None)
            if not self._buckets[i]:
                self._nonempty.discard(i)

    def closest(self, target: bytes, n: int | None = None,
                exclude: bytes | None = None) -> list[Contact]:
        """The ``n`` (default k) known contacts closest to ``target``, nearest first.

        Why not sort everyone: a contact ``c`` in bucket i has ``own ^ c`` with top bit i, so
        its distance to the target agrees with ``D = own ^ target`` above bit i and has bit i
        equal to ``not D_i``. The buckets' distance ranges are thus disjoint and ordered by
        that prefix, and whole buckets are taken nearest first until there are enough."""
        t = int.from_bytes(target, "big")
        d = self._own_num ^ t
        want = self.k if n is None else n
        order = sorted(self._nonempty,
                       key=lambda i: ((d >> (i + 1)) << (i + 1)) | ((~d >> i & 1) << i))
        pairs: list[tuple[int, Contact]] = []
        for i in order:
            pairs.extend((e.contact.num ^ t, e.contact) for e in self._buckets[i].values()
                         if e.contact.id != exclude)
            if len(pairs) >= want:
                break
        pairs.sort(key=lambda p: p[0])
        return [c for _, c in pairs[:want]]

    def contacts(self) -> list[Contact]:
        return [e.contact for b in self._buckets for e in b.values()]

    def stale_buckets(self, now: float, refresh_after: float) -> list[int]:
        """Indices of non-empty buckets nobody in which was heard from for ``refresh_after``
        seconds: the owner refreshes each with a lookup of a random id in its range."""
        out = []
        for i, b in enumerate(self._buckets):
            if b and max(e.last_seen for e in b.values()) + refresh_after <= now:
                out.append(i)
        return out
