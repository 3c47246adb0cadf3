"""Merkle proofs as Electrum servers give them (``blockchain.transaction.get_merkle``).

A proof is the txid, the sibling hashes from the leaf up (display hex) and the position in the
block. It binds the transaction to a header only if the root it gives equals the header's
merkle root and the position fits the branch. A 64-byte transaction can pose as an inner node
of the tree (CVE-2017-12842), so a client accepts proofs only for transactions whose raw bytes
it holds, hashes to the txid itself, and are not 64 bytes long (``tx_may_be_proven``).
"""
from __future__ import annotations

from eschaton.core import merkle
from eschaton.core.txcodec import TxDecodeError, decode_tx


def root_from_branch(txid: str, branch: list[str], pos: int) -> bytes:
    """The merkle root (internal byte order) the proof leads to; ValueError for a malformed one.

    Electrum's display-hex form of ``core.merkle.root_from_branch`` (one fold for the server's
    proofs and this client's checks)."""
    if pos < 0 or pos >> len(branch):
        raise ValueError(f"position {pos} does not fit a branch of {len(branch)}")
    leaf = merkle.from_hex(txid)
    siblings = [merkle.from_hex(h) for h in branch]
    if len(leaf) != 32:
        raise ValueError("txid must be 32 bytes")
    if any(len(h) != 32 for h in siblings):
        raise ValueError("merkle branch hashes must be 32 bytes")
    return merkle.root_from_branch(leaf, siblings, pos)


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
