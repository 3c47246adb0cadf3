"""A ``ChainBackend`` that survives the loss of its chain server.

Rules:
- Every call goes to the current backend. If it raises ``ChainUnavailable`` (the server died,
  or restarted on a new port), the backend is reopened and the call retried once.
- Two ways to (re)open: ``ReopeningChain.open(datadir)`` uses ``open_chain`` on a shared
  embedded chain, so reopening may make this process the new owner (the village keeps its chain
  when the gateway node is rebooted); ``ReopeningChain.electrum(host, port)`` reconnects to a
  remote chain server, retrying for ``reconnect_timeout`` before the call fails with
  ``ChainUnavailable`` (the next call tries again). ``ReopeningChain.electrum`` is the SPV
  client (``SpvChainClient``, standard protocol only) over one or several servers: each reopen
  tries the next server, those dropped for lying last; the verified headers are kept across
  servers and restarts (``SpvHeaders``).
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
from typing import TYPE_CHECKING, Any, TypeVar

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

if TYPE_CHECKING:
    from eschaton.chain.embedded.mining import BlockProduction
    from eschaton.chain.rpc.server import RpcListen

log = logging.getLogger(__name__)
T = TypeVar("T")


Opener = Callable[[], Awaitable[ChainBackend]]


class ReopeningChain:
    def __init__(self, opener: Opener, inner: ChainBackend) -> None:
        self.opener = opener
        self.inner = inner
        self.listeners: list[Listener] = []
        self.outpoints: set[OutPoint] = set()
        self.scripts: set[bytes] = set()
        self._lock = asyncio.Lock()
        self._generation = 0
        self._requests_before = 0  # requests the backends replaced by a reopen had sent
        self._on_close: Callable[[], None] | None = None
        # Automatic block production (interval, after_tx, coinbase script): started on the inner
        # chain whenever this process owns it, so a node that becomes the owner on a reopen
        # takes over the village's blocks.
        self._production: tuple[float, float, Callable[[], bytes | None]] | None = None
        inner.subscribe(self._dispatch)

    @classmethod
    async def open(cls, base: Path, *, serve: bool = True, also: tuple[str, int] | None = None,
                   rpc: RpcListen | None = None) -> ReopeningChain:
        """``rpc``: an ``RpcListen``; whichever process owns the chain serves the JSON-RPC."""
        from eschaton.chain.open import open_chain

        async def opener() -> ChainBackend:
            return await open_chain(base, serve=serve, timeout=30.0, also=also, rpc=rpc)

        return cls(opener, await open_chain(base, serve=serve, also=also, rpc=rpc))

    @classmethod
    async def electrum(cls, servers: list[tuple[str, int]], headers_file: Path, *, network: str = "regtest",
                       reconnect_timeout: float = 30.0) -> ReopeningChain:
        """Electrum servers (``[chain] backend = "electrum"``), as an SPV client whose verified
        headers live in ``headers_file``. The first connect must reach one of them."""
        from eschaton.chain.electrum.spv import ServerPool, SpvHeaders
        from eschaton.chain.electrum.spvclient import SpvChainClient

        headers = SpvHeaders(headers_file, network)
        pool = ServerPool(list(servers))

        async def opener() -> ChainBackend:
            deadline = asyncio.get_running_loop().time() + reconnect_timeout
            delay = 0.05
            while True:
                last: ChainUnavailable | None = None
                for server in pool.order():
                    try:
                        client = await SpvChainClient.connect(server, headers, pool)
                    except ChainUnavailable as e:
                        log.warning("%s", e)
                        last = e
                        continue
                    pool.used(server)
                    return client
                if asyncio.get_running_loop().time() + delay > deadline:
                    assert last is not None
                    raise last
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

        try:
            first = await opener()
        except BaseException:
            headers.close()
            raise
        chain = cls(opener, first)
        chain._on_close = headers.close
        return chain

    @property
    def owner(self) -> bool:
        """True while this process owns the chain (rather than reaching it over Electrum)."""
        from eschaton.chain.embedded.chain import EmbeddedChain

        return isinstance(self.inner, EmbeddedChain)

    @property
    def requests(self) -> int | None:
        """Requests sent to a chain server since start (None while we own the chain ourselves)."""
        n = getattr(self.inner, "requests", None)
        return None if n is None else self._requests_before + int(n)

    def produce_blocks(self, interval: float, after_tx: float, to_script: Callable[[], bytes | None]) -> None:
        """Make blocks by themselves while this process owns the chain
        (``EmbeddedChain.start_block_production``); a client of another owner makes none."""
        self._production = (interval, after_tx, to_script)
        self._start_production()

    def _start_production(self) -> None:
        from eschaton.chain.embedded.chain import EmbeddedChain

        if self._production is not None and isinstance(self.inner, EmbeddedChain):
            self.inner.start_block_production(*self._production)

    @property
    def production(self) -> BlockProduction | None:
        """What this process's block production did (None: off, or another process owns the chain)."""
        return getattr(self.inner, "production", None)

    def _dispatch(self, ev: ChainEvent) -> None:
        for fn in list(self.listeners):
            try:
                fn(ev)
            except Exception:  # supervision boundary: one bad listener must not stop the others
                log.exception("chain listener failed on %r", ev)

    async def _reopen(self, generation: int) -> None:
        async with self._lock:
            if generation != self._generation:
                return  # another caller already reopened
            old = self.inner
            self._requests_before += int(getattr(old, "requests", 0))
            try:
                await old.close()
            except Exception:  # the old backend is gone anyway
                log.debug("closing the lost chain backend failed", exc_info=True)
            new = await self.opener()
            new.subscribe(self._dispatch)
            for op in self.outpoints:
                await new.watch_outpoint(op)
            for spk in self.scripts:
                await new.watch_script(spk)
            self.inner = new
            self._generation += 1
            self._start_production()
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
        if self._on_close is not None:
            self._on_close()

    # --- regtest extras (the demo and tests mine through whichever process owns the chain) ---

    async def mine(self, n: int, to_script: bytes | None = None) -> list[str]:
        return await self._call(lambda c: _extra(c, "mine")(n, to_script))


def _extra(c: ChainBackend, name: str) -> Any:
    fn = getattr(c, name, None)
    if fn is None:
        raise InvalidRequest(f"this chain backend has no {name}")
    return fn
