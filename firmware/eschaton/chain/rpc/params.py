"""Checking the parameters of RPC calls, with Bitcoin Core's error codes and messages."""
from __future__ import annotations

from typing import Any

from eschaton.chain.backend import BroadcastRefused
from eschaton.chain.rpc import shapes as S
from eschaton.chain.rpc.shapes import RpcError
from eschaton.core.txcodec import Tx, TxDecodeError, decode_tx


def int_param(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RpcError(S.RPC_TYPE_ERROR, f"JSON value of type {json_type(v)} for field {name} is not of expected type number")
    return v


def str_param(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise RpcError(S.RPC_TYPE_ERROR, f"JSON value of type {json_type(v)} for field {name} is not of expected type string")
    return v


def bool_param(v: Any, name: str) -> bool:
    if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1):
        return bool(v)  # Core's getrawtransaction takes 0/1 as well as false/true
    if not isinstance(v, bool):
        raise RpcError(S.RPC_TYPE_ERROR, f"JSON value of type {json_type(v)} for field {name} is not of expected type bool")
    return v


def json_type(v: Any) -> str:
    return {type(None): "null", bool: "bool", int: "number", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(v), "unknown")


def hash_param(v: Any, name: str) -> str:
    s = str_param(v, name)
    if len(s) != 64:
        raise RpcError(S.RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(s)}, for '{s}')")
    try:
        bytes.fromhex(s)
    except ValueError:
        raise RpcError(S.RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{s}')") from None
    return s.lower()


def hex_param(v: Any, name: str) -> bytes:
    s = str_param(v, name)
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise RpcError(S.RPC_DESERIALIZATION_ERROR, "TX decode failed") from None


def raw_tx_param(v: Any) -> Tx:
    try:
        return decode_tx(hex_param(v, "hexstring"))
    except TxDecodeError:
        raise RpcError(S.RPC_DESERIALIZATION_ERROR,
                       "TX decode failed. Make sure the tx has at least one input.") from None


def feerate_param(v: Any, name: str = "maxfeerate") -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise RpcError(S.RPC_TYPE_ERROR, f"Amount is not a number or string ({name})")
    try:
        rate = float(v)
    except ValueError:
        raise RpcError(S.RPC_TYPE_ERROR, "Invalid amount") from None
    if rate < 0:
        raise RpcError(S.RPC_TYPE_ERROR, "Amount out of range")
    return rate


def refusal(e: BroadcastRefused) -> RpcError:
    """A mempool refusal as Core's ``sendrawtransaction`` reports it."""
    if e.reason == "TX decode failed":
        return RpcError(S.RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.")
    if e.reason == "bad-txns-inputs-missingorspent":
        return RpcError(S.RPC_VERIFY_ERROR, "bad-txns-inputs-missingorspent")
    if e.reason == "txn-already-known":
        return RpcError(S.RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
    return RpcError(S.RPC_VERIFY_REJECTED, e.reason + (f", {e.detail}" if e.detail else ""))
