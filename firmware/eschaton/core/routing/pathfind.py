"""The path finder: Dijkstra on fee, timeout and failure history, searched from the payee back.

Rules / theory of operation:
- Amounts grow from the payee to the payer (each hop adds its fee), so the search runs
  backwards from the payee: at each node it knows exactly what must arrive there, and an edge
  into it is weighed with the amount it would carry.
- The weight of edge ``u -> v`` carrying ``a`` (``v`` forwards, charging its fee unless it is the
  payee) is ``fee + a x delta x LOCK_PPM / 10^6 + penalty``: the fee, the cost of the time the
  payer's money may stay locked (each hop's delta adds to every earlier hop's timeout), and a
  penalty from the failure history. An edge whose capacity is below ``a`` is skipped, and so is
  any edge or node in ``exclude``. Routes longer than ``MAX_HOPS`` are not considered.
- ``History``: a failure at a channel (in one direction) or at a node adds a penalty that halves
  every ``HALF_LIFE`` blocks; a success clears the channel's. Failure reasons map to what they
  blame (``blame``): ``no_route`` and ``insufficient_balance`` reported by hop ``i`` blame its
  outgoing channel; ``fee_too_low`` / ``timeout_too_low`` blame that hop's policy (its outgoing
  channel); ``bad_onion`` or an unreadable failure blame the next node; ``unknown_payee`` and an
  expired request are final (no retry helps).
- ``retry`` is the payer's loop in one call: given the failures so far, the next route (or None).
  Time (height) is an input; nothing here sleeps.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from eschaton.core.routing import onion as O
from eschaton.core.routing.forward import Reason
from eschaton.core.routing.policy import Margins
from eschaton.core.routing.route import Edge, Route, RouteError, build_route

LOCK_PPM = 1
"""Millionths of the amount per block of timeout: what a block of lock-up is worth to the payer."""
FAIL_PENALTY = 10_000
"""Satoshis a fresh failure adds to an edge's weight (then halves every HALF_LIFE blocks)."""
HALF_LIFE = 6
FINAL = frozenset({Reason.UNKNOWN_PAYEE, Reason.EXPIRED})


@dataclass
class History:
    channel_fail: dict[tuple[bytes, bytes], int] = field(default_factory=dict)
    """(channel, forwarding node) -> height of its last failure."""
    node_fail: dict[bytes, int] = field(default_factory=dict)

    def fail_channel(self, channel: bytes, source: bytes, height: int) -> None:
        self.channel_fail[(channel, source)] = height

    def fail_node(self, node: bytes, height: int) -> None:
        self.node_fail[node] = height

    def success(self, channel: bytes, source: bytes) -> None:
        self.channel_fail.pop((channel, source), None)

    def penalty(self, edge: Edge, height: int) -> int:
        out = 0
        for when in (self.channel_fail.get((edge.channel, edge.source)), self.node_fail.get(edge.target)):
            if when is not None:
                out += FAIL_PENALTY >> min(60, max(0, height - when) // HALF_LIFE)
        return out

    def blame(self, route: Route, failure: tuple[int, int] | None, code: str, height: int) -> bool:
        """Record a failed attempt; False if the failure is final (no route can help)."""
        nodes = route.nodes
        if failure is None:
            # Unattributed (bad onion, a garbled blob): the hop after the last one that could
            # answer is unknown; blame the first hop's successor, the only node we know got it.
            if code in {r.code for r in FINAL}:
                return False
            self.fail_node(nodes[0] if len(nodes) == 1 else nodes[1], height)
            return True
        i, value = failure
        try:
            reason = Reason(value)
        except ValueError:
            reason = Reason.BAD_ONION
        if reason in FINAL and i == len(nodes) - 1:
            return False
        if i + 1 < len(route.edges):
            e = route.edges[i + 1]
            self.fail_channel(e.channel, e.source, height)
        else:
            self.fail_node(nodes[i], height)
        return True


def _weight(e: Edge, carried: int, height: int, hist: History) -> int:
    """What carrying ``carried`` over ``e`` costs beyond the fee: lock-up time and past failures."""
    return carried * LOCK_PPM * e.policy.delta // 1_000_000 + hist.penalty(e, height)


def find_path(edges: Iterable[Edge], source: bytes, target: bytes, amount: int, height: int,
              history: History | None = None, exclude: Iterable[bytes] = (),
              local: Sequence[Edge] = ()) -> list[Edge] | None:
    """The cheapest path ``source -> target`` for ``amount``, or None.

    ``local``: our own channels as we know them now (their real spendable room as capacity),
    used instead of their announcements."""
    hist = history or History()
    banned = set(exclude)
    into: dict[bytes, list[Edge]] = {}
    local_ids = {e.channel for e in local}
    for e in itertools.chain(local, (e for e in edges if not (e.source == source and e.channel in local_ids))):
        if e.channel in banned or e.source in banned or e.target in banned:
            continue
        into.setdefault(e.target, []).append(e)
    # state: node -> (cost, amount that must arrive at node, hops, next edge toward target)
    best: dict[bytes, tuple[int, int]] = {target: (0, amount)}
    nxt: dict[bytes, Edge] = {}
    hops: dict[bytes, int] = {target: 0}
    tie = itertools.count()
    heap = [(0, next(tie), target, amount)]
    done: set[bytes] = set()
    while heap:
        cost, _, node, arrive = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        if node == source:
            break
        if hops[node] >= O.MAX_HOPS:
            continue
        for e in into.get(node, ()):
            u = e.source
            if u in done:
                continue
            # u offers the escrow over e; node (v) forwards it over nxt[node] for its fee. The
            # reservation term is estimated from the deltas still ahead; ``build_route`` then
            # computes the exact amounts from the chosen path's timeouts.
            fee = 0 if node == target else nxt[node].policy.fee(arrive, nxt[node].policy.delta * hops[node])
            carried = arrive + fee
            if e.capacity < carried:
                continue
            c = cost + fee + _weight(e, carried, height, hist)
            if u not in best or c < best[u][0]:
                best[u] = (c, carried)
                nxt[u] = e
                hops[u] = hops[node] + 1
                heapq.heappush(heap, (c, next(tie), u, carried))
    if source not in nxt:
        return None
    path: list[Edge] = []
    node = source
    while node != target:
        e = nxt[node]
        path.append(e)
        node = e.target
    return path


def find_route(edges: Iterable[Edge], source: bytes, target: bytes, amount: int, height: int,
               final_delta: int, history: History | None = None, exclude: Iterable[bytes] = (),
               local: Sequence[Edge] = (), margins: Margins | None = None) -> Route | None:
    edges = list(edges)
    banned = list(exclude)
    for _ in range(O.MAX_HOPS):
        path = find_path(edges, source, target, amount, height, history, banned, local)
        if not path:
            return None
        try:
            return build_route(path, amount, height, final_delta, margins)
        except RouteError as err:  # a channel whose lifetime cannot hold the timeouts: go around it
            banned.append(err.edge.channel)
    return None


def retry(edges: Iterable[Edge], source: bytes, target: bytes, amount: int, height: int, final_delta: int,
          history: History, failed: Route, failure: tuple[int, int] | None, code: str,
          local: Sequence[Edge] = (), margins: Margins | None = None) -> Route | None:
    """After ``failed`` came back with ``failure`` (what the payer read) and ``code``: blame
    what failed and find the next route around it, or None (final failure, or no route left)."""
    if not history.blame(failed, failure, code, height):
        return None
    route = find_route(edges, source, target, amount, height, final_delta, history, (), local, margins)
    if route is not None and route.edges == failed.edges:
        return None  # the penalty did not move us: the same path would fail the same way
    return route
