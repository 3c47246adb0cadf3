"""``EmbeddedChain``: the ``ChainBackend`` over an in-process ``ChainNode``.

The node is synchronous and fast (SQLite lookups, kernel calls of a millisecond or less), so the
async methods answer directly on the event loop; they are async only to share the interface
with the network backends.

Fee estimate: regtest has no fee market, so ``estimate_fee`` returns the 1 sat/vB relay floor
(1000 sat/kvB), raised to the fee rate of the transaction at the boundary of the first
``target_blocks`` blocks' worth of mempool when the mempool is that full.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from eschaton.chain.backend import (
    BroadcastRefused,
    ChainEvent,
    Listener,
    OutPoint,
    Spend,
    Tip,
    TxStatus,
    UnknownTransaction,
    Utxo,
)
from eschaton.chain.embedded.engine import ChainNode, NodeUpdate
from eschaton.chain.embedded.mempool import MAX_BLOCK_WEIGHT
from eschaton.chain.embedded.mining import BlockProduction, BlockSchedule
from eschaton.chain.embedded.policy import MIN_RELAY_FEE
from eschaton.chain.embedded.watch import Watcher
from eschaton.chain.errors import ChainError, InvalidRequest

log = logging.getLogger(__name__)

FEE_FLOOR = MIN_RELAY_FEE  # sat/kvB


def _outpoint(op: OutPoint) -> tuple[str, int]:
    if not isinstance(op, OutPoint) or len(op.txid) != 64 or not 0 <= op.vout <= 0xFFFFFFFF:
        raise InvalidRequest(f"bad outpoint {op!r}")
    try:
        bytes.fromhex(op.txid)
    except ValueError:
        raise InvalidRequest(f"bad outpoint {op!r}") from None
    return op.txid.lower(), op.vout


class EmbeddedChain:
    """One handle on a ``ChainNode``; several handles may share a node (``owns_node=False``)."""

    def __init__(self, node: ChainNode, *, owns_node: bool = True) -> None:
        self.node = node
        self.owns_node = owns_node
        self.watcher = Watcher()
        self.listeners: list[Listener] = []
        self.server: Any = None  # an ElectrumServer sharing this node, stopped on close()
        self.rpc: Any = None  # an RpcServer (bitcoind's JSON-RPC) sharing this node, stopped on close()
        self._auto_miner: asyncio.Task[None] | None = None
        self._auto_listener: Callable[[NodeUpdate], None] | None = None
        node.listeners.append(self._on_update)

    @classmethod
    def open(cls, datadir: str) -> EmbeddedChain:
        return cls(ChainNode(datadir))

    def _on_update(self, update: NodeUpdate) -> None:
        events = self.watcher.events(update)
        for ev in events:
            self._emit(ev)

    def _emit(self, ev: ChainEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(ev)
            except Exception:  # supervision boundary: one bad listener must not stop the chain
                log.exception("chain listener failed on %r", ev)

    # --- ChainBackend -------------------------------------------------------------------------

    async def tip(self) -> Tip:
        return self.node.tip()

    def utxo_sync(self, outpoint: OutPoint) -> Utxo | None:
        txid, vout = _outpoint(outpoint)
        mp = self.node.mempool
        if (txid, vout) in mp.spent:
            return None
        assert self.node.index is not None
        c = self.node.index.coin(txid, vout)
        if c is not None:
            return Utxo(OutPoint(txid, vout), c.value, c.spk, c.height, c.coinbase)
        m = mp.coin(txid, vout)
        if m is not None:
            return Utxo(OutPoint(txid, vout), m[0], m[1], None)
        return None

    async def get_utxo(self, outpoint: OutPoint) -> Utxo | None:
        return self.utxo_sync(outpoint)

    def list_unspent_sync(self, script_pubkey: bytes) -> list[Utxo]:
        assert self.node.index is not None
        spk = bytes(script_pubkey)
        mp = self.node.mempool
        out = [
            Utxo(OutPoint(c.txid, c.vout), c.value, spk, c.height, c.coinbase)
            for c in self.node.index.coins_for_script(spk)
            if (c.txid, c.vout) not in mp.spent
        ]
        for txid, e in mp.entries.items():
            for vout, o in enumerate(e.tx.outputs):
                if o.script_pubkey == spk and (txid, vout) not in mp.spent:
                    out.append(Utxo(OutPoint(txid, vout), o.value, spk, None))
        return out

    async def list_unspent(self, script_pubkey: bytes) -> list[Utxo]:
        return self.list_unspent_sync(script_pubkey)

    async def get_transaction(self, txid: str) -> bytes:
        raw = self.node.get_transaction(txid.lower())
        if raw is None:
            raise UnknownTransaction(f"unknown transaction {txid}")
        return raw

    def tx_status_sync(self, txid: str) -> TxStatus:
        txid = txid.lower()
        if txid in self.node.mempool:
            return TxStatus(txid, True, None, None, 0)
        assert self.node.index is not None
        loc = self.node.index.tx_location(txid)
        if loc is None:
            raise UnknownTransaction(f"unknown transaction {txid}")
        tip = self.node.tip_row().height
        return TxStatus(txid, False, loc[0], loc[1], tip - loc[0] + 1)

    async def tx_status(self, txid: str) -> TxStatus:
        return self.tx_status_sync(txid)

    def spender_sync(self, outpoint: OutPoint) -> Spend | None:
        txid, vout = _outpoint(outpoint)
        op = OutPoint(txid, vout)
        mp = self.node.mempool
        spender = mp.spent.get((txid, vout))
        if spender is not None:
            e = mp.entries[spender]
            idx = next(i for i, t in enumerate(e.tx.inputs) if (t.prev_txid_hex, t.prev_vout) == (txid, vout))
            return Spend(op, spender, idx, None)
        assert self.node.index is not None
        s = self.node.index.spender(txid, vout)
        return Spend(op, s[0], s[1], s[2]) if s else None

    async def spender(self, outpoint: OutPoint) -> Spend | None:
        return self.spender_sync(outpoint)

    async def broadcast(self, raw_tx: bytes) -> str:
        if not isinstance(raw_tx, bytes | bytearray):
            raise BroadcastRefused("TX decode failed", "not bytes")
        return self.node.broadcast(bytes(raw_tx))

    def estimate_fee_sync(self, target_blocks: int) -> int:
        if target_blocks < 1:
            raise InvalidRequest("target_blocks must be at least 1")
        budget = (MAX_BLOCK_WEIGHT - 8_000) * target_blocks
        entries = sorted(self.node.mempool.entries.values(), key=lambda e: -e.feerate)
        used = 0
        for e in entries:
            used += e.tx.weight
            if used > budget:
                return max(FEE_FLOOR, int(e.feerate * 1000) + 1)
        return FEE_FLOOR

    async def estimate_fee(self, target_blocks: int) -> int:
        return self.estimate_fee_sync(target_blocks)

    async def watch_outpoint(self, outpoint: OutPoint) -> None:
        self.watcher.outpoints.add(OutPoint(*_outpoint(outpoint)))

    async def watch_script(self, script_pubkey: bytes) -> None:
        self.watcher.watch_script(bytes(script_pubkey))

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def close(self) -> None:
        self.stop_auto_mining()
        if self.rpc is not None:
            await self.rpc.stop()
            self.rpc = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        self.close_sync()

    def close_sync(self) -> None:
        if self._on_update in self.node.listeners:
            self.node.listeners.remove(self._on_update)
        if self.owns_node:
            self.node.close()

    # --- regtest extras -----------------------------------------------------------------------

    async def mine(self, n: int, to_script: bytes | None = None) -> list[str]:
        return self.node.mine(n, to_script)

    def start_auto_mining(self, interval: float, to_script: bytes | None = None) -> None:
        """Mine one block every ``interval`` seconds (demos) until ``stop_auto_mining``/``close``."""
        if interval <= 0:
            raise InvalidRequest("mining interval must be positive")
        self.start_block_production(interval, 0.0, lambda: to_script)

    def start_block_production(self, interval: float, after_tx: float,
                               to_script: Callable[[], bytes | None] = lambda: None) -> BlockProduction:
        """Make blocks by themselves (``mining.BlockSchedule``: ``interval`` seconds after the last
        block, ``after_tx`` seconds after a transaction waits in the mempool; 0 is off) until
        ``stop_auto_mining``/``close``. ``to_script`` gives each coinbase's destination (None:
        ``OP_TRUE_P2WSH``). The task sleeps until the schedule's deadline or the chain's next
        update; it never polls."""
        self.stop_auto_mining()
        loop = asyncio.get_running_loop()
        node = self.node
        schedule = BlockSchedule(interval, after_tx, loop.time(), len(node.mempool.entries))
        status = BlockProduction(interval, after_tx)
        wake = asyncio.Event()

        def on_update(update: NodeUpdate) -> None:
            size = len(node.mempool.entries)
            if update.connected or update.disconnected:
                schedule.on_block(loop.time(), size)
            else:
                schedule.on_mempool(loop.time(), size)
            wake.set()

        async def run() -> None:
            backoff = 1.0
            while True:
                now = loop.time()
                why = schedule.due(now)
                if why is None:
                    deadline = schedule.deadline()
                    wake.clear()
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel
                    # that arrives as the event is set, and a stopped chain must not get blocks.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if deadline is None else deadline - now):
                            await wake.wait()
                    continue
                txs = len(node.mempool.entries)
                try:
                    block_hash = node.mine(1, to_script())[0]
                except ChainError as e:  # e.g. the clock is behind the chain's median time
                    status.failures += 1
                    log.warning("automatic block production failed (%s); retrying in %.0f s", e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                backoff = 1.0
                tip = node.tip()
                status.produced += 1
                status.last_height, status.last_hash = tip.height, block_hash
                status.last_reason, status.last_at = why, round(time.time(), 3)
                log.info("block produced", extra={"fields": {
                    "height": tip.height, "hash": block_hash, "reason": why,
                    "mempool_before": txs, "mempool_after": len(node.mempool.entries)}})

        node.listeners.append(on_update)
        self._auto_listener = on_update
        node.production = status
        self._auto_miner = loop.create_task(run())
        return status

    @property
    def production(self) -> BlockProduction | None:
        return self.node.production if self._auto_miner is not None else None

    def stop_auto_mining(self) -> None:
        if self._auto_miner is not None:
            self._auto_miner.cancel()
            self._auto_miner = None
            self.node.production = None
        if self._auto_listener is not None:
            if self._auto_listener in self.node.listeners:
                self.node.listeners.remove(self._auto_listener)
            self._auto_listener = None

    async def mine_branch(self, from_hash: str, n: int, txs: list[bytes] | None = None,
                          to_script: bytes | None = None) -> list[str]:
        return self.node.mine_branch(from_hash, n, txs, to_script)

    async def submit_block(self, raw: bytes) -> tuple[str, bool]:
        return self.node.submit_block(raw)
