"""Bitcoin Core's JSON shapes and error codes, built from decoded transactions and headers.

Pure functions (no I/O): the server fills them from the chain index, the client reads them.
Field names and types follow Bitcoin Core 31's RPC help; values are in BTC where Core uses BTC.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from eschaton.chain.embedded.policy import iter_script, script_type
from eschaton.core.script import script_to_address
from eschaton.core.txcodec import BlockHeader, Tx

# Bitcoin Core's error codes (src/rpc/protocol.h).
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_PARSE_ERROR = -32700
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28

# What ``getnetworkinfo`` reports: the Core release whose RPC this one follows (ElectrumX 2.0
# asks for >= 31.0 because it relies on ``txospenderindex``).
CORE_VERSION = 310000
SUBVERSION = "/Eschaton:0.1.0/"
COIN = 100_000_000


_OPNAMES = {
    0x00: "0", 0x4F: "-1", 0x61: "OP_NOP", 0x63: "OP_IF", 0x64: "OP_NOTIF", 0x67: "OP_ELSE",
    0x68: "OP_ENDIF", 0x69: "OP_VERIFY", 0x6A: "OP_RETURN", 0x75: "OP_DROP", 0x76: "OP_DUP",
    0x82: "OP_SIZE", 0x87: "OP_EQUAL", 0x88: "OP_EQUALVERIFY", 0xA6: "OP_RIPEMD160", 0xA7: "OP_SHA1",
    0xA8: "OP_SHA256", 0xA9: "OP_HASH160", 0xAA: "OP_HASH256", 0xAC: "OP_CHECKSIG",
    0xAD: "OP_CHECKSIGVERIFY", 0xAE: "OP_CHECKMULTISIG", 0xAF: "OP_CHECKMULTISIGVERIFY",
    0xB1: "OP_CHECKLOCKTIMEVERIFY", 0xB2: "OP_CHECKSEQUENCEVERIFY", 0xBA: "OP_CHECKSIGADD",
    0x7C: "OP_SWAP", 0x7E: "OP_CAT", 0x6B: "OP_TOALTSTACK", 0x6C: "OP_FROMALTSTACK",
    0x73: "OP_IFDUP", 0x74: "OP_DEPTH", 0x77: "OP_NIP", 0x78: "OP_OVER", 0x7D: "OP_TUCK",
    0x93: "OP_ADD", 0x94: "OP_SUB", 0x9A: "OP_BOOLAND", 0x9B: "OP_BOOLOR", 0x9C: "OP_NUMEQUAL",
    0x9D: "OP_NUMEQUALVERIFY", 0x9F: "OP_LESSTHAN", 0xA0: "OP_GREATERTHAN", 0xA5: "OP_WITHIN",
}


class RpcError(Exception):
    """A JSON-RPC error reply: Core's ``code`` and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def btc(amount: int) -> float:
    """Satoshis as BTC (a JSON number; every satoshi amount round-trips through ``sats``)."""
    return amount / COIN


def sats(value: Any) -> int:
    """A BTC amount from JSON (number or string) as satoshis."""
    return int((Decimal(str(value)) * COIN).to_integral_value())


def asm(script: bytes) -> str:
    """Core's ``ScriptToAsmStr`` (without signature-hash decoding): pushes as hex, small
    integers as numbers, opcodes by name."""
    out: list[str] = []
    try:
        ops = iter_script(script)
    except ValueError:
        return "[error]"
    for op, data in ops:
        if data is not None and op <= 0x4E:
            if op == 0:
                out.append("0")
            elif len(data) <= 4:
                n = int.from_bytes(data, "little")
                if data and data[-1] & 0x80:
                    n = -(n & ~(0x80 << (8 * (len(data) - 1))))
                out.append(str(n))
            else:
                out.append(data.hex())
        elif 0x51 <= op <= 0x60:
            out.append(str(op - 0x50))
        else:
            out.append(_OPNAMES.get(op, f"OP_UNKNOWN[{op:#04x}]" if op > 0xB9 else f"OP_{op:#04x}"))
    return " ".join(out)


def script_pubkey_json(spk: bytes, network: str = "regtest") -> dict[str, Any]:
    kind = script_type(spk)
    d: dict[str, Any] = {"asm": asm(spk), "desc": f"raw({spk.hex()})", "hex": spk.hex(),
                         "type": kind or "nonstandard"}
    address = script_to_address(spk, network) if kind not in (None, "nulldata", "pubkey", "multisig") else None
    if address is not None:
        d["address"] = address
        d["desc"] = f"addr({address})"
    return d


def tx_json(tx: Tx, network: str = "regtest") -> dict[str, Any]:
    """``decoderawtransaction``'s object."""
    vin: list[dict[str, Any]] = []
    for i in tx.inputs:
        if tx.is_coinbase:
            e: dict[str, Any] = {"coinbase": i.script_sig.hex()}
        else:
            e = {"txid": i.prev_txid_hex, "vout": i.prev_vout,
                 "scriptSig": {"asm": asm(i.script_sig), "hex": i.script_sig.hex()}}
        if i.witness:
            e["txinwitness"] = [w.hex() for w in i.witness]
        e["sequence"] = i.sequence
        vin.append(e)
    vout = [{"value": btc(o.value), "n": n, "scriptPubKey": script_pubkey_json(o.script_pubkey, network)}
            for n, o in enumerate(tx.outputs)]
    return {"txid": tx.txid, "hash": tx.wtxid, "version": tx.version, "size": len(tx.raw),
            "vsize": tx.vsize, "weight": tx.weight, "locktime": tx.locktime, "vin": vin, "vout": vout}


def target(bits: int) -> int:
    exp, mant = bits >> 24, bits & 0x007FFFFF
    return mant >> (8 * (3 - exp)) if exp <= 3 else mant << (8 * (exp - 3))


def difficulty(bits: int) -> float:
    """Core's ``GetDifficulty``: the ratio of the difficulty-1 target to this one."""
    shift = (bits >> 24) & 0xFF
    diff = 0x0000FFFF / (bits & 0x00FFFFFF)
    while shift < 29:
        diff *= 256.0
        shift += 1
    while shift > 29:
        diff /= 256.0
        shift -= 1
    return diff


def block_work(bits: int) -> int:
    """Expected hashes for a block at ``bits`` (Core's ``GetBlockProof``)."""
    t = target(bits)
    return (1 << 256) // (t + 1)


def header_json(h: BlockHeader, *, height: int, tip_height: int, mtp: int, chainwork: int, n_tx: int,
                next_hash: str | None) -> dict[str, Any]:
    """``getblockheader``'s object (also the header fields of ``getblock``)."""
    d: dict[str, Any] = {
        "hash": h.hash, "confirmations": tip_height - height + 1, "height": height,
        "version": h.version, "versionHex": f"{h.version & 0xFFFFFFFF:08x}",
        "merkleroot": h.merkle_root[::-1].hex(), "time": h.time, "mediantime": mtp, "nonce": h.nonce,
        "bits": f"{h.bits:08x}", "target": f"{target(h.bits):064x}", "difficulty": difficulty(h.bits),
        "chainwork": f"{chainwork:064x}", "nTx": n_tx,
    }
    if height > 0:
        d["previousblockhash"] = h.prev_hash
    if next_hash is not None:
        d["nextblockhash"] = next_hash
    return d
