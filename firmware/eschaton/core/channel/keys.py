"""Per-channel keys derived from one node secret (so the store never holds private keys).

``derive_channel_key(secret, channel_id) = HMAC-SHA256(secret, tag || channel_id)``, reduced to a
valid secp256k1 scalar by rehashing in the (negligible) case it is not one.
"""
from __future__ import annotations

import hashlib
import hmac

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_TAG = b"eschaton/channel-key/v1"


def derive_channel_key(node_secret: bytes, channel_id: bytes) -> bytes:
    if len(node_secret) < 32:
        raise ValueError("node secret must be at least 32 bytes")
    k = hmac.new(node_secret, _TAG + channel_id, hashlib.sha256).digest()
    while not 0 < int.from_bytes(k, "big") < _N:
        k = hashlib.sha256(k).digest()
    return k
