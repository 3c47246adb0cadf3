"""Merkle proofs as Electrum servers give them (``blockchain.transaction.get_merkle``).

A proof is the txid, the sibling hashes from the leaf up (display hex) and the position in the
block. It binds the transaction to a header only if the root it gives equals the header's
merkle root and the position fits the branch. A 64-byte transaction can pose as an inner node
of the tree (CVE-2017-12842), so a client accepts proofs only for transactions whose raw bytes
it holds, hashes to the txid itself, and are not 64 bytes long (``tx_may_be_proven``).
"""
from __future__ import annotations

import hashlib

from eschaton.core.txcodec import TxDecodeError, decode_tx


def _sha256d(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


def root_from_branch(txid: str, branch: list[str], pos: int) -> bytes:
    """The merkle root (internal byte order) the proof leads to; ValueError for a malformed one."""
    if pos < 0 or pos >> len(branch):
        raise ValueError(f"position {pos} does not fit a branch of {len(branch)}")
    h = bytes.fromhex(txid)[::-1]
    if len(h) != 32:
        raise ValueError("txid must be 32 bytes")
    for sibling_hex in branch:
        sibling = bytes.fromhex(sibling_hex)[::-1]
        if len(sibling) != 32:
            raise ValueError("merkle branch hashes must be 32 bytes")
        h = _sha256d(sibling + h) if pos & 1 else _sha256d(h + sibling)
        pos >>= 1
    return h


def proves(header: bytes, txid: str, branch: list[str], pos: int) -> bool:
    """True if the proof leads to the merkle root of ``header`` (80 raw bytes)."""
    try:
        return root_from_branch(txid, branch, pos) == header[36:68]
    except ValueError:
        return False


def tx_may_be_proven(raw_tx: bytes, txid: str) -> bool:
    """The raw transaction is the one named (its txid, without witness) and cannot pose as a node."""
    try:
        tx = decode_tx(raw_tx)
    except TxDecodeError:
        return False
    return tx.txid == txid and tx.base_size != 64  # base_size: the serialisation the txid hashes
