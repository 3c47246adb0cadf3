"""One round's Merkle tree over the digests it accepted, and each digest's path to the root.

Rules / theory of operation:
- Each digest becomes a leaf ``sha256(digest || nonce)`` with a 16-byte nonce of its own: a
  proof shows the hashes next to its path, and without the nonce the sibling of a leaf would be
  another customer's digest (of a guessable document, say). The nonce costs one hash per leaf.
- Interior nodes are ``sha256(left || right)``. An odd node at the end of a level is carried up
  unchanged (no hash, no duplicate), so every path has at most ceil(log2 n) steps and the
  duplicate-last ambiguity of Bitcoin's tree (CVE-2012-2459) does not arise.
- A path step is ``prepend(left sibling), sha256`` or ``append(right sibling), sha256``: 35
  bytes encoded. A leaf's path starts with ``append(nonce), sha256`` (19 bytes).
- ``Tree.path_bytes(i)`` encodes a path without building ``Op`` objects; ``all_path_bytes``
  builds every path at once by sharing suffixes (each node's path to the root is its sibling
  step followed by its parent's), so a million proofs cost one concatenation per node.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from eschaton.core.stamp.ops import Op, append, prepend, sha256

NONCE_LEN = 16
_SHA = b"\x08"
_APPEND = b"\xf0"
_PREPEND = b"\xf1"


class Tree:
    """The tree of one round: ``levels[0]`` are the leaves, ``levels[-1] == [root]``."""

    __slots__ = ("digests", "nonces", "levels")

    def __init__(self, digests: Sequence[bytes], nonces: bytes) -> None:
        if not digests:
            raise ValueError("a round needs at least one digest")
        if len(nonces) != NONCE_LEN * len(digests):
            raise ValueError("one 16-byte nonce per digest")
        self.digests = list(digests)
        self.nonces = nonces
        h = hashlib.sha256
        level = [h(d + nonces[NONCE_LEN * i:NONCE_LEN * (i + 1)]).digest() for i, d in enumerate(digests)]
        self.levels = [level]
        while len(level) > 1:
            nxt = [h(level[j] + level[j + 1]).digest() for j in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def __len__(self) -> int:
        return len(self.digests)

    def nonce(self, i: int) -> bytes:
        return self.nonces[NONCE_LEN * i:NONCE_LEN * (i + 1)]

    def path(self, i: int) -> list[Op]:
        """The operations from digest ``i`` to the root."""
        ops = [append(self.nonce(i)), sha256()]
        for level in self.levels[:-1]:
            sib = i ^ 1
            if sib < len(level):
                ops += [prepend(level[sib]) if sib < i else append(level[sib]), sha256()]
            i >>= 1
        return ops

    def path_bytes(self, i: int) -> bytes:
        return b"".join(op.encode() for op in self.path(i))

    def all_path_bytes(self) -> list[bytes]:
        """The encoded path of every digest, in order (see the module notes)."""
        # suffix[j]: encoded path from node j of the current level to the root.
        suffix = [b""]
        for level in reversed(self.levels[:-1]):
            n = len(level)
            step = [(_PREPEND if j & 1 else _APPEND) + b"\x20" for j in range(2)]
            nxt: list[bytes] = []
            for j in range(n):
                sib = j ^ 1
                up = suffix[j >> 1]
                if sib < n:
                    nxt.append(step[j & 1] + level[sib] + _SHA + up)
                else:
                    nxt.append(up)  # carried up unchanged: no step at this level
            suffix = nxt
        head = _APPEND + bytes([NONCE_LEN])
        nonces = self.nonces
        return [head + nonces[NONCE_LEN * i:NONCE_LEN * (i + 1)] + _SHA + s for i, s in enumerate(suffix)]
