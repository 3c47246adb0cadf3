"""The embedded regtest chain engine: libbitcoinkernel + the SQLite index + the mempool + a miner.

``ChainNode`` is put together from ``follow.KernelFollower`` (the index follows the kernel's
active chain; the rules of operation are there) and ``mining.Mining`` (blocks submitted or
mined); here are the ownership of the chain directory, the mempool and the lookups.

Rules:
- One process owns ``<datadir>/chain/`` (an exclusive ``flock`` on ``chain/LOCK``); others reach
  it through the Electrum server (``eschaton.chain.electrum``).
- Not thread-safe: call it from one thread (the asyncio loop).
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

import pbk

from eschaton.chain.backend import BroadcastRefused
from eschaton.chain.embedded.ahead import AheadWorker
from eschaton.chain.embedded.follow import NodeUpdate, _Batch, _Pending
from eschaton.chain.embedded.index import ChainIndex
from eschaton.chain.embedded.mempool import Mempool
from eschaton.chain.embedded.mining import OP_TRUE_P2WSH, Mining
from eschaton.chain.errors import ChainError, ChainLocked, TxDecodeError
from eschaton.core.txcodec import decode_tx
from eschaton.store.private import private_dir, tighten_tree

__all__ = ["OP_TRUE_P2WSH", "ChainLock", "ChainNode", "NodeUpdate"]


class ChainLock:
    """An exclusive advisory lock on ``<datadir>/chain/LOCK`` held for the life of the owner."""

    def __init__(self, chain_dir: Path) -> None:
        private_dir(chain_dir)
        self.path = chain_dir / "LOCK"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ChainLocked(f"another process owns the chain in {chain_dir}") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    @staticmethod
    def held(chain_dir: Path) -> bool:
        """True if some process holds the lock (tested without taking it for long)."""
        path = chain_dir / "LOCK"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops our lock if we got it
        return False

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ChainNode(Mining):
    def __init__(self, datadir: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.chain_dir = Path(datadir) / "chain"
        self.clock = clock
        self.lock = ChainLock(self.chain_dir)
        self.index = None
        self.listeners = []
        self.mempool = Mempool()
        self._pending = _Pending()
        self._batch = _Batch()
        self._decoded = {}
        self._tip_memo = None  # tip() for the index's current tip row
        self._ahead = AheadWorker("chain-index")
        self._log = []
        self._capturing = False
        self._nonce = 0
        self.production = None
        try:
            self.index = ChainIndex(self.chain_dir / "index.sqlite")
            self._log_conn = pbk.LoggingConnection(self._on_log)
            self._ctx = pbk.make_context(pbk.ChainType.REGTEST)  # no validation callbacks (module doc)
            kdir = private_dir(self.chain_dir / "kernel")
            try:
                self.cm = pbk.ChainstateManager(
                    pbk.ChainstateManagerOptions(self._ctx, str(kdir), str(kdir / "blocks"))
                )
            except RuntimeError as e:
                raise ChainError(f"the kernel could not open {kdir}: {e}") from e
            # The kernel creates its files with the process umask: tighten them (and those of
            # an older install) now; the entry point's umask keeps later ones private.
            tighten_tree(self.chain_dir)
            self._chain = self.cm.get_active_chain()  # a live view: always the current active chain
            # (A fresh chain connects genesis inside the constructor; reconcile indexes it.)
            self.reconcile()
            self._load_mempool()
        except BaseException:
            self.close()
            raise

    # --- transactions -------------------------------------------------------------------------

    def broadcast(self, raw: bytes) -> str:
        """Accept into the mempool; returns the txid or raises BroadcastRefused."""
        assert self.index is not None
        try:
            tx = decode_tx(raw)
        except TxDecodeError as e:
            raise BroadcastRefused("TX decode failed", e.detail) from None
        if tx.txid in self.mempool:
            return tx.txid  # as bitcoind: re-broadcasting a mempool transaction is not an error
        if self.index.tx_location(tx.txid) is not None and self.index.has_outputs_of(tx.txid):
            raise BroadcastRefused("txn-already-known", "transaction already in block chain")
        now = int(self.clock())
        entry = self.mempool.accept(tx, self, now)
        self.index.begin()
        if entry.replaced:  # full RBF evicted these from the (in-memory) mempool already
            self.index.mempool_remove(entry.replaced)
            self._batch.removed.extend(entry.replaced)  # and the update reports them
        self.index.mempool_add(tx, now)
        self._finish(added=(tx,))
        return tx.txid

    def _load_mempool(self) -> None:
        assert self.index is not None
        self.index.begin()
        txs = []
        for _txid, raw, added in self.index.mempool_rows():
            try:
                txs.append((decode_tx(raw), added))
            except TxDecodeError:
                continue
        self.mempool.clear()
        for tx, added in txs:
            if self.index.tx_location(tx.txid) is not None:
                continue
            try:
                self.mempool.accept(tx, self, added)
            except BroadcastRefused:
                continue
        self.index.mempool_clear()
        for e in self.mempool.entries.values():
            self.index.mempool_add(e.tx, e.added)
        self.index.commit()

    # --- lookups ------------------------------------------------------------------------------

    def get_transaction(self, txid: str) -> bytes | None:
        assert self.index is not None
        e = self.mempool.entries.get(txid)
        if e is not None:
            return e.tx.raw
        return self.index.raw_tx(txid)

    def close(self) -> None:
        """Flush the kernel, close the index, release the lock. Idempotent."""
        ahead = getattr(self, "_ahead", None)
        if ahead is not None:
            ahead.close()
        cm = getattr(self, "cm", None)
        if cm is not None:
            cm.__exit__(None, None, None)  # destroys the manager, which flushes the chainstate
            self.cm = None
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.__exit__(None, None, None)
            self._ctx = None
        conn = getattr(self, "_log_conn", None)
        if conn is not None:
            conn.__exit__(None, None, None)
            self._log_conn = None
        if self.index is not None:
            self.index.rollback()
            self.index.close()
            self.index = None
        self.lock.release()
