"""A sparse Merkle tree over 256-bit paths, with inclusion AND exclusion proofs.

Rules / theory of operation:
- A key's path is ``sha256(key)``; a leaf commits to ``(path, sha256(value))``. Node hashes are
  domain-separated: ``leaf = sha256(0x00 || path || value_hash)``, ``inner = sha256(0x01 ||
  left || right)``, and the empty subtree is 32 zero bytes (no known preimage).
- The tree is kept compact (as in Diem's Jellyfish tree): a subtree holding one leaf *is* that
  leaf, at whatever depth, so a proof has about log2(n) siblings, not 256.
- A proof for a key is the siblings along its path from the root down to where the path ends,
  plus what it ends on: the key's own leaf (inclusion), the empty subtree, or another key's leaf
  sharing the path so far (both exclusion). The verifier folds it back up to the root.
- Soundness does not rely on the publisher building the tree honestly: two proofs for one key
  that disagree would need one position on the path to be both a leaf and an inner node, or
  empty and not: the domain separation and the zero empty hash make that a hash collision.
- The verifier is strict (``ProofError`` for a malformed proof, False for one that does not
  fold to the root); it also refuses non-canonical endings (a leaf whose last sibling is empty).
"""
from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass

from eschaton.core.dht.errors import ProofError
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError

EMPTY = bytes(32)
MAX_DEPTH = 256


def path_of(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def leaf_hash(path: bytes, value_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + path + value_hash).digest()


def inner_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _bit(path: int, depth: int) -> int:
    return (path >> (MAX_DEPTH - 1 - depth)) & 1


@dataclass(frozen=True, slots=True)
class Proof:
    """Siblings from the root down, and the leaf the path ends on (None: an empty subtree)."""

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None  # (path, value hash)

    def encode(self) -> bytes:
        d: dict[str, bencode.EValue] = {
            "s": [b"" if s == EMPTY else s for s in self.siblings]}
        if self.leaf is not None:
            d["l"] = [self.leaf[0], self.leaf[1]]
        return bencode.encode(d)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """Strict decode; only ``ProofError`` leaves."""
        try:
            v = bencode.decode(data, bencode.Limits(max_size=16 * 1024, max_depth=3,
                                                    max_items=600))
        except BencodeError as exc:
            raise ProofError(f"smt proof: {exc}") from None
        return cls.from_value(v)

    @classmethod
    def from_value(cls, v: bencode.BValue) -> Proof:
        if not isinstance(v, dict) or not set(v) <= {b"s", b"l"} or b"s" not in v:
            raise ProofError("smt proof: want a dict with s and optional l")
        sibs = v[b"s"]
        if not isinstance(sibs, list) or len(sibs) > MAX_DEPTH:
            raise ProofError("smt proof: s must be a list of at most 256 hashes")
        out = []
        for s in sibs:
            if s == b"":
                out.append(EMPTY)
            elif isinstance(s, bytes) and len(s) == 32 and s != EMPTY:
                out.append(s)
            else:
                raise ProofError("smt proof: a sibling is not a 32-byte hash")
        leaf: tuple[bytes, bytes] | None = None
        if b"l" in v:
            lv = v[b"l"]
            if (not isinstance(lv, list) or len(lv) != 2
                    or not all(isinstance(x, bytes) and len(x) == 32 for x in lv)):
                raise ProofError("smt proof: l must be [path, value hash]")
            p, h = lv
            assert isinstance(p, bytes) and isinstance(h, bytes)
            leaf = (p, h)
        return cls(tuple(out), leaf)


class Tree:
    """An immutable sparse Merkle tree over ``items`` (key -> value)."""

    def __init__(self, items: dict[bytes, bytes]) -> None:
        self.items = dict(items)
        self._leaves = sorted(
            (int.from_bytes(path_of(k), "big"), path_of(k), hashlib.sha256(v).digest())
            for k, v in self.items.items())
        self._nums = [n for n, _, _ in self._leaves]
        self._memo: dict[tuple[int, int, int], bytes] = {}
        self.root = self._hash(0, len(self._leaves), 0)

    def _hash(self, lo: int, hi: int, depth: int) -> bytes:
        """Hash of the subtree holding leaves[lo:hi], all sharing their first ``depth`` bits."""
        if hi == lo:
            return EMPTY
        if hi - lo == 1:
            _, p, vh = self._leaves[lo]
            return leaf_hash(p, vh)
        key = (lo, hi, depth)
        memo = self._memo.get(key)
        if memo is not None:
            return memo
        mid = self._split(lo, hi, depth)
        h = inner_hash(self._hash(lo, mid, depth + 1), self._hash(mid, hi, depth + 1))
        self._memo[key] = h
        return h

    def _split(self, lo: int, hi: int, depth: int) -> int:
        """First index in leaves[lo:hi] whose bit ``depth`` is 1 (they share the bits above)."""
        shift = MAX_DEPTH - depth
        pivot = (self._nums[lo] >> shift << shift) | (1 << (shift - 1))
        return bisect.bisect_left(self._nums, pivot, lo, hi)

    def prove(self, key: bytes) -> Proof:
        """The inclusion proof of ``key`` if it is in the tree, else its exclusion proof."""
        p = path_of(key)
        pn = int.from_bytes(p, "big")
        lo, hi, depth = 0, len(self._leaves), 0
        sibs: list[bytes] = []
        while hi - lo > 1:
            mid = self._split(lo, hi, depth)
            if _bit(pn, depth):
                sibs.append(self._hash(lo, mid, depth + 1))
                lo = mid
            else:
                sibs.append(self._hash(mid, hi, depth + 1))
                hi = mid
            depth += 1
        if hi == lo:
            return Proof(tuple(sibs), None)
        _, lp, vh = self._leaves[lo]
        return Proof(tuple(sibs), (lp, vh))


def _fold(path: bytes, proof: Proof, bottom: bytes) -> bytes:
    pn = int.from_bytes(path, "big")
    h = bottom
    for depth in range(len(proof.siblings) - 1, -1, -1):
        s = proof.siblings[depth]
        h = inner_hash(s, h) if _bit(pn, depth) else inner_hash(h, s)
    return h


def _canonical_end(proof: Proof) -> bool:
    # A leaf whose sibling is the empty subtree would have been hoisted one level up.
    return not (proof.leaf is not None and proof.siblings and proof.siblings[-1] == EMPTY)


def verify_inclusion(root: bytes, key: bytes, value: bytes, proof: Proof) -> bool:
    """True if ``proof`` shows ``key -> value`` under ``root``."""
    p = path_of(key)
    if proof.leaf is None or proof.leaf != (p, hashlib.sha256(value).digest()):
        return False
    if not _canonical_end(proof):
        return False
    return _fold(p, proof, leaf_hash(*proof.leaf)) == root


def verify_exclusion(root: bytes, key: bytes, proof: Proof) -> bool:
    """True if ``proof`` shows that ``key`` has no value under ``root``."""
    p = path_of(key)
    d = len(proof.siblings)
    if proof.leaf is None:
        bottom = EMPTY
    else:
        other = proof.leaf[0]
        if other == p:
            return False
        # The other leaf must sit on our path: it shares its first d bits with it.
        if d and (int.from_bytes(other, "big") ^ int.from_bytes(p, "big")) >> (MAX_DEPTH - d):
            return False
        if not _canonical_end(proof):
            return False
        bottom = leaf_hash(*proof.leaf)
    return _fold(p, proof, bottom) == root
