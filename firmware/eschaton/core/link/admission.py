"""Admission of inbound links: how many strangers a node holds at once.

Rules / theory of operation:
- Every inbound connection asks for a *pending* slot before any link state (Noise keys, buffers,
  tasks) exists for it. Pending slots are capped in total and per source address (the IP for
  TCP), so one host cannot take every slot. A refused connection is closed at once.
- A pending connection holds its slot until its link opens or closes; the link's handshake
  deadline closes idle or slow ones, so a slot is never held longer than that.
- When every pending slot is taken, a newcomer from a source holding fewer of them than some
  other source still gets one: the oldest unauthenticated handshake of the source holding the
  most, if it has lasted ``evict_after`` seconds, is *evicted* (its ``on_evict`` hook closes
  it). A flood from many addresses therefore
  cannot lock out a friend dialling in from an address of its own (the friend's key is unknown
  until message 3, so slots cannot be reserved by key), and the friend's own handshake cannot
  be evicted before ``evict_after``, however fast the flood. Young handshakes are never
  evicted, so a flood cannot make every one of its connections cost a handshake: at most
  ``max_pending`` evictions per ``evict_after``, the rest are refused as before. A source
  cannot evict its equals, so one address cannot churn everyone else's handshakes.
  A handshake that has shown a key we admit (message 3) is never evicted.
- The initiator's identity arrives in Noise_XK message 3. Only then can the node tell a pinned
  peer from a stranger. With ``accept = "known"`` a stranger is refused there; otherwise it
  takes an *established* slot, capped by ``max_links``. Pinned peers are never refused for want
  of a slot: a flood of strangers must not lock a node's friends out.
- Nothing is kept per refused key or per closed connection: the per-source table holds only
  sources with a pending connection, so its size is bounded by ``max_pending``.
- Counters of refusals by reason are totals since start (for ``node status``); they are ints,
  not lists, so they stay small however long a flood lasts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from eschaton.core.link.identity import NodeId


class Refusal(Enum):
    """Why an inbound connection or link was refused."""

    PENDING_FULL = "pending_full"
    """Too many handshakes in progress."""
    SOURCE_FULL = "source_full"
    """Too many handshakes in progress from this source address."""
    LINKS_FULL = "links_full"
    """Too many established links from strangers."""
    UNKNOWN_KEY = "unknown_key"
    """``accept = "known"`` and the peer is not pinned."""
    EVICTED = "evicted"
    """A pending handshake closed to make room for a newcomer from a less busy source."""


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The caps (see ``docs/network.md`` for the defaults and why)."""

    max_pending: int
    """Inbound connections whose link is not open yet, from all sources together."""
    max_pending_per_source: int
    """... from one source address."""
    max_links: int
    """Established inbound links from peers that are not pinned."""
    accept_unknown: bool = True
    """False for ``accept = "known"``: only pinned peers may link."""
    evict_after: float = 2.5
    """Seconds a pending handshake must have lasted before a newcomer may evict it."""


class Ticket:
    """One admitted inbound connection. Idempotent: each slot is given back exactly once."""

    __slots__ = ("_admission", "source", "started", "_pending", "_link", "_authorized", "on_evict")

    def __init__(self, admission: Admission, source: str, started: float) -> None:
        self._admission = admission
        self.source = source
        self.started = started
        self._pending = True
        self._link = False
        self._authorized = False
        self.on_evict: Callable[[], None] | None = None
        """Set by the adapter: close this connection now (called at most once)."""

    def authorize(self, node_id: NodeId) -> bool:
        """The peer at message 3: may it link? (Takes an established slot if it may.)"""
        refusal = self._admission._admit_link(node_id)
        if refusal is not None:
            self._admission._refuse(refusal)
            return False
        self._authorized = True
        if not self._admission._pinned(node_id):
            self._link = True
            self._admission.links += 1
        return True

    @property
    def evictable(self) -> bool:
        return self._pending and not self._authorized

    def opened(self) -> None:
        """The link opened: the pending slot is free again."""
        if self._pending:
            self._pending = False
            self._admission._release_pending(self)

    def closed(self) -> None:
        """The connection is gone: every slot it held is free again."""
        self.opened()
        if self._link:
            self._link = False
            self._admission.links -= 1


class Admission:
    """Counts pending and established inbound links against ``AdmissionLimits``."""

    def __init__(self, limits: AdmissionLimits, *,
                 pinned: Callable[[NodeId], bool] = lambda _n: False) -> None:
        self.limits = limits
        self._pinned = pinned
        self.pending = 0
        self.links = 0
        self.by_source: dict[str, int] = {}
        self._queue: dict[Ticket, None] = {}  # pending tickets, oldest first
        self.refused: dict[Refusal, int] = {r: 0 for r in Refusal}
        self.last_refusal: Refusal | None = None

    def begin(self, source: str, now: float = 0.0) -> Ticket | Refusal:
        """A connection from ``source`` arrived: a ticket, or why it must be closed now."""
        refusal: Refusal | None = None
        held = self.by_source.get(source, 0)
        if held >= self.limits.max_pending_per_source:
            refusal = Refusal.SOURCE_FULL
        elif self.pending >= self.limits.max_pending and not self._evict_for(held, now):
            refusal = Refusal.PENDING_FULL
        if refusal is not None:
            self._refuse(refusal)
            return refusal
        self.pending += 1
        self.by_source[source] = held + 1
        ticket = Ticket(self, source, now)
        self._queue[ticket] = None
        return ticket

    def _evict_for(self, held: int, now: float) -> bool:
        """Free a slot for a newcomer whose source holds ``held``: evict the oldest evictable
        ticket of the busiest source, if that source holds more. O(max_pending)."""
        victim: Ticket | None = None
        most = held
        old_enough = now - self.limits.evict_after
        for t in self._queue:  # oldest first: the first ticket of a busier source wins
            if t.started > old_enough:
                break  # the rest are younger still
            n = self.by_source[t.source]
            if n > most and t.evictable:
                victim, most = t, n
        if victim is None:
            return False
        self._refuse(Refusal.EVICTED)
        hook, victim.on_evict = victim.on_evict, None
        victim.opened()  # its slot is free now, whatever the adapter does next
        if hook is not None:
            hook()
        return True

    def _admit_link(self, node_id: NodeId) -> Refusal | None:
        if self._pinned(node_id):
            return None
        if not self.limits.accept_unknown:
            return Refusal.UNKNOWN_KEY
        if self.links >= self.limits.max_links:
            return Refusal.LINKS_FULL
        return None

    def _refuse(self, refusal: Refusal) -> None:
        self.refused[refusal] += 1
        self.last_refusal = refusal

    def _release_pending(self, ticket: Ticket) -> None:
        self.pending -= 1
        self._queue.pop(ticket, None)
        left = self.by_source.get(ticket.source, 0) - 1
        if left > 0:
            self.by_source[ticket.source] = left
        else:
            self.by_source.pop(ticket.source, None)  # no entry survives its last connection

    def stats(self) -> dict[str, object]:
        """Live counts and refusal totals, for status output."""
        return {"pending": self.pending, "links": self.links,
                "sources": len(self.by_source),
                "refused": {r.value: n for r, n in self.refused.items()}}
