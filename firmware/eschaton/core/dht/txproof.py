"""Transaction lookup: txid -> block hash + Merkle branch, checked against the asker's headers.

Rules / theory of operation:
- A proof is the 80-byte header of the block, the transaction's position, and its branch
  (``core/merkle.py``: Bitcoin's tree, siblings deepest first). It verifies if folding the txid
  up the branch gives the header's merkle root AND the header's hash is one the asker holds on
  its best chain (a callable: the core does not know the chain).
- Why the asker's headers and not the header alone: anyone can make a header over any root.
  Headers are cheap to hold (80 bytes a block) and the node has them from its chain.
- A holder checks the same before it stores a proof (with its own chain's headers), so it never
  serves a proof that would not verify for an asker on the same chain.
- Known limit: a 64-byte transaction could pose as an inner node (the branch length is not
  committed to by the header); rejecting 64-byte transactions is left to the chain's policy.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eschaton.core import merkle
from eschaton.core.dht.errors import RecordError
from eschaton.core.txcodec import sha256d

MAX_BRANCH = 32


@dataclass(frozen=True, slots=True)
class TxProof:
    txid: bytes  # internal byte order
    header: bytes
    index: int
    branch: tuple[bytes, ...]

    @property
    def block_hash(self) -> bytes:
        return sha256d(self.header)

    def to_value(self) -> dict[str, object]:
        return {"txid": self.txid, "header": self.header, "index": self.index,
                "branch": list(self.branch)}

    def verify(self, known_header: Callable[[bytes], bool]) -> bool:
        """True if the branch reaches the header's merkle root and the header is known."""
        try:
            root = merkle.root_from_branch(self.txid, list(self.branch), self.index)
        except ValueError:
            return False
        return root == self.header[36:68] and known_header(self.block_hash)


def from_value(v: object) -> TxProof:
    if not isinstance(v, dict) or set(v) != {b"t", b"txid", b"header", b"index", b"branch"}:
        raise RecordError("tx proof: want exactly t, txid, header, index, branch")
    txid, header, index, branch = v[b"txid"], v[b"header"], v[b"index"], v[b"branch"]
    if not (isinstance(txid, bytes) and len(txid) == 32):
        raise RecordError("tx proof: txid must be 32 bytes")
    if not (isinstance(header, bytes) and len(header) == 80):
        raise RecordError("tx proof: header must be 80 bytes")
    if not (isinstance(branch, list) and len(branch) <= MAX_BRANCH
            and all(isinstance(b, bytes) and len(b) == 32 for b in branch)):
        raise RecordError(f"tx proof: branch must be at most {MAX_BRANCH} 32-byte hashes")
    if not (isinstance(index, int) and 0 <= index < 2 ** len(branch)):
        raise RecordError("tx proof: index does not fit the branch")
    return TxProof(txid, header, index, tuple(b for b in branch if isinstance(b, bytes)))
