"""The chain backend interface: the smallest surface the node needs from a Bitcoin chain.

Three implementations sit behind it: the embedded regtest chain (libbitcoinkernel), a client for
the Electrum protocol (which also reaches an embedded chain owned by another process), and a
bitcoind JSON-RPC client. It is async because two of the three talk over a network; the embedded
chain simply answers without awaiting anything slow.

Rules:
- Every txid and block hash is a lowercase hex string in display order (as bitcoind prints it).
- Scripts and raw transactions are ``bytes``.
- ``broadcast`` either returns the txid or raises ``BroadcastRefused`` with the reason, the way
  bitcoind's ``sendrawtransaction`` reports it (e.g. ``non-final``, ``bad-txns-inputs-missingorspent``).
- Subscriptions deliver events to a listener callback in chain order. After a reorg the listener
  sees ``Reorg`` first, then ``NewTip``; confirmations reported afterwards follow the new branch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eschaton.errors import EschatonError, RemoteError


class ChainError(EschatonError):
    """Root of chain-backend errors."""


class BroadcastRefused(RemoteError, ChainError):
    """The chain refused a transaction; ``reason`` is the short machine-readable cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"transaction refused: {reason}" + (f" ({detail})" if detail else ""))


class UnknownTransaction(ChainError):
    """No transaction with that txid is known to the chain or its mempool."""


@dataclass(frozen=True, slots=True)
class OutPoint:
    txid: str  # display-order hex
    vout: int

    def __str__(self) -> str:
        return f"{self.txid}:{self.vout}"


@dataclass(frozen=True, slots=True)
class Tip:
    height: int
    block_hash: str
    median_time_past: int


@dataclass(frozen=True, slots=True)
class Utxo:
    outpoint: OutPoint
    value: int  # satoshis
    script_pubkey: bytes
    height: int | None  # None while only in the mempool
    coinbase: bool = False


@dataclass(frozen=True, slots=True)
class TxStatus:
    txid: str
    in_mempool: bool
    height: int | None  # confirmed height, None if unconfirmed
    block_hash: str | None
    confirmations: int  # 0 when unconfirmed


@dataclass(frozen=True, slots=True)
class Spend:
    """Who spent an outpoint: the spending txid, its input index, and where it confirmed."""

    outpoint: OutPoint
    txid: str
    input_index: int
    height: int | None  # None while the spend is only in the mempool


# --- subscription events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewTip:
    tip: Tip


@dataclass(frozen=True, slots=True)
class Reorg:
    """Blocks above ``fork_height`` were disconnected (``disconnected`` lists their hashes)."""

    fork_height: int
    disconnected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutpointSpent:
    spend: Spend


@dataclass(frozen=True, slots=True)
class ScriptActivity:
    """A transaction paying to or confirming on a watched script."""

    script_pubkey: bytes
    txid: str
    height: int | None


ChainEvent = NewTip | Reorg | OutpointSpent | ScriptActivity
Listener = Callable[[ChainEvent], None]


@runtime_checkable
class ChainBackend(Protocol):
    async def tip(self) -> Tip: ...

    async def get_utxo(self, outpoint: OutPoint) -> Utxo | None:
        """The unspent output, including mempool outputs; None if spent (also in mempool) or absent."""
        ...

    async def list_unspent(self, script_pubkey: bytes) -> list[Utxo]:
        """Unspent outputs paying exactly this script, confirmed and in the mempool."""
        ...

    async def get_transaction(self, txid: str) -> bytes:
        """The raw transaction; raises UnknownTransaction."""
        ...

    async def tx_status(self, txid: str) -> TxStatus:
        """Raises UnknownTransaction."""
        ...

    async def spender(self, outpoint: OutPoint) -> Spend | None: ...

    async def broadcast(self, raw_tx: bytes) -> str:
        """Returns the txid, or raises BroadcastRefused."""
        ...

    async def estimate_fee(self, target_blocks: int) -> int:
        """Fee rate in sat/kvB for confirmation within ``target_blocks``."""
        ...

    async def watch_outpoint(self, outpoint: OutPoint) -> None: ...

    async def watch_script(self, script_pubkey: bytes) -> None: ...

    def subscribe(self, listener: Listener) -> None: ...

    async def close(self) -> None: ...
