"""From a round's root to a block header: the commitment transaction and the block's Merkle tree.

Rules:
- The commitment is a transaction with an output ``OP_RETURN <root>``. Its txid is the double
  SHA-256 of its serialization without witnesses, so the path root -> txid is
  ``prepend(bytes before the root), append(bytes after it), sha256, sha256``. The split is
  computed from the transaction's structure, not by searching for the root's bytes.
- The txid (internal byte order) reaches the header's Merkle root through its branch in the
  block: at each level ``prepend`` or ``append`` the sibling, then ``sha256, sha256``. Bitcoin's
  tree duplicates a level's last node; the branch then appends the node to itself, as it must.
- The result is the header's ``hashMerkleRoot`` (bytes 36..68 of the header), which is what a
  Bitcoin block-header attestation at the block's height claims.
"""
from __future__ import annotations

import struct

from eschaton.core.merkle import branch_and_root
from eschaton.core.stamp.ops import Op, ProofError, append, prepend, sha256
from eschaton.core.txcodec import Tx, compact_size, decode_block, decode_tx, sha256d

OP_RETURN_32 = b"\x6a\x20"


def stripped(tx: Tx) -> tuple[bytes, list[int]]:
    """The serialization the txid hashes, and the offset of each output's script in it."""
    out = bytearray(struct.pack("<i", tx.version) + compact_size(len(tx.inputs)))
    for i in tx.inputs:
        out += (i.prev_txid + struct.pack("<I", i.prev_vout) + compact_size(len(i.script_sig)) + i.script_sig
                + struct.pack("<I", i.sequence))
    out += compact_size(len(tx.outputs))
    offsets = []
    for o in tx.outputs:
        out += struct.pack("<q", o.value) + compact_size(len(o.script_pubkey))
        offsets.append(len(out))
        out += o.script_pubkey
    out += struct.pack("<I", tx.locktime)
    return bytes(out), offsets


def commitment_path(raw_tx: bytes, root: bytes) -> tuple[list[Op], bytes]:
    """The path from ``root`` to the txid (internal order) of the transaction committing to it."""
    tx = decode_tx(raw_tx)
    ser, offsets = stripped(tx)
    for o, off in zip(tx.outputs, offsets, strict=True):
        if o.script_pubkey == OP_RETURN_32 + root:
            at = off + len(OP_RETURN_32)
            path = [prepend(ser[:at]), append(ser[at + 32:]), sha256(), sha256()]
            return path, sha256d(ser)
    raise ProofError("the transaction has no OP_RETURN output committing to the root")


def merkle_branch(txids: list[bytes], index: int) -> list[Op]:
    """The path from ``txids[index]`` (internal order) to the block's Merkle root."""
    branch, _root = branch_and_root(txids, index)
    return branch_path(branch, index)


def branch_path(branch: list[bytes], index: int) -> list[Op]:
    """A Merkle branch (siblings deepest first, as ``core.merkle`` and Electrum's
    ``get_merkle`` give it) as operations."""
    ops: list[Op] = []
    for sibling in branch:
        ops += [prepend(sibling) if index & 1 else append(sibling), sha256(), sha256()]
        index >>= 1
    return ops


def block_path(raw_block: bytes, txid: bytes) -> tuple[list[Op], bytes]:
    """The path from ``txid`` (internal order) to the block's header Merkle root, and the root."""
    block = decode_block(raw_block)
    ids = [bytes.fromhex(t.txid)[::-1] for t in block.txs]
    try:
        index = ids.index(txid)
    except ValueError:
        raise ProofError("the transaction is not in that block") from None
    return merkle_branch(ids, index), block.header.merkle_root
