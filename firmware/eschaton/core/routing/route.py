"""The payer's side: amounts and timeouts along a path, and the onion that carries them.

Rules / theory of operation:
- A path is a list of ``Edge``s from the payer to the payee. Edge ``k`` is a channel from node
  ``u_k`` to node ``v_k``, with that channel's current nLockTime upper bound ``locktime`` and its
  ``escrow_delta``, and ``u_k``'s fee policy for forwarding over it.
- Amounts are computed from the payee back: the payee gets exactly ``amount``; the escrow on
  edge ``k`` is the one on edge ``k+1`` plus the fee ``v_k`` (= ``u_{k+1}``) asks for forwarding
  it (``FeePolicy.fee`` at the payer's height).
- Timeouts, from the payee back, are chosen from each channel's own nLockTime (the on-chain
  rule): the escrow on edge ``k`` times out at
  ``max(t_{k+1} + delta(u_{k+1}), locktime_k + max(escrow_delta_k, room))`` and the payee's at
  ``max(height + final_delta, locktime_last + max(escrow_delta_last, room))``. So every hop can
  get the version holding its incoming escrow confirmed and claim it before the payer upstream
  may reclaim, and each hop keeps its own delta between what it receives and what it offers.
- Each channel caps its escrows' timeouts at its ``lifetime + escrow_delta`` (the channel core's
  rule): a path whose timeouts, accumulated from the payee back, overflow an upstream channel's
  cap is refused with ``RouteError`` naming that channel, and the path finder searches again
  without it. In practice an upstream channel must have been opened at least the downstream
  deltas later (or its versions' nLockTimes must have moved down further) than the channels
  after it.
- The worst-case lock-up of the payer's own funds is ``t_0 - height`` blocks (``Route.lockup``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eschaton.core.link.identity import NodeId
from eschaton.core.routing import onion as O
from eschaton.core.routing.policy import FeePolicy, Margins


@dataclass(frozen=True, slots=True)
class Edge:
    channel: bytes
    source: bytes
    target: bytes
    policy: FeePolicy
    """The source's policy for forwarding over this channel (unused on the payer's first edge)."""
    locktime: int
    escrow_delta: int
    capacity: int = 0
    lifetime: int = 0
    """The channel's initial nLockTime: the channel core refuses an escrow timeout above
    ``lifetime + escrow_delta`` (0: not known, no bound)."""

    @property
    def max_timeout(self) -> int | None:
        return self.lifetime + self.escrow_delta if self.lifetime else None


class RouteError(ValueError):
    """A path on which no timeouts satisfy every channel (``edge`` is the one that overflows)."""

    def __init__(self, msg: str, edge: Edge) -> None:
        super().__init__(msg)
        self.edge = edge


@dataclass(frozen=True, slots=True)
class Route:
    edges: tuple[Edge, ...]
    amounts: tuple[int, ...]
    """The escrow amount on each edge."""
    timeouts: tuple[int, ...]
    """The escrow timeout on each edge."""
    height: int

    @property
    def fees(self) -> tuple[int, ...]:
        """What each intermediate node keeps (node ``v_k`` for ``k < n-1``)."""
        return tuple(self.amounts[k] - self.amounts[k + 1] for k in range(len(self.edges) - 1))

    @property
    def total(self) -> int:
        return self.amounts[0]

    @property
    def lockup(self) -> int:
        return self.timeouts[0] - self.height

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(e.target for e in self.edges)


def build_route(edges: Sequence[Edge], amount: int, height: int, final_delta: int,
                margins: Margins | None = None) -> Route:
    if not 1 <= len(edges) <= O.MAX_HOPS:
        raise ValueError(f"a route has 1..{O.MAX_HOPS} edges")
    for a, b in zip(edges, edges[1:], strict=False):
        if a.target != b.source:
            raise ValueError("edges do not form a path")
    room = (margins or Margins()).upstream_room()
    n = len(edges)
    amounts = [0] * n
    timeouts = [0] * n
    last = edges[-1]
    amounts[-1] = amount
    timeouts[-1] = max(height + final_delta, last.locktime + max(last.escrow_delta, room))
    for k in range(n - 2, -1, -1):
        nxt = edges[k + 1]
        amounts[k] = amounts[k + 1] + nxt.policy.fee(amounts[k + 1], timeouts[k + 1] - height)
        timeouts[k] = max(timeouts[k + 1] + nxt.policy.delta,
                          edges[k].locktime + max(edges[k].escrow_delta, room))
    for e, t in zip(edges, timeouts, strict=True):
        if e.max_timeout is not None and t > e.max_timeout:
            raise RouteError(f"escrow timeout {t} beyond channel {e.channel.hex()[:12]}'s lifetime "
                             f"{e.lifetime} + escrow_delta {e.escrow_delta}", e)
    return Route(tuple(edges), tuple(amounts), tuple(timeouts), height)


def route_onion(route: Route, session: bytes, payment_hash: bytes, secret: bytes) -> bytes:
    """The onion for the first hop. ``secret``: the request's payment secret, the preimage (a
    payment to a node id) or 32 zero bytes (payer-held)."""
    hops: list[tuple[bytes, O.HopPayload]] = []
    n = len(route.edges)
    for k, e in enumerate(route.edges):
        key = NodeId(e.target).x25519()
        if k < n - 1:
            p = O.HopPayload(False, route.edges[k + 1].target, route.amounts[k + 1], route.timeouts[k + 1])
        else:
            p = O.HopPayload(True, secret, route.amounts[k], route.timeouts[k])
        hops.append((key, p))
    return O.build(session, hops, payment_hash)


def route_secrets(route: Route, session: bytes) -> list[bytes]:
    """The payer's shared secret with each hop, to read a failure that comes back."""
    return O.failure_secrets(session, [NodeId(e.target).x25519() for e in route.edges])
