"""What one node holds for the DHT: bounded, expiring, republished records; rate limits.

Rules / theory of operation:
- Records are kept under their DHT key, one entry per (key, record id), with the publisher who
  stored it (the node key of the link the store came over, never a claim in the message).
- Every publisher has a quota (records and bytes), and the whole store has a byte bound: one
  node filling its neighbours' disks cannot push out everybody else's records; a store over
  quota is refused (``Refused``), never silently dropped later.
- A record expires ``ttl`` seconds after its last store; its publisher must republish before
  that (Kademlia republishes hourly and expires after a day). Holders also push what they hold
  to the current k closest every ``republish`` seconds, so records survive the churn of their
  holders; ``due(now)`` hands back the entries to push and re-arms their timers.
- ``TokenBuckets`` limits requests per peer: ``rate`` per second with bursts of ``burst``.
- ``now`` is always passed in: the core never reads a clock.
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.dht.errors import Refused


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one node's DHT store."""

    per_publisher_records: int = 256
    """Most records one publisher may keep on this node."""
    per_publisher_bytes: int = 256 * 1024
    """Most bytes of records one publisher may keep on this node."""
    total_bytes: int = 16 * 1024 * 1024
    """Most bytes of records this node keeps in all."""
    max_record: int = 16 * 1024
    """Largest single record."""
    ttl: float = 86400.0
    """Seconds a record lives after its last store."""
    republish: float = 3600.0
    """Seconds between two pushes of a held record to the current k closest."""


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Entry:
    key: bytes
    rid: bytes
    data: bytes
    publisher: bytes
    expires: float
    republish_at: float


class Store:
    """Records held by one node."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._by_key: dict[bytes, dict[bytes, Entry]] = {}
        self._usage: dict[bytes, tuple[int, int]] = {}  # publisher -> (records, bytes)
        self.total = 0

    def put(self, key: bytes, rid: bytes, data: bytes, publisher: bytes, now: float,
            ttl: float | None = None) -> Entry:
        """Store (or refresh) a record that was verified by the caller."""
        lim = self.limits
        if len(data) > lim.max_record:
            raise Refused(f"record of {len(data)} bytes exceeds {lim.max_record}")
        life = lim.ttl if ttl is None else min(ttl, lim.ttl)
        if life <= 0:
            raise Refused("record has already expired")
        old = self._by_key.get(key, {}).get(rid)
        n, used = self._usage.get(publisher, (0, 0))
        if old is not None and old.publisher == publisher:
            n, used = n - 1, used - len(old.data)
        if n + 1 > lim.per_publisher_records:
            raise Refused(f"publisher holds {n} records here, the most allowed")
        if used + len(data) > lim.per_publisher_bytes:
            raise Refused(f"publisher's records would exceed {lim.per_publisher_bytes} bytes")
        grow = len(data) - (len(old.data) if old is not None else 0)
        if self.total + grow > lim.total_bytes:
            raise Refused("store is full")
        if old is not None:
            self._forget(old)
        e = Entry(key, rid, data, publisher, now + life, now + lim.republish)
        self._by_key.setdefault(key, {})[rid] = e
        n, used = self._usage.get(publisher, (0, 0))
        self._usage[publisher] = (n + 1, used + len(data))
        self.total += len(data)
        return e

    def _forget(self, e: Entry) -> None:
        slot = self._by_key.get(e.key, {})
        if slot.pop(e.rid, None) is None:
            return
        if not slot:
            del self._by_key[e.key]
        n, used = self._usage[e.publisher]
        if n <= 1:
            del self._usage[e.publisher]
        else:
            self._usage[e.publisher] = (n - 1, used - len(e.data))
        self.total -= len(e.data)

    def get(self, key: bytes, now: float) -> list[Entry]:
        """Live records under ``key``."""
        return [e for e in self._by_key.get(key, {}).values() if e.expires > now]

    def expire(self, now: float) -> int:
        """Drop expired records; returns how many."""
        dead = [e for s in self._by_key.values() for e in s.values() if e.expires <= now]
        for e in dead:
            self._forget(e)
        return len(dead)

    def due(self, now: float) -> list[Entry]:
        """Live records whose republish time has come; their timers are re-armed."""
        out = []
        for s in self._by_key.values():
            for e in s.values():
                if e.republish_at <= now < e.expires:
                    e.republish_at = now + self.limits.republish
                    out.append(e)
        return out

    def usage(self, publisher: bytes) -> tuple[int, int]:
        """(records, bytes) ``publisher`` keeps here."""
        return self._usage.get(publisher, (0, 0))

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values())

    def keys(self) -> list[bytes]:
        return list(self._by_key)


class TokenBuckets:
    """Per-peer request rate limits (a token bucket each, refilled from ``now``)."""

    def __init__(self, rate: float, burst: float, max_peers: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._b: dict[bytes, tuple[float, float]] = {}

    def allow(self, peer: bytes, now: float, cost: float = 1.0) -> bool:
        tokens, last = self._b.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        self._b.pop(peer, None)
        self._b[peer] = (tokens, now)
        if len(self._b) > self.max_peers:
            del self._b[next(iter(self._b))]  # least recently active peer's bucket goes first
        return ok
