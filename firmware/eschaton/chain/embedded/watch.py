"""Turning the node's committed updates into a subscriber's ``ChainEvent`` stream.

Rules: every subscriber (an ``EmbeddedChain`` handle, an Electrum session) has its own watched
outpoints and scripts. For one update the events come in this order: ``Reorg`` (if blocks were
disconnected), ``NewTip`` (if the tip moved), then ``OutpointSpent`` / ``ScriptActivity`` for the
connected blocks in chain order, then for the transactions newly accepted into the mempool.
Transactions that a reorg returned to the mempool are not re-announced: the ``Reorg`` tells the
subscriber to re-query what it cares about.
"""
from __future__ import annotations

import hashlib

from eschaton.chain.backend import (
    ChainEvent,
    NewTip,
    OutPoint,
    OutpointSpent,
    Reorg,
    ScriptActivity,
    Spend,
)
from eschaton.chain.embedded.engine import NodeUpdate
from eschaton.core.txcodec import Tx


class Watcher:
    def __init__(self) -> None:
        self.outpoints: set[OutPoint] = set()
        # Scripts are watched by Electrum script hash (sha256 of the script) so that an
        # Electrum session, which only knows the hash, and a local handle share one matcher.
        self.scripthashes: set[bytes] = set()

    def watch_script(self, spk: bytes) -> None:
        self.scripthashes.add(hashlib.sha256(spk).digest())

    def _tx_events(self, tx: Tx, height: int | None) -> list[ChainEvent]:
        out: list[ChainEvent] = []
        if self.outpoints and not tx.is_coinbase:
            for i, txin in enumerate(tx.inputs):
                op = OutPoint(txin.prev_txid_hex, txin.prev_vout)
                if op in self.outpoints:
                    out.append(OutpointSpent(Spend(op, tx.txid, i, height)))
        if self.scripthashes:
            for spk in {o.script_pubkey for o in tx.outputs}:
                if hashlib.sha256(spk).digest() in self.scripthashes:
                    out.append(ScriptActivity(spk, tx.txid, height))
        return out

    def events(self, update: NodeUpdate) -> list[ChainEvent]:
        events: list[ChainEvent] = []
        if update.disconnected:
            fork = update.fork_height
            assert fork is not None
            events.append(Reorg(fork, tuple(h for _, h in update.disconnected)))
        if update.disconnected or update.connected:
            events.append(NewTip(update.tip))
        for height, block in update.connected:
            for tx in block.txs:
                events.extend(self._tx_events(tx, height))
        for tx in update.mempool_added:
            events.extend(self._tx_events(tx, None))
        return events
