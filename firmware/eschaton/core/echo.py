"""The echo service's core: requests out, replies matched to them, requests answered.

Rules / theory of operation:
- The smallest complete service, and the pattern for new ones: this sans-IO core, an adapter
  that registers its rows with the router (``eschaton.daemon.echo``), and one registration line
  in the composition root. Its rows (``echo_request``, ``echo_reply``) have odd ids, so a peer
  that does not run it ignores them; callers are refused before sending anyway, because the peer
  did not announce the echo feature bit.
- ``request(peer, payload, now=, timeout=)`` hands back a fresh nonce for the request (a
  counter: nonces only need to be unique among our pending requests). ``on_reply`` matches a
  reply to a pending request by peer and nonce and checks the payload came back unchanged; a
  reply nobody waits for (late, repeated, from another peer, or altered) is counted and dropped.
- At most ``max_pending`` requests wait at once, and ``expire(now)`` forgets those past their
  deadline, so a peer that never answers cannot grow the table.
- A peer's request is answered with its own nonce and payload: nothing to decide or remember.
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.errors import LocalError

MAX_PAYLOAD = 1024  # the table's limit for echo payloads


class EchoError(LocalError):
    """A request we cannot make (payload too large, too many waiting)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    peer: bytes
    payload: bytes
    sent_at: float
    deadline: float


@dataclass(frozen=True, slots=True)
class Echoed:
    """A reply matched to our request: its nonce and the round-trip time."""

    nonce: int
    rtt: float


class Echoes:
    """Pending echo requests of one node (all peers)."""

    def __init__(self, *, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self._pending: dict[int, _Pending] = {}
        self._next = 1
        self.unmatched = 0
        """Replies dropped because no pending request matched them."""

    def request(self, peer: bytes, payload: bytes, *, now: float, timeout: float) -> int:
        """The nonce of a new ``echo_request`` to ``peer``."""
        if len(payload) > MAX_PAYLOAD:
            raise EchoError(f"echo payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        self.expire(now)
        if len(self._pending) >= self.max_pending:
            raise EchoError(f"{self.max_pending} echo requests are already waiting")
        nonce, self._next = self._next, self._next + 1
        self._pending[nonce] = _Pending(peer, payload, now, now + timeout)
        return nonce

    def on_reply(self, peer: bytes, nonce: int, payload: bytes, *, now: float) -> Echoed | None:
        """The matched request, or None (counted in ``unmatched``)."""
        p = self._pending.get(nonce)
        if p is None or p.peer != peer or p.payload != payload or now > p.deadline:
            self.unmatched += 1
            return None
        del self._pending[nonce]
        return Echoed(nonce, now - p.sent_at)

    def cancel(self, nonce: int) -> None:
        """Forget a request (its caller gave up)."""
        self._pending.pop(nonce, None)

    def expire(self, now: float) -> list[int]:
        """Forget requests past their deadline; returns their nonces."""
        gone = [n for n, p in self._pending.items() if now > p.deadline]
        for n in gone:
            del self._pending[n]
        return gone

    @property
    def pending(self) -> int:
        return len(self._pending)
