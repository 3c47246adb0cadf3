"""Merkle branches over Bitcoin's double-SHA256 tree: the proofs Electrum servers hand out.

Rules / theory of operation:
- Leaves are 32-byte hashes in internal (little-endian) byte order; an odd layer pairs its last
  hash with itself, as in a block's transaction tree.
- A branch lists the sibling of the leaf's path at each layer, deepest pairing first; folding it
  back from the leaf with the leaf's index gives the root. The same code serves a transaction's
  proof to its block's merkle root (``blockchain.transaction.get_merkle``) and a header's proof to
  the root over all header hashes up to a checkpoint (``cp_height`` of
  ``blockchain.block.header(s)``).
- ``Tree`` keeps every layer, so a server answers each proof of a block in O(log n) after hashing
  the block once (a wallet asks for the proof of every transaction it has).
- ``root_from_branch`` is the verifier: a client (or a test) recomputes the root from the leaf,
  the branch and the position and compares it with what it trusts.
"""
from __future__ import annotations

from eschaton.core.txcodec import sha256d


class Tree:
    """Every layer of the tree over ``leaves`` (which must not be empty), leaves first."""

    __slots__ = ("layers", "size")

    def __init__(self, leaves: list[bytes]) -> None:
        if not leaves:
            raise ValueError("a merkle tree needs at least one leaf")
        self.size = len(leaves)
        layer = list(leaves)
        self.layers = [layer]
        while len(layer) > 1:
            if len(layer) % 2:
                layer.append(layer[-1])  # the duplicate stays in the layer: it is a sibling too
            layer = [sha256d(layer[j] + layer[j + 1]) for j in range(0, len(layer), 2)]
            self.layers.append(layer)

    @property
    def root(self) -> bytes:
        return self.layers[-1][0]

    def branch(self, index: int) -> list[bytes]:
        """The siblings of ``leaves[index]``'s path, deepest first."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf {index} outside a tree of {self.size}")
        out = []
        for layer in self.layers[:-1]:
            out.append(layer[index ^ 1])
            index >>= 1
        return out


def branch_and_root(leaves: list[bytes], index: int) -> tuple[list[bytes], bytes]:
    """The branch of ``leaves[index]`` (deepest first) and the tree's root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} outside a tree of {len(leaves)}")
    tree = Tree(leaves)
    return tree.branch(index), tree.root


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
