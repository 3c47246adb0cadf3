"""'After' proofs: a statement that embeds the latest block hashes, so that whatever it carries
cannot have been made before those blocks existed.

Statement format (the bytes whose sha256 is stamped):

    b"eschaton-after\\x00" | u32 count | count x (u32 height | 32-byte block hash, display order
    reversed, i.e. internal order) | the data digest (32 bytes)

Rules:
- ``statement`` embeds several recent blocks (the tip and a few below it), so a short reorg
  does not void it: ``check`` accepts a statement when at least one embedded block is still
  in the header chain at its height and says the data came after the highest such block.
- The statement is checked as bytes: wrong magic, a short or long body, zero blocks, heights not
  strictly decreasing are a ``ProofError``.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eschaton.core.stamp.ops import ProofError

MAGIC = b"eschaton-after\x00"
MAX_BLOCKS = 16


@dataclass(frozen=True, slots=True)
class After:
    height: int
    """The highest embedded block still in the chain: the data is younger than it."""
    data_digest: bytes


def statement(blocks: Sequence[tuple[int, bytes]], data_digest: bytes) -> bytes:
    """``blocks``: (height, block hash in internal order), highest first."""
    if not 1 <= len(blocks) <= MAX_BLOCKS:
        raise ValueError(f"a statement embeds 1..{MAX_BLOCKS} blocks")
    if len(data_digest) != 32 or any(len(h) != 32 for _, h in blocks):
        raise ValueError("digests and block hashes are 32 bytes")
    heights = [h for h, _ in blocks]
    if any(a <= b for a, b in zip(heights, heights[1:], strict=False)):
        raise ValueError("block heights must be strictly decreasing")
    body = b"".join(struct.pack("<I", h) + bh for h, bh in blocks)
    return MAGIC + struct.pack("<I", len(blocks)) + body + data_digest


def parse(stmt: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    if not stmt.startswith(MAGIC) or len(stmt) < len(MAGIC) + 4 + 32:
        raise ProofError("not an 'after' statement")
    (n,) = struct.unpack_from("<I", stmt, len(MAGIC))
    if not 1 <= n <= MAX_BLOCKS or len(stmt) != len(MAGIC) + 4 + 36 * n + 32:
        raise ProofError("malformed 'after' statement")
    pos = len(MAGIC) + 4
    blocks = []
    for _ in range(n):
        (h,) = struct.unpack_from("<I", stmt, pos)
        blocks.append((h, stmt[pos + 4:pos + 36]))
        pos += 36
    heights = [h for h, _ in blocks]
    if any(a <= b for a, b in zip(heights, heights[1:], strict=False)):
        raise ProofError("malformed 'after' statement: heights not decreasing")
    return blocks, stmt[pos:]


def check(stmt: bytes, block_hash_at: Callable[[int], bytes | None]) -> After:
    """``block_hash_at(height)``: the internal-order hash of our chain's block there, or None."""
    blocks, digest = parse(stmt)
    for h, bh in blocks:
        if block_hash_at(h) == bh:
            return After(h, digest)
    raise ProofError("none of the statement's blocks is in the chain: it proves nothing")
