"""JSON form of channel snapshots and messages (for the store, backups and file transports).

Bytes become ``{"$b": hex}`` so that a snapshot round-trips exactly; nothing else is special.
"""
from __future__ import annotations

import json
from typing import Any


def _enc(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray)):
        return {"$b": bytes(x).hex()}
    if isinstance(x, dict):
        return {k: _enc(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_enc(v) for v in x]
    return x


def _dec(x: Any) -> Any:
    if isinstance(x, dict):
        if len(x) == 1 and "$b" in x:
            return bytes.fromhex(x["$b"])
        return {k: _dec(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_dec(v) for v in x]
    return x


def dumps(obj: Any) -> str:
    return json.dumps(_enc(obj), separators=(",", ":"), sort_keys=True)


def loads(text: str) -> Any:
    return _dec(json.loads(text))
