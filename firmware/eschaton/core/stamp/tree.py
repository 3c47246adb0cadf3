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
- Speed (a round can hold a million digests): a level is a plain list of 32-byte hashes, and
  each level is built by ``map`` over C functions (concatenate the pairs, hash, take the
  digest), with no Python bytecode per node and no per-node objects besides the hashes. A
  proof is not stored: node ``i >> k`` of level ``k`` is the leaf's ancestor, so ``path_bytes``
  encodes any digest's path on demand from the levels in O(log n). ``all_path_bytes`` encodes
  all of them at once (one ``join`` per digest of its nonce step, the steps of its lowest
  ancestors and the path its 16-digest subtree shares to the root).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from itertools import chain, repeat
from operator import add

from eschaton.core.stamp.ops import Op, append, prepend, sha256

NONCE_LEN = 16
_SHA = b"\x08"
_APPEND32 = b"\xf0\x20"
_PREPEND32 = b"\xf1\x20"
_NONCE_HEAD = b"\xf0" + bytes([NONCE_LEN])
_H = hashlib.sha256
_DIGEST = type(hashlib.sha256()).digest
_SHARED = 4
"""``all_path_bytes``: the levels from this one up are shared suffixes, those below columns."""


def _parents(level: list[bytes]) -> list[bytes]:
    """The next level up: ``sha256(left || right)`` per pair, an odd last node carried up."""
    nxt = list(map(_DIGEST, map(_H, map(add, level[0::2], level[1::2]))))
    if len(level) % 2:
        nxt.append(level[-1])
    return nxt


class Tree:
    """The tree of one round: ``levels[0]`` are the leaves, ``levels[-1] == [root]``."""

    __slots__ = ("digests", "nonces", "levels", "_nonce_list")

    def __init__(self, digests: Sequence[bytes], nonces: bytes) -> None:
        if not digests:
            raise ValueError("a round needs at least one digest")
        n = len(digests)
        if len(nonces) != NONCE_LEN * n:
            raise ValueError("one 16-byte nonce per digest")
        self.digests = list(digests)
        self.nonces = nonces
        self._nonce_list = list(map(nonces.__getitem__, map(slice, range(0, NONCE_LEN * n, NONCE_LEN),
                                                              range(NONCE_LEN, NONCE_LEN * (n + 1), NONCE_LEN))))
        level = list(map(_DIGEST, map(_H, map(add, self.digests, self._nonce_list))))
        self.levels = [level]
        while len(level) > 1:
            level = _parents(level)
            self.levels.append(level)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def __len__(self) -> int:
        return len(self.digests)

    def nonce(self, i: int) -> bytes:
        return self._nonce_list[i]

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
        """The encoded path of digest ``i`` (the bytes of ``path(i)``), from the levels."""
        if not 0 <= i < len(self.digests):
            raise IndexError(i)
        out = [_NONCE_HEAD, self._nonce_list[i], _SHA]
        for level in self.levels[:-1]:
            sib = i ^ 1
            if sib < len(level):
                out += (_PREPEND32 if i & 1 else _APPEND32, level[sib], _SHA)
            i >>= 1
        return b"".join(out)

    def _column(self, k: int) -> list[bytes]:
        """The encoded step of every node of level ``k`` (b"" for a node carried up)."""
        level = self.levels[k]
        pairs = len(level) // 2
        right = map(add, map(_APPEND32.__add__, level[1::2]), repeat(_SHA))  # even nodes append the right
        left = map(add, map(_PREPEND32.__add__, level[0:2 * pairs:2]), repeat(_SHA))
        col = list(chain.from_iterable(zip(right, left, strict=True)))
        if len(level) % 2:
            col.append(b"")
        return col

    def all_path_bytes(self) -> list[bytes]:
        """The encoded path of every digest, in order (see the module notes)."""
        # Levels SHARED and up: each node's path to the root, built top-down by one concatenation
        # per node (few nodes, each shared by 2**SHARED digests); below: one column per level.
        # Digest i joins its nonce step, the steps of nodes i >> k for k < SHARED and the
        # shared path of node i >> SHARED: a join of SHARED + 4 parts, not one per level.
        top = len(self.levels) - 1
        shared = min(_SHARED, top)
        up = [b""]
        for k in range(top - 1, shared - 1, -1):
            up = list(map(add, self._column(k), chain.from_iterable(zip(up, up, strict=True))))
        cols: list[Iterator[bytes]] = [repeat(_NONCE_HEAD), iter(self._nonce_list), repeat(_SHA)]
        for k in range(shared):
            # the leaf i's ancestor at level k is node i >> k: each step repeated 2**k times
            cols.append(chain.from_iterable(map(repeat, self._column(k), repeat(1 << k))))
        cols.append(chain.from_iterable(map(repeat, up, repeat(1 << shared))))
        return list(map(b"".join, zip(*cols, strict=False)))  # the nonces end it; the repeats run on
