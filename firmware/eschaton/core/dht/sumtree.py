"""A Merkle sum tree: the authenticated output of a map/reduce query.

Rules / theory of operation:
- Each leaf is ``(label, value)``: the 32-byte id of a record the map step matched and the
  non-negative integer it mapped to. ``leaf = sha256(0x00 || label || value as 8 bytes)``;
  an inner node carries the sum of its children and
  ``sha256(0x01 || left hash || left sum || right hash || right sum)``, so the root commits to
  both the set of leaves and the total. An odd node is promoted to the next layer unchanged
  (duplicating it, as Bitcoin does, would count its value twice).
- The answer to a map/reduce query is the root and the total. The asker checks any leaf it
  likes (a random sample, or the records it already knows of) with its proof: the fold must
  reach the root hash and the total, and every sum on the way stays within 0..2**64-1, so a
  node cannot hide a negative value or an overflow to make the total come out as it wishes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from eschaton.core.dht.errors import ProofError
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError

MAX_VALUE = 2**64 - 1


def leaf_hash(label: bytes, value: int) -> bytes:
    return hashlib.sha256(b"\x00" + label + value.to_bytes(8, "big")).digest()


def node_hash(lh: bytes, ls: int, rh: bytes, rs: int) -> bytes:
    return hashlib.sha256(b"\x01" + lh + ls.to_bytes(8, "big") + rh + rs.to_bytes(8, "big")).digest()


@dataclass(frozen=True, slots=True)
class Step:
    """One level of a proof: the sibling's hash and sum, and whether it sits on the right."""

    hash: bytes
    sum: int
    right: bool


class SumTree:
    """Every layer of the sum tree over ``leaves`` (label, value)."""

    def __init__(self, leaves: list[tuple[bytes, int]]) -> None:
        for label, value in leaves:
            if len(label) != 32 or not 0 <= value <= MAX_VALUE:
                raise ValueError("a sum tree leaf is a 32-byte label and a 64-bit value")
        layer = [(leaf_hash(label, v), v) for label, v in leaves]
        self.layers = [layer]
        while len(layer) > 1:
            nxt = []
            for j in range(0, len(layer) - 1, 2):
                (lh, ls), (rh, rs) = layer[j], layer[j + 1]
                if ls + rs > MAX_VALUE:
                    raise ValueError("sum tree total exceeds 64 bits")
                nxt.append((node_hash(lh, ls, rh, rs), ls + rs))
            if len(layer) % 2:
                nxt.append(layer[-1])
            layer = nxt
            self.layers.append(layer)

    @property
    def root(self) -> tuple[bytes, int]:
        """(hash, total); an empty tree is (32 zero bytes, 0)."""
        return self.layers[-1][0] if self.layers[0] else (bytes(32), 0)

    def prove(self, index: int) -> list[Step]:
        if not 0 <= index < len(self.layers[0]):
            raise ValueError(f"leaf {index} outside a tree of {len(self.layers[0])}")
        out = []
        for layer in self.layers[:-1]:
            sib = index ^ 1
            if sib < len(layer):
                h, s = layer[sib]
                out.append(Step(h, s, sib > index))
            index >>= 1
        return out


def verify(root: tuple[bytes, int], label: bytes, value: int, proof: list[Step]) -> bool:
    """True if ``(label, value)`` is a leaf under ``root`` (hash, total)."""
    if not 0 <= value <= MAX_VALUE or len(label) != 32:
        return False
    h, s = leaf_hash(label, value), value
    for st in proof:
        if not 0 <= st.sum <= MAX_VALUE or s + st.sum > MAX_VALUE:
            return False
        h = node_hash(h, s, st.hash, st.sum) if st.right else node_hash(st.hash, st.sum, h, s)
        s += st.sum
    return (h, s) == root


def encode_proof(proof: list[Step]) -> bytes:
    return bencode.encode([[st.hash, st.sum, int(st.right)] for st in proof])


def decode_proof(data: bytes) -> list[Step]:
    """Strict decode; only ``ProofError`` leaves."""
    try:
        v = bencode.decode(data, bencode.Limits(max_size=8192, max_depth=3, max_items=400))
    except BencodeError as exc:
        raise ProofError(f"sum proof: {exc}") from None
    if not isinstance(v, list) or len(v) > 64:
        raise ProofError("sum proof: want a list of at most 64 steps")
    out = []
    for st in v:
        if not (isinstance(st, list) and len(st) == 3 and isinstance(st[0], bytes)
                and len(st[0]) == 32 and isinstance(st[1], int) and 0 <= st[1] <= MAX_VALUE
                and st[2] in (0, 1)):
            raise ProofError("sum proof: a step is not [hash, sum, 0|1]")
        out.append(Step(st[0], st[1], st[2] == 1))
    return out
