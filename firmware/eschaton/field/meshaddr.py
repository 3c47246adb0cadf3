"""The mesh (bat0) address: derived from the node id inside ``[mesh] prefix``, without DHCP.

Candidate ``i`` is host number ``SHA-256("eschaton-mesh-address" || node id || i) mod H`` + 1
of the prefix (H host addresses: neither the network nor the broadcast address). The sequence is
the same at every boot, so a node keeps its address; when an ARP probe finds candidate ``i`` in
use (RFC 5227), the node takes candidate ``i + 1``, deterministically. A fixed ``[mesh] address``
is the only candidate: a collision on it is reported, not worked around.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator

_TAG = b"eschaton-mesh-address"


def candidates(node_id: bytes, prefix: ipaddress.IPv4Network) -> Iterator[ipaddress.IPv4Address]:
    """The node's candidate addresses in ``prefix``, in order (endless; repeats are skipped)."""
    hosts = prefix.num_addresses - 2
    if hosts < 1:
        raise ValueError(f"{prefix} has no host addresses")
    seen: set[int] = set()
    i = 0
    while True:
        digest = hashlib.sha256(_TAG + node_id + i.to_bytes(4, "big")).digest()
        n = int.from_bytes(digest[:8], "big") % hosts + 1
        i += 1
        if n in seen:
            if len(seen) == hosts:
                return
            continue
        seen.add(n)
        yield prefix.network_address + n


def hostname_for(node_id_hex: str) -> str:
    """The default hostname: ``eschaton-`` and the first 8 hex digits of the node id."""
    return f"eschaton-{node_id_hex[:8]}"
