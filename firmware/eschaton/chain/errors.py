"""Typed errors of the chain package (the root ``ChainError`` lives in ``backend``)."""
from __future__ import annotations

from eschaton.chain.backend import BroadcastRefused, ChainError, UnknownTransaction
from eschaton.core.txcodec import TxDecodeError  # decoding is pure; re-exported for the chain API
from eschaton.errors import LocalError, RemoteError, TransientError

__all__ = [
    "BroadcastRefused",
    "ChainError",
    "ChainDirUnusable",
    "ChainLocked",
    "ChainUnavailable",
    "InvalidRequest",
    "NotOwner",
    "ScriptVerifyError",
    "TxDecodeError",
    "UnknownTransaction",
    "BlockRejected",
]


class ScriptVerifyError(RemoteError, ChainError):
    """An input's script did not verify. ``reason`` is bitcoind's short cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f" ({detail})" if detail else ""))


class InvalidRequest(LocalError, ChainError):
    """Our caller asked for something meaningless (input index out of range, unknown flags,
    bad hex, N <= 0 blocks ...)."""


class NotOwner(LocalError, ChainError):
    """A block-making call (mine, submit a block) on a connection that is not the chain owner's
    own socket: over TCP, or from another user."""


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


class ChainDirUnusable(LocalError, ChainError):
    """The chain directory cannot be created or used (a file in its way, a read-only parent)."""


class WrongNetwork(LocalError, ChainError):
    """The chain server follows another network than ``[chain] network`` says."""
