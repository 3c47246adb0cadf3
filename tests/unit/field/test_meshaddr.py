"""The mesh address from the node id: deterministic, inside the prefix, never the network or
broadcast address, and the next candidate on a collision."""
from __future__ import annotations

import ipaddress

from eschaton.field.mesh import choose
from eschaton.field.meshaddr import candidates, hostname_for

P16 = ipaddress.IPv4Network("10.99.0.0/16")


def test_candidates_are_deterministic_and_inside_the_prefix() -> None:
    a, b = bytes(32), bytes([1]) + bytes(31)
    first = [c for c, _ in zip(candidates(a, P16), range(8), strict=False)]
    assert first == [c for c, _ in zip(candidates(a, P16), range(8), strict=False)]
    assert len(set(first)) == 8
    assert all(c in P16 and c not in (P16.network_address, P16.broadcast_address) for c in first)
    assert next(candidates(b, P16)) != first[0]


def test_a_small_prefix_yields_every_host_once() -> None:
    p = ipaddress.IPv4Network("10.0.0.0/29")
    got = list(candidates(bytes(32), p))
    assert sorted(got) == list(p.hosts())


def test_choose_skips_taken_addresses_in_order() -> None:
    cands = list(zip(candidates(bytes(32), P16), range(5), strict=False))
    order = [c for c, _ in cands]
    taken = set(order[:2])
    addr, collisions = choose(iter(order), lambda a: a in taken)
    assert addr == order[2] and collisions == [str(order[0]), str(order[1])]
    addr, collisions = choose(iter(order), lambda a: True, limit=3)
    assert addr is None and len(collisions) == 3


def test_hostname() -> None:
    assert hostname_for("3fa2c1d0" + "0" * 56) == "eschaton-3fa2c1d0"
