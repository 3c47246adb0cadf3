"""Sans-IO wire layer: canonical bencode, the message table, message codec and frame codecs."""
from __future__ import annotations

from eschaton.core.wire.codec import (
    MAX_MESSAGE_SIZE,
    Message,
    decode_message,
    encode_message,
    make,
)
from eschaton.core.wire.errors import (
    BencodeError,
    CrcError,
    EncodeError,
    FieldError,
    FrameError,
    UnknownMessage,
    WireError,
)
from eschaton.core.wire.messages import BY_ID, BY_NAME, MESSAGES, SERVICES

__all__ = [
    "BY_ID", "BY_NAME", "MAX_MESSAGE_SIZE", "MESSAGES", "SERVICES", "BencodeError", "CrcError",
    "EncodeError", "FieldError", "FrameError", "Message", "UnknownMessage", "WireError",
    "decode_message", "encode_message", "make",
]
