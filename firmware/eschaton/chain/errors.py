"""Typed errors of the chain package (the root ``ChainError`` lives in ``backend``)."""
from __future__ import annotations

from eschaton.chain.backend import BroadcastRefused, ChainError, UnknownTransaction
from eschaton.errors import LocalError, RemoteError, TransientError

__all__ = [
    "BroadcastRefused",
    "ChainError",
    "ChainLocked",
    "ChainUnavailable",
    "InvalidRequest",
    "ScriptVerifyError",
    "TxDecodeError",
    "UnknownTransaction",
    "BlockRejected",
]


class TxDecodeError(RemoteError, ChainError):
    """Bytes that are not exactly one well-formed transaction (bitcoind: ``TX decode failed``)."""

    reason = "TX decode failed"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"TX decode failed: {detail}")


class ScriptVerifyError(RemoteError, ChainError):
    """An input's script did not verify. ``reason`` is bitcoind's short cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f" ({detail})" if detail else ""))


class InvalidRequest(LocalError, ChainError):
    """Our caller asked for something meaningless (input index out of range, unknown flags,
    bad hex, N <= 0 blocks ...)."""


class BlockRejected(RemoteError, ChainError):
    """A block did not become the tip; ``reason`` is what the kernel said."""

    def __init__(self, reason: str, block_hash: str = "", detail: str = "") -> None:
        self.reason = reason
        self.block_hash = block_hash
        self.detail = detail
        super().__init__(f"block {block_hash or '?'} rejected: {reason}" + (f" ({detail})" if detail else ""))


class ChainLocked(TransientError, ChainError):
    """Another process owns the chain datadir."""


class ChainUnavailable(TransientError, ChainError):
    """The chain server could not be reached."""
