"""Which received ARP frames say a candidate address is taken (RFC 5227, 2.1.1)."""
from __future__ import annotations

import ipaddress
import struct

from eschaton.field.arp import _probe_frame, conflicts

OURS, THEIRS = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
CAND, OTHER = ipaddress.IPv4Address("10.99.1.2"), ipaddress.IPv4Address("10.99.1.3")


def arp(op: int, sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    return (b"\xff" * 6 + sha + struct.pack("!H", 0x0806)
            + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, bytes(6), tpa))


def test_the_owner_answering_or_announcing_means_taken() -> None:
    assert conflicts(arp(2, THEIRS, CAND.packed, bytes(4)), OURS, CAND)
    assert conflicts(arp(1, THEIRS, CAND.packed, OTHER.packed), OURS, CAND)


def test_another_node_probing_for_the_same_address_means_taken() -> None:
    assert conflicts(arp(1, THEIRS, bytes(4), CAND.packed), OURS, CAND)
    assert not conflicts(arp(1, THEIRS, bytes(4), OTHER.packed), OURS, CAND)


def test_our_own_probe_and_unrelated_traffic_do_not_count() -> None:
    assert not conflicts(_probe_frame(OURS, CAND), OURS, CAND)
    assert not conflicts(arp(2, THEIRS, OTHER.packed, CAND.packed), OURS, CAND)
    assert not conflicts(b"\x00" * 20, OURS, CAND)
    ipv4 = arp(2, THEIRS, CAND.packed, bytes(4))
    assert not conflicts(ipv4[:12] + b"\x08\x00" + ipv4[14:], OURS, CAND)
