"""JSON form of channel snapshots and messages (for the store, backups and file transports).

Bytes become ``{"$b": hex}`` so that a snapshot round-trips exactly; nothing else is special.
The C encoder does the walking (``default`` is only called for bytes), which matters: a snapshot
is encoded on every update.
"""
from __future__ import annotations

import json
from typing import Any


def _default(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray)):
        return {"$b": bytes(x).hex()}
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"cannot encode {type(x).__name__}")


def _hook(d: dict[str, Any]) -> Any:
    if len(d) == 1 and "$b" in d:
        return bytes.fromhex(d["$b"])
    return d


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=_default)  # canonical (chanwire relies on it)
_DECODER = json.JSONDecoder(object_hook=_hook)


def dumps(obj: Any) -> str:
    return _ENCODER.encode(obj)


def loads(text: str) -> Any:
    return _DECODER.decode(text)
