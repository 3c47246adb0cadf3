"""Channel messages on the wire: each channel message is one row of the wire table.

A row carries ``channel_id`` and ``body``: the channel core's canonical JSON form of the
message's other fields (sorted keys, bytes as ``{"$b": hex}``). The channel core owns those
fields and validates them (``from_fields`` raises ``ProtocolViolation``); the wire layer bounds
the body's size. Keeping the channel's nested structures (params, versions, contract
operations) in one bounded field means the channel protocol can evolve without touching the
link codec, while every byte on the link is still declared and limited.
"""
from __future__ import annotations

import json
from typing import Any

from eschaton.core.channel import messages as M
from eschaton.core.channel import snapshot_json
from eschaton.core.channel.errors import ProtocolViolation
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make

CHANNEL_MESSAGES: dict[str, type[M.Message]] = {
    cls.NAME: cls
    for cls in vars(M).values()
    if isinstance(cls, type) and issubclass(cls, M.Message) and cls is not M.Message
}


def to_wire(msg: M.Message) -> WireMessage:
    fields = msg.to_fields()
    cid = fields.pop("channel_id")
    return make(msg.NAME, channel_id=cid, body=snapshot_json.dumps(fields).encode())


def from_wire(wm: WireMessage) -> M.Message:
    cls = CHANNEL_MESSAGES.get(wm.name)
    if cls is None:
        raise ProtocolViolation(f"{wm.name} is not a channel message")
    try:
        fields: Any = snapshot_json.loads(wm.get_bytes("body").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as e:
        raise ProtocolViolation(f"{wm.name}: malformed body") from e
    if not isinstance(fields, dict):
        raise ProtocolViolation(f"{wm.name}: body must be an object")
    fields["channel_id"] = wm.get_bytes("channel_id")
    return cls.from_fields(fields)
