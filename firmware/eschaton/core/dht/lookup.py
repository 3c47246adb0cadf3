"""The iterative lookup as a state machine: actions out, responses and timeouts in.

Rules / theory of operation (Kademlia's node and value lookups):
- The lookup keeps a shortlist of candidates ordered by XOR distance to the target, seeded with
  the asker's own closest contacts (hop 1). ``actions()`` returns the queries to send now: up to
  ``alpha`` in flight, always to the closest candidates not yet asked among the ``k`` closest
  that have not failed. Contacts learned from a response at hop h are at hop h + 1.
- ``on_response`` feeds back the contacts a node returned (and, for a value lookup, whether it
  returned verified records: the caller verifies before saying so). ``on_timeout`` marks the
  node failed; the next closest candidate takes its place, which is how churn is absorbed.
- It ends when a value lookup got a value, or when each of the ``k`` closest live candidates
  has answered (nothing closer is left to ask), or when nothing is in flight and nobody is left.
- ``hops`` is the hop number of the answer that ended it (the value's holder, or the deepest
  of the k closest): the number of sequential round trips a recursive route would have needed.
- Nothing here sends or waits: the driver (the service, or the simulator) does, and it owns the
  timeouts (a deadline per query, fed back with ``on_timeout``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from eschaton.core.dht.routing import Contact

MAX_REPLY = 32
"""Most contacts taken from one response."""


class State(enum.Enum):
    NEW = "new"
    ASKED = "asked"
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass(slots=True)
class _Cand:
    contact: Contact
    hop: int
    state: State = State.NEW


@dataclass(frozen=True, slots=True)
class Query:
    """Action: send a find query for ``target`` to ``to``."""

    to: Contact
    target: bytes
    want_value: bool


class Lookup:
    """One lookup of ``target``; ``want_value`` for a find-value, else a find-node."""

    def __init__(self, target: bytes, seeds: list[Contact], *, k: int = 20, alpha: int = 3,
                 want_value: bool = False, own: bytes | None = None,
                 max_queries: int = 200) -> None:
        self.target = target
        self._t = int.from_bytes(target, "big")
        self.k = k
        self.alpha = alpha
        self.want_value = want_value
        self.own = own
        self.max_queries = max_queries
        self._cands: dict[bytes, _Cand] = {}
        self.in_flight = 0
        self.queries = 0
        self.found: Contact | None = None
        self.hops = 0
        self._done = False
        for c in seeds:
            self._add(c, 1)

    def _add(self, c: Contact, hop: int) -> None:
        if c.id == self.own or c.id in self._cands:
            return
        self._cands[c.id] = _Cand(c, hop)

    def _ranked(self) -> list[_Cand]:
        live = [x for x in self._cands.values() if x.state is not State.FAILED]
        live.sort(key=lambda x: x.contact.num ^ self._t)
        return live[: self.k]

    @property
    def done(self) -> bool:
        return self._done

    def actions(self) -> list[Query]:
        """Queries to send now (possibly none: wait for responses or timeouts)."""
        if self._done:
            return []
        out: list[Query] = []
        top = self._ranked()
        for x in top:
            if self.in_flight >= self.alpha or self.queries >= self.max_queries:
                break
            if x.state is State.NEW:
                x.state = State.ASKED
                self.in_flight += 1
                self.queries += 1
                out.append(Query(x.contact, self.target, self.want_value))
        if not out and self.in_flight == 0:
            self._finish(top)
        return out

    def _finish(self, top: list[_Cand]) -> None:
        self._done = True
        answered = [x.hop for x in top if x.state is State.ANSWERED]
        if self.found is None and answered:
            self.hops = max(answered)

    def _pending(self, c: Contact) -> _Cand | None:
        x = self._cands.get(c.id)
        if x is None or x.state is not State.ASKED:
            return None  # unsolicited or late: ignore
        return x

    def on_response(self, frm: Contact, contacts: list[Contact], has_value: bool = False) -> None:
        """``frm`` answered with ``contacts`` (and a verified value if ``has_value``)."""
        x = self._pending(frm)
        if x is None or self._done:
            return
        x.state = State.ANSWERED
        self.in_flight -= 1
        if has_value and self.want_value:
            self.found = frm
            self.hops = x.hop
            self._done = True
            return
        for c in contacts[:MAX_REPLY]:  # a peer cannot flood the shortlist
            self._add(c, x.hop + 1)

    def on_timeout(self, frm: Contact) -> None:
        """``frm`` did not answer in time (or answered garbage)."""
        x = self._pending(frm)
        if x is None:
            return
        x.state = State.FAILED
        self.in_flight -= 1

    def closest(self) -> list[Contact]:
        """The k closest nodes that answered: where a record for ``target`` belongs."""
        return [x.contact for x in self._ranked() if x.state is State.ANSWERED]
