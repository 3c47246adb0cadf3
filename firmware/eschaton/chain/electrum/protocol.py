"""Wire forms shared by the Electrum server and client: script hashes, error codes, JSON shapes.

Electrum conventions: a script hash is sha256(script) in reversed byte order as hex; amounts in
``listunspent`` are satoshis; ``estimatefee`` answers in BTC/kB; mempool heights are 0.
Eschaton's extensions carry the backend's dataclasses as plain JSON objects.
"""
from __future__ import annotations

import hashlib
from typing import Any

from eschaton.chain.backend import (
    ChainEvent,
    NewTip,
    OutPoint,
    OutpointSpent,
    Reorg,
    ScriptActivity,
    Spend,
    Tip,
    TxStatus,
    Utxo,
)

# Blocks one mine call may ask for: a typo of a few more digits must not mine for hours.
MAX_BLOCKS_PER_CALL = 10_000

PROTOCOL_VERSION = "1.6"
SERVER_NAME = "Eschaton embedded regtest 0.1"

# JSON-RPC error codes (ElectrumX uses 1 for a bad request and 2 for a daemon error).
BAD_REQUEST = 1
DAEMON_ERROR = 2
UNKNOWN_TX = -5  # bitcoind's RPC_INVALID_ADDRESS_OR_KEY: "No such mempool or blockchain transaction"
TX_REFUSED = -26  # bitcoind's RPC_VERIFY_REJECTED
NOT_OWNER = -32  # a block-making method on a connection that is not the owner's (server.py)
REFUSED_PREFIX = "the transaction was rejected by network rules."


def scripthash(spk: bytes) -> str:
    return hashlib.sha256(spk).digest()[::-1].hex()


def scripthash_bytes(sh_hex: str) -> bytes:
    b = bytes.fromhex(sh_hex)
    if len(b) != 32:
        raise ValueError("script hash must be 32 bytes")
    return b[::-1]


def tip_json(t: Tip) -> dict[str, Any]:
    return {"height": t.height, "hash": t.block_hash, "mtp": t.median_time_past}


def tip_from(d: dict[str, Any]) -> Tip:
    return Tip(int(d["height"]), str(d["hash"]), int(d["mtp"]))


def utxo_json(u: Utxo) -> dict[str, Any]:
    return {
        "tx_hash": u.outpoint.txid,
        "tx_pos": u.outpoint.vout,
        "value": u.value,
        "height": u.height or 0,
        "script": u.script_pubkey.hex(),
        "coinbase": u.coinbase,
    }


def utxo_from(d: dict[str, Any], spk: bytes | None = None) -> Utxo:
    h = int(d["height"])
    return Utxo(
        OutPoint(str(d["tx_hash"]), int(d["tx_pos"])),
        int(d["value"]),
        bytes.fromhex(d["script"]) if "script" in d else (spk or b""),
        h if h > 0 else None,
        bool(d.get("coinbase", False)),
    )


def status_json(s: TxStatus) -> dict[str, Any]:
    return {
        "txid": s.txid,
        "in_mempool": s.in_mempool,
        "height": s.height,
        "block_hash": s.block_hash,
        "confirmations": s.confirmations,
    }


def status_from(d: dict[str, Any]) -> TxStatus:
    return TxStatus(str(d["txid"]), bool(d["in_mempool"]), d["height"], d["block_hash"], int(d["confirmations"]))


def spend_json(s: Spend) -> dict[str, Any]:
    return {"txid": s.outpoint.txid, "vout": s.outpoint.vout, "spender": s.txid,
            "input_index": s.input_index, "height": s.height}


def spend_from(d: dict[str, Any]) -> Spend:
    return Spend(OutPoint(str(d["txid"]), int(d["vout"])), str(d["spender"]), int(d["input_index"]), d["height"])


def event_json(ev: ChainEvent) -> dict[str, Any]:
    if isinstance(ev, NewTip):
        return {"type": "new_tip", "tip": tip_json(ev.tip)}
    if isinstance(ev, Reorg):
        return {"type": "reorg", "fork_height": ev.fork_height, "disconnected": list(ev.disconnected)}
    if isinstance(ev, OutpointSpent):
        return {"type": "outpoint_spent", "spend": spend_json(ev.spend)}
    return {"type": "script_activity", "script": ev.script_pubkey.hex(), "txid": ev.txid, "height": ev.height}


def event_from(d: dict[str, Any]) -> ChainEvent:
    kind = d["type"]
    if kind == "new_tip":
        return NewTip(tip_from(d["tip"]))
    if kind == "reorg":
        return Reorg(int(d["fork_height"]), tuple(d["disconnected"]))
    if kind == "outpoint_spent":
        return OutpointSpent(spend_from(d["spend"]))
    if kind == "script_activity":
        return ScriptActivity(bytes.fromhex(d["script"]), str(d["txid"]), d["height"])
    raise ValueError(f"unknown event type {kind!r}")
