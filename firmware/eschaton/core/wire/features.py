"""Feature bitfields (``init.features``), as in Lightning's BOLT #9.

Bit ``n`` is bit ``n % 8`` of byte ``len - 1 - n // 8``: big-endian, bit 0 is the lowest bit of
the last byte. Encoding is minimal (no leading zero bytes); decoding accepts any bitfield up to
``MAX_FEATURE_BYTES`` (the field's limit in the table), leading zeros included, so a peer that
pads is not cut off. Unknown bits are kept: the router asks only about bits it knows.
"""
from __future__ import annotations

from collections.abc import Iterable

from eschaton.core.wire.errors import EncodeError
from eschaton.core.wire.messages import MAX_FEATURE_BYTES


def encode_features(bits: Iterable[int]) -> bytes:
    """The bitfield with exactly ``bits`` set (raises ``EncodeError`` for a bit out of range)."""
    value = 0
    for bit in bits:
        if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit < 8 * MAX_FEATURE_BYTES:
            raise EncodeError(f"feature bit {bit!r} is outside 0..{8 * MAX_FEATURE_BYTES - 1}")
        value |= 1 << bit
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def decode_features(raw: bytes) -> frozenset[int]:
    """The set bits of a bitfield (its length was bounded by the codec)."""
    value = int.from_bytes(raw, "big")
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)
