"""Deterministic keys and an in-memory pump for two sans-IO links."""
from __future__ import annotations

import hashlib

from eschaton.core.link.identity import NodeKeys
from eschaton.core.link.link import Event, Link, LinkConfig, Role


def det_random(label: str):
    """A deterministic byte source (tests must be reproducible)."""
    counter = [0]

    def random_bytes(n: int) -> bytes:
        counter[0] += 1
        return hashlib.sha256(f"{label}/{counter[0]}".encode()).digest()[:n]

    return random_bytes


def keys(label: str) -> NodeKeys:
    return NodeKeys.generate(det_random(label))


def eph(label: str) -> bytes:
    return hashlib.sha256(b"eph/" + label.encode()).digest()


DEFAULT = LinkConfig()


def pair(a: NodeKeys, b: NodeKeys, *, cfg_a: LinkConfig = DEFAULT,
         cfg_b: LinkConfig = DEFAULT, expect_a: bool = False, now: float = 0.0):
    """Initiator ``a`` dials responder ``b``; both started."""
    la = Link(a, Role.INITIATOR, now=now, ephemeral=eph("a"), remote=b.node_id, config=cfg_a)
    lb = Link(b, Role.RESPONDER, now=now, ephemeral=eph("b"),
              remote=a.node_id if expect_a else None, config=cfg_b)
    la.start()
    lb.start()
    return la, lb


def pump(la: Link, lb: Link, now: float = 1.0) -> tuple[list[Event], list[Event]]:
    """Deliver queued frames both ways until quiet; returns events seen by a and by b."""
    ev_a: list[Event] = []
    ev_b: list[Event] = []
    for _ in range(50):
        moved = False
        for f in la.data_to_send():
            moved = True
            ev_b += lb.receive_frame(f, now)
        for f in lb.data_to_send():
            moved = True
            ev_a += la.receive_frame(f, now)
        if not moved:
            break
    return ev_a, ev_b
