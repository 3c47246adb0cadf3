"""A ``ChainBackend`` that survives the loss of the process owning a shared embedded chain.

Rules:
- Every call goes to the current backend from ``open_chain``. If it raises
  ``ChainUnavailable`` (the owner died or restarted on a new port), the chain is reopened with
  ``open_chain`` and the call retried once. Reopening may make this process the new owner: the
  village keeps its chain when the gateway node is rebooted.
- Watched outpoints and scripts, and subscribed listeners, are carried over to the new backend,
  and listeners get a ``NewTip`` for the tip after reconnecting, so level-triggered watchers
  (the channel watcher) look at the chain again.
- Reopening is serialised by a lock; calls made during a reopen wait for it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from eschaton.chain.backend import (
    ChainBackend,
    ChainEvent,
    Listener,
    NewTip,
    OutPoint,
    Spend,
    Tip,
    TxStatus,
    Utxo,
)
from eschaton.chain.errors import ChainUnavailable, InvalidRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReopeningChain:
    def __init__(self, base: Path, inner: ChainBackend, *, serve: bool = True) -> None:
        self.base = base
        self.inner = inner
        self.serve = serve
        self.listeners: list[Listener] = []
        self.outpoints: set[OutPoint] = set()
        self.scripts: set[bytes] = set()
        self._lock = asyncio.Lock()
        self._generation = 0
        inner.subscribe(self._dispatch)

    @classmethod
    async def open(cls, base: Path, *, serve: bool = True) -> ReopeningChain:
        from eschaton.chain.open import open_chain

        return cls(base, await open_chain(base, serve=serve), serve=serve)

    @property
    def owner(self) -> bool:
        """True while this process owns the chain (rather than reaching it over Electrum)."""
        from eschaton.chain.embedded.chain import EmbeddedChain

        return isinstance(self.inner, EmbeddedChain)

    def _dispatch(self, ev: ChainEvent) -> None:
        for fn in list(self.listeners):
            try:
                fn(ev)
            except Exception:  # supervision boundary: one bad listener must not stop the others
                log.exception("chain listener failed on %r", ev)

    async def _reopen(self, generation: int) -> None:
        from eschaton.chain.open import open_chain

        async with self._lock:
            if generation != self._generation:
                return  # another caller already reopened
            old = self.inner
            try:
                await old.close()
            except Exception:  # the old backend is gone anyway
                log.debug("closing the lost chain backend failed", exc_info=True)
            new = await open_chain(self.base, serve=self.serve, timeout=30.0)
            new.subscribe(self._dispatch)
            for op in self.outpoints:
                await new.watch_outpoint(op)
            for spk in self.scripts:
                await new.watch_script(spk)
            self.inner = new
            self._generation += 1
            log.warning("chain reopened (%s)", "now owning it" if self.owner else "through its owner")
            self._dispatch(NewTip(await new.tip()))

    async def _call(self, fn: Callable[[ChainBackend], Awaitable[T]]) -> T:
        generation = self._generation
        try:
            return await fn(self.inner)
        except ChainUnavailable as e:
            log.warning("chain unavailable (%s); reopening", e)
        await self._reopen(generation)
        return await fn(self.inner)

    # --- ChainBackend ------------------------------------------------------------------------

    async def tip(self) -> Tip:
        return await self._call(lambda c: c.tip())

    async def get_utxo(self, outpoint: OutPoint) -> Utxo | None:
        return await self._call(lambda c: c.get_utxo(outpoint))

    async def list_unspent(self, script_pubkey: bytes) -> list[Utxo]:
        return await self._call(lambda c: c.list_unspent(script_pubkey))

    async def get_transaction(self, txid: str) -> bytes:
        return await self._call(lambda c: c.get_transaction(txid))

    async def tx_status(self, txid: str) -> TxStatus:
        return await self._call(lambda c: c.tx_status(txid))

    async def spender(self, outpoint: OutPoint) -> Spend | None:
        return await self._call(lambda c: c.spender(outpoint))

    async def broadcast(self, raw_tx: bytes) -> str:
        return await self._call(lambda c: c.broadcast(raw_tx))

    async def estimate_fee(self, target_blocks: int) -> int:
        return await self._call(lambda c: c.estimate_fee(target_blocks))

    async def watch_outpoint(self, outpoint: OutPoint) -> None:
        self.outpoints.add(outpoint)
        await self._call(lambda c: c.watch_outpoint(outpoint))

    async def watch_script(self, script_pubkey: bytes) -> None:
        self.scripts.add(script_pubkey)
        await self._call(lambda c: c.watch_script(script_pubkey))

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def close(self) -> None:
        await self.inner.close()

    # --- regtest extras (the demo and tests mine through whichever process owns the chain) ---

    async def mine(self, n: int, to_script: bytes | None = None) -> list[str]:
        return await self._call(lambda c: _extra(c, "mine")(n, to_script))


def _extra(c: ChainBackend, name: str) -> Any:
    fn = getattr(c, name, None)
    if fn is None:
        raise InvalidRequest(f"this chain backend has no {name}")
    return fn
