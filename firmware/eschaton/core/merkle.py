"""Merkle branches over Bitcoin's double-SHA256 tree: the proofs Electrum servers hand out.

Rules / theory of operation:
- Leaves are 32-byte hashes in internal (little-endian) byte order; an odd layer pairs its last
  hash with itself, as in a block's transaction tree.
- A branch lists the sibling of the leaf's path at each layer, deepest pairing first; folding it
  back from the leaf with the leaf's index gives the root. The same code serves a transaction's
  proof to its block's merkle root (``blockchain.transaction.get_merkle``) and a header's proof to
  the root over all header hashes up to a checkpoint (``cp_height`` of
  ``blockchain.block.header(s)``).
- ``root_from_branch`` is the verifier: a client (or a test) recomputes the root from the leaf,
  the branch and the position and compares it with what it trusts.
"""
from __future__ import annotations

from eschaton.core.codec import sha256d


def branch_and_root(leaves: list[bytes], index: int) -> tuple[list[bytes], bytes]:
    """The branch of ``leaves[index]`` (deepest first) and the tree's root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} outside a tree of {len(leaves)}")
    branch: list[bytes] = []
    layer = list(leaves)
    i = index
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        branch.append(layer[i ^ 1])
        layer = [sha256d(layer[j] + layer[j + 1]) for j in range(0, len(layer), 2)]
        i >>= 1
    return branch, layer[0]


def root_from_branch(leaf: bytes, branch: list[bytes], index: int) -> bytes:
    """The root that ``branch`` proves ``leaf`` at ``index`` to be under."""
    h = leaf
    for sibling in branch:
        h = sha256d(sibling + h) if index & 1 else sha256d(h + sibling)
        index >>= 1
    if index:
        raise ValueError("index does not fit the branch's depth")
    return h


def to_hex(h: bytes) -> str:
    """Display order, as Electrum writes txids, branches and roots."""
    return h[::-1].hex()


def from_hex(s: str) -> bytes:
    return bytes.fromhex(s)[::-1]
