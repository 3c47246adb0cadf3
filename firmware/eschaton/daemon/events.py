"""The node's one event stream: what happened, numbered, for the API (``events.since``).

Rules / theory of operation:
- Every event gets the next sequence number of the node (1, 2, ...) and a wall-clock
  ``at_ms``; a reader asks for what came after the last number it saw and never misses or
  repeats one while it keeps up.
- Memory is bounded: each source (``net``, ``channel``, ``payments``, ``microgrid``) keeps its
  latest ``per_source`` events in its own ring, so a busy source (a payment per second for
  months) cannot push the others' rare events (a refusal, a cut) out. A reader that fell behind
  is told so (``lost``): events it asked for were dropped, and it should re-read the state.
- Nothing here is durable: the stream is a view for people and dashboards. What money and
  supply depend on is in the stores and ledgers; sequence numbers restart at 1 with the node.
- Typed events (frozen dataclasses such as the payments facade's) are emitted with their class
  name as kind and their fields as data (bytes as hex).
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PER_SOURCE = 500
MAX_READ = 1000


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    at_ms: int
    source: str
    kind: str
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at_ms": self.at_ms, "source": self.source, "kind": self.kind,
                **{k: _plain(v) for k, v in self.data.items() if k not in ("seq", "at_ms", "source", "kind")}}


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def fields_of(ev: Any) -> dict[str, Any]:
    """A typed (dataclass) event's fields."""
    return {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}


class EventStream:
    def __init__(self, per_source: int = PER_SOURCE, clock: Callable[[], float] = time.time) -> None:
        self._per_source = per_source
        self._clock = clock
        self._rings: dict[str, deque[Event]] = {}
        self._dropped: dict[str, int] = {}  # source -> highest seq it dropped
        self.seq = 0
        self._listeners: list[Callable[[Event], None]] = []

    def emit(self, source: str, kind: str, data: Mapping[str, Any] | None = None) -> Event:
        self.seq += 1
        ev = Event(self.seq, int(self._clock() * 1000), source, kind, dict(data or {}))
        ring = self._rings.setdefault(source, deque())
        if len(ring) >= self._per_source:
            self._dropped[source] = ring.popleft().seq
        ring.append(ev)
        for fn in list(self._listeners):
            fn(ev)
        return ev

    def emit_typed(self, source: str, ev: Any) -> Event:
        return self.emit(source, type(ev).__name__, fields_of(ev))

    def subscribe(self, fn: Callable[[Event], None]) -> None:
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def latest(self, source: str, kinds: frozenset[str] | None = None, n: int = 20) -> list[Event]:
        """The newest ``n`` events of ``source`` (of ``kinds``, when given), oldest first."""
        out = [e for e in self._rings.get(source, ()) if kinds is None or e.kind in kinds]
        return out[-n:] if n > 0 else []

    def since(self, seq: int, limit: int = 200, source: str | None = None) -> dict[str, Any]:
        """Events after ``seq`` (at most ``limit``, oldest first), the number to ask from next,
        and whether any asked-for event was already dropped."""
        limit = max(1, min(limit, MAX_READ))
        rings = [self._rings.get(source, deque())] if source is not None else list(self._rings.values())
        picked = sorted((e for r in rings for e in r if e.seq > seq), key=lambda e: e.seq)[:limit]
        drops = [self._dropped.get(source, 0)] if source is not None else list(self._dropped.values())
        lost = any(d > seq for d in drops)
        # A number above the head is from before a restart (numbers start again at 1).
        nxt = picked[-1].seq if picked else min(max(seq, 0), self.seq)
        return {"events": [e.to_json() for e in picked], "next": nxt, "lost": lost, "head": self.seq}
