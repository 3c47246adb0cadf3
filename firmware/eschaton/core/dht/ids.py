"""DHT ids bound to node keys, and the XOR metric.

Rules / theory of operation:
- A node's place in the keyspace is ``dht_id = sha256(DOMAIN || node public key)``: a node
  cannot pick its id without picking a key, and a key it does not hold cannot sign the node's
  link handshake, so the id is checked for free whenever a contact is learned over a link.
- Grinding keys to land next to a chosen target is still possible (one hash per try), so an id
  must also meet a static puzzle (S/Kademlia): ``sha256(dht_id)`` starts with ``difficulty``
  zero bits. Each extra bit doubles a grinder's work while an honest node pays it once, at key
  creation. The difficulty is a network parameter; 0 turns the puzzle off (the simulator).
- Keys of records live in the same 256-bit space; the distance is the XOR of the two ids read as
  big-endian integers, so "closest" is total and symmetric.
"""
from __future__ import annotations

import hashlib

ID_BITS = 256
ID_LEN = 32
DOMAIN = b"eschaton-dht-id-v1"


def dht_id(public_key: bytes) -> bytes:
    """The DHT id of the node whose ed25519 public key is ``public_key``."""
    return hashlib.sha256(DOMAIN + public_key).digest()


def leading_zero_bits(b: bytes) -> int:
    n = int.from_bytes(b, "big")
    return len(b) * 8 - n.bit_length()


def meets_puzzle(node_dht_id: bytes, difficulty: int) -> bool:
    """True if ``sha256(dht_id)`` starts with ``difficulty`` zero bits."""
    if difficulty <= 0:
        return True
    return leading_zero_bits(hashlib.sha256(node_dht_id).digest()) >= difficulty


def distance(a: bytes, b: bytes) -> int:
    """The XOR distance of two ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own: bytes, other: bytes) -> int:
    """Index of the k-bucket ``other`` falls in, seen from ``own``: 255 for the far half, 0 for
    the nearest neighbour; -1 for ``own`` itself."""
    return distance(own, other).bit_length() - 1
