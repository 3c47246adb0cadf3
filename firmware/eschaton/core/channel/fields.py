"""Strict readers for the fields of a version or an operation as a peer sent it or a store kept it.

A missing or mistyped field is a rule violation (``BalanceViolation``), never a ``KeyError`` or a
``TypeError``: the channel turns it into a clean refusal of the peer's message.
"""
from __future__ import annotations

from eschaton.core.channel.errors import BalanceViolation


def as_dict(x: object) -> dict[str, object]:
    if not isinstance(x, dict):
        raise BalanceViolation("malformed nested field")
    return x


def int_field(d: dict[str, object], k: str) -> int:
    v = d.get(k)
    if not isinstance(v, int) or isinstance(v, bool):
        raise BalanceViolation(f"field {k} missing or not an integer")
    return v


def bytes_field(d: dict[str, object], k: str, n: int) -> bytes:
    v = d.get(k)
    if not isinstance(v, (bytes, bytearray)) or len(v) != n:
        raise BalanceViolation(f"field {k} must be {n} bytes")
    return bytes(v)
