"""Typed errors of the wire layer.

Every decoder in ``eschaton.core.wire`` raises only ``WireError`` (or a subclass) on bad input:
the bytes came from a peer, so the fault is remote. The link turns any ``WireError`` into a clean
disconnect; nothing else may escape a decoder (the fuzz tests check this).
"""
from __future__ import annotations

from eschaton.errors import LocalError, RemoteError


class WireError(RemoteError):
    """A peer sent bytes that do not decode to a valid frame or message."""


class BencodeError(WireError):
    """Malformed, non-canonical, too deep or too large bencode."""


class FrameError(WireError):
    """A frame is malformed: bad length prefix, bad COBS, bad CRC, too large."""


class CrcError(FrameError):
    """A serial frame's CRC-32 does not match: the line corrupted it."""


class UnknownMessage(WireError):
    """A message type id that is not in the table (a newer peer's message, or garbage).

    Kept apart from a malformed known message (``FieldError``, ``BencodeError``): an unknown
    *odd* id is ignored by the link, while a malformed message always closes it."""

    def __init__(self, type_id: int) -> None:
        super().__init__(f"unknown message type id {type_id}")
        self.type_id = type_id


class FieldError(WireError):
    """A message field is missing, unknown, of the wrong type or out of its limits."""


class EncodeError(LocalError):
    """We tried to encode something the table does not allow (our bug, not the peer's)."""
