"""Eschaton's own verifier: a ``.ots`` file against a file's digest and the headers we hold.

Rules:
- The file's sha256 must equal the digest the proof starts from (a proof for another file
  fails here, whatever its attestations say).
- Every Bitcoin attestation in the tree is checked: the message at its node must equal the
  Merkle root of the header at its height, which ``merkle_root_at(height)`` returns from the
  node's own chain (None: no such block). The proof verifies if at least one does, and the
  answer is the lowest such height (the earliest block the file existed before). Attestations
  that name a block whose root differs make the proof fail outright: a wrong claim is not
  ignored.
- Pending and unknown attestations are reported, never trusted.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from eschaton.core.stamp.ops import ProofError
from eschaton.core.stamp.ots import BITCOIN_TAG, DetachedFile


@dataclass(frozen=True, slots=True)
class Verified:
    height: int
    """The lowest block height whose header attests the file."""
    pending: int
    """Attestations not (yet) checkable: pending calendars, unknown notaries, blocks we lack."""


def verify(proof: DetachedFile, data_digest: bytes,
           merkle_root_at: Callable[[int], bytes | None]) -> Verified:
    if proof.digest != data_digest:
        raise ProofError("the proof is for another file (digest differs)")
    heights: list[int] = []
    pending = 0
    for msg, att in proof.timestamp.leaves():
        if att.tag != BITCOIN_TAG:
            pending += 1
            continue
        h = att.height
        assert h is not None
        root = merkle_root_at(h)
        if root is None:
            pending += 1
        elif root != msg:
            raise ProofError(f"block {h} does not attest this proof (Merkle root differs)")
        else:
            heights.append(h)
    if not heights:
        raise ProofError("no attestation of the proof could be checked against a block")
    return Verified(min(heights), pending)


def file_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
