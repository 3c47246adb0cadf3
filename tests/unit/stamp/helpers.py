"""Proof fixtures built from real transactions and a real block encoding (no chain needed)."""
from __future__ import annotations

import hashlib
import os
import struct

from eschaton.core.stamp import ots
from eschaton.core.stamp.chain import block_path, commitment_path
from eschaton.core.stamp.tree import NONCE_LEN, Tree
from eschaton.core.tx import TxIn, TxOut, build_tx, serialize, set_witness
from eschaton.core.txcodec import compact_size, decode_block, merkle_root


def commitment_tx(root: bytes, seed: int = 0) -> bytes:
    """A segwit transaction (witness present) with ``OP_RETURN root`` between two other outputs."""
    tx = build_tx([TxIn(hashlib.sha256(bytes([seed])).hexdigest(), 1, 0xFFFFFFFE)],
                  [TxOut(1000, b"\x00\x14" + b"\x11" * 20), TxOut(0, b"\x6a\x20" + root),
                   TxOut(5000, b"\x00\x14" + b"\x22" * 20)], locktime=7)
    set_witness(tx, 0, [b"\x30" * 71, b"\x02" * 33])
    return serialize(tx)


def raw_block(txs: list[bytes]) -> bytes:
    ids = []
    for raw in txs:
        from eschaton.core.txcodec import decode_tx

        ids.append(bytes.fromhex(decode_tx(raw).txid)[::-1])
    header = struct.pack("<i32s32sIII", 0x20000000, b"\x00" * 32, merkle_root(ids), 1_700_000_000, 0x207FFFFF, 0)
    return header + compact_size(len(txs)) + b"".join(txs)


def stamped(digests: list[bytes], *, others: int = 4, position: int = 2, height: int = 5) -> tuple[
        Tree, list[bytes], bytes]:
    """A round over ``digests`` committed in a block of ``others + 1`` transactions.

    Returns the tree, every digest's full ``.ots`` file, and the block's header Merkle root."""
    tree = Tree(digests, os.urandom(NONCE_LEN * len(digests)))
    commit = commitment_tx(tree.root)
    txs = [commitment_tx(os.urandom(32), seed=i + 1) for i in range(others)]
    txs.insert(min(position, len(txs)), commit)
    block = raw_block(txs)
    c_path, txid = commitment_path(commit, tree.root)
    b_path, mroot = block_path(block, txid)
    assert mroot == decode_block(block).header.merkle_root
    files = []
    for i, d in enumerate(digests):
        ts = ots.linear(d, tree.path(i) + c_path + b_path, ots.bitcoin(height))
        files.append(ots.DetachedFile(ts).encode())
    return tree, files, mroot
