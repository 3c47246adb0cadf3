"""Admission of inbound links: how many strangers a node holds at once.

Rules / theory of operation:
- Every inbound connection asks for a *pending* slot before any link state (Noise keys, buffers,
  tasks) exists for it. Pending slots are capped in total and per source address (the IP for
  TCP), so one host cannot take every slot. A refused connection is closed at once.
- A pending connection holds its slot until its link opens or closes; the link's handshake
  deadline closes idle or slow ones, so a slot is never held longer than that.
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


class Ticket:
    """One admitted inbound connection. Idempotent: each slot is given back exactly once."""

    __slots__ = ("_admission", "source", "_pending", "_link")

    def __init__(self, admission: Admission, source: str) -> None:
        self._admission = admission
        self.source = source
        self._pending = True
        self._link = False

    def authorize(self, node_id: NodeId) -> bool:
        """The peer at message 3: may it link? (Takes an established slot if it may.)"""
        refusal = self._admission._admit_link(node_id)
        if refusal is not None:
            self._admission._refuse(refusal)
            return False
        if not self._admission._pinned(node_id):
            self._link = True
            self._admission.links += 1
        return True

    def opened(self) -> None:
        """The link opened: the pending slot is free again."""
        if self._pending:
            self._pending = False
            self._admission._release_pending(self.source)

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
        self.refused: dict[Refusal, int] = {r: 0 for r in Refusal}
        self.last_refusal: Refusal | None = None

    def begin(self, source: str) -> Ticket | Refusal:
        """A connection from ``source`` arrived: a ticket, or why it must be closed now."""
        refusal: Refusal | None = None
        if self.pending >= self.limits.max_pending:
            refusal = Refusal.PENDING_FULL
        elif self.by_source.get(source, 0) >= self.limits.max_pending_per_source:
            refusal = Refusal.SOURCE_FULL
        if refusal is not None:
            self._refuse(refusal)
            return refusal
        self.pending += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1
        return Ticket(self, source)

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

    def _release_pending(self, source: str) -> None:
        self.pending -= 1
        left = self.by_source.get(source, 0) - 1
        if left > 0:
            self.by_source[source] = left
        else:
            self.by_source.pop(source, None)  # no entry survives its last connection

    def stats(self) -> dict[str, object]:
        """Live counts and refusal totals, for status output."""
        return {"pending": self.pending, "links": self.links,
                "sources": len(self.by_source),
                "refused": {r.value: n for r, n in self.refused.items()}}
