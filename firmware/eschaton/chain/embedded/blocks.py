"""Building regtest blocks: coinbase (BIP34 height, witness commitment), merkle root, tiny PoW.

Rules / theory of operation:
- Regtest difficulty is fixed at nBits 0x207fffff, so about two nonce tries find a block.
- The coinbase scriptSig starts with the height exactly as ``CScript() << height`` writes it
  (OP_1..OP_16 for 1..16, else a minimal CScriptNum push), then an extra-nonce push so that the
  scriptSig is at least two bytes and coinbases of competing branches differ.
- Every coinbase carries the BIP141 witness commitment and a 32-byte zero witness; a commitment
  is allowed in blocks without segwit transactions, and always adding it keeps one code path.
- The block subsidy halves every 150 blocks on regtest.
- Pure: the caller passes the time.
"""
from __future__ import annotations

import hashlib
import struct

from eschaton.core.script import push_data, push_int
from eschaton.core.txcodec import Tx, compact_size, decode_tx, merkle_root, sha256d

REGTEST_BITS = 0x207FFFFF
REGTEST_HALVING = 150
COIN = 100_000_000
BLOCK_VERSION = 0x20000000
MAX_FUTURE_SECONDS = 2 * 60 * 60
WITNESS_COMMITMENT_HEADER = bytes.fromhex("aa21a9ed")


def subsidy(height: int) -> int:
    halvings = height // REGTEST_HALVING
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def _ser_out(value: int, spk: bytes) -> bytes:
    return struct.pack("<q", value) + compact_size(len(spk)) + spk


def build_coinbase(height: int, value: int, to_script: bytes, witness_root: bytes, extra: bytes) -> Tx:
    script_sig = push_int(height) + push_data(extra)
    commitment = sha256d(witness_root + b"\x00" * 32)
    outs = [
        _ser_out(value, to_script),
        _ser_out(0, b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment),
    ]
    raw = (
        struct.pack("<i", 2)
        + b"\x00\x01"
        + b"\x01"
        + b"\x00" * 32
        + b"\xff\xff\xff\xff"
        + compact_size(len(script_sig))
        + script_sig
        + b"\xff\xff\xff\xff"
        + compact_size(len(outs))
        + b"".join(outs)
        + b"\x01\x20"
        + b"\x00" * 32
        + b"\x00\x00\x00\x00"
    )
    return decode_tx(raw)


def header_hash(header: bytes) -> str:
    return sha256d(header)[::-1].hex()


def _target(bits: int) -> int:
    exp = bits >> 24
    return (bits & 0xFFFFFF) << (8 * (exp - 3))


def build_block(
    prev_hash: str,
    height: int,
    time: int,
    to_script: bytes,
    txs: list[Tx],
    fees: int,
    extra: bytes = b"",
    bits: int = REGTEST_BITS,
) -> bytes:
    """A serialised, solved block on top of ``prev_hash`` holding ``txs`` after the coinbase.

    ``fees`` is the sum of the transactions' fees; the coinbase claims subsidy + fees."""
    wtxids = [b"\x00" * 32] + [bytes.fromhex(t.wtxid)[::-1] for t in txs]
    coinbase = build_coinbase(
        height, subsidy(height) + fees, to_script, merkle_root(wtxids), extra or struct.pack("<Q", time)
    )
    all_txs = [coinbase, *txs]
    root = merkle_root([bytes.fromhex(t.txid)[::-1] for t in all_txs])
    head = struct.pack("<i", BLOCK_VERSION) + bytes.fromhex(prev_hash)[::-1] + root + struct.pack("<II", time, bits)
    target = _target(bits)
    nonce = 0
    while True:
        header = head + struct.pack("<I", nonce)
        if int.from_bytes(hashlib.sha256(hashlib.sha256(header).digest()).digest(), "little") <= target:
            break
        nonce += 1
    return header + compact_size(len(all_txs)) + b"".join(t.raw for t in all_txs)


def median_time_past(times: list[int]) -> int:
    """Median of the last (up to) 11 block times, as Bitcoin Core computes it."""
    last = sorted(times[-11:])
    return last[len(last) // 2] if last else 0
