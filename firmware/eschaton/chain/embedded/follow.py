"""How the chain engine's SQLite index follows the kernel's active chain, and tells listeners.

Rules / theory of operation:
- The kernel validates and decides the active chain. After ``process_block`` returns, the
  connects and disconnects that take the index to the kernel's active chain are worked out by
  comparing the two (``_chain_events``: disconnect the index's blocks above the fork, top first,
  then connect the kernel's blocks in order) and applied to the index in one SQLite
  transaction, committed together with the mempool changes once per call (``submit_block``,
  ``submit_blocks``, ``mine(n)``, ``broadcast``): the call is the unit of notification (one
  ``NodeUpdate`` per call, after everything it changed is committed). If applying fails, the
  transaction is rolled back and the index reconciled with the kernel.
- Why no ``block_connected``/``block_disconnected`` callbacks: each one is a call from the
  kernel's C code back into Python in the middle of validation, which must take the GIL, and
  the write-ahead worker (below) holds the GIL for much of that time. Measured on empty blocks,
  the callback alone cost ~30 us per block, as much as a tenth of the kernel's own time; the
  comparison costs ~9 us on the common path (the kernel's new tip is the block just written
  ahead) and walks the chains only when something else happened (a reorg, a side branch).
- Bytes are checked strictly (``scan_block``, the same rules as ``decode_block``) before the
  kernel sees them: the kernel's parser ignores trailing data, ours refuses it.
- Write-ahead indexing: a block that extends the index tip is decoded and written to the index by
  a worker thread *while* the kernel validates it (ctypes and sqlite3 both release the GIL, so
  on two or more cores the index work overlaps the kernel's), in a savepoint of the call's
  transaction; for the call's last block the worker also commits. If the kernel's new tip is
  then exactly that block, on the old tip, nothing is left to do; otherwise the block is taken
  out again with the index's own undo data (``disconnect_tip``) and the index follows the
  kernel's chain (``_chain_events``).
  So the committed index can briefly hold a block the kernel has not yet accepted. That is
  safe for the same reason a kernel that lost blocks in a crash is: on open, ``reconcile``
  feeds every index block above the kernel's tip back to the kernel, and where the kernel
  refuses one the index is rolled back to the kernel's chain. Callers and listeners never see
  such a block: the call returns, and notifies, only after the kernel's verdict.
- A block counts as accepted only when it is on the kernel's active chain afterwards. A block
  that fails while connecting does not raise in the kernel; its reason is read from the kernel
  log (``Block validation error: ...``) and raised as ``BlockRejected``.
- Reconciling (on open, and after an error applying a change): find the last height where index and
  kernel agree. If the index is longer (the kernel flushes lazily and lost blocks in a crash),
  feed the stored raw blocks back to the kernel; otherwise roll the index back with its own
  undo data and connect the kernel's blocks (read from ``cm.blocks`` ).
- Listeners receive one ``NodeUpdate`` per call, after everything the call changed is committed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pbk

from eschaton.chain.backend import BroadcastRefused, Tip
from eschaton.chain.embedded.ahead import AheadWorker
from eschaton.chain.embedded.blocks import median_time_past
from eschaton.chain.embedded.index import BlockRow, ChainIndex, Coin, IndexInconsistent
from eschaton.chain.embedded.mempool import Mempool
from eschaton.chain.errors import ChainError, TxDecodeError
from eschaton.chain.kernel import kernel_block
from eschaton.core.txcodec import Block, Tx, decode_block
from eschaton.store.sqlite import Error as SqliteError

log = logging.getLogger(__name__)

_UPDATE_TIP = "UpdateTip: new best="  # the kernel's log line for each tip change


@dataclass(frozen=True, slots=True)
class NodeUpdate:
    """One committed change: blocks disconnected (top first), connected (in order), mempool adds."""

    tip: Tip
    disconnected: tuple[tuple[int, str], ...] = ()
    connected: tuple[tuple[int, Block], ...] = ()
    mempool_added: tuple[Tx, ...] = ()
    mempool_removed: tuple[str, ...] = ()

    @property
    def fork_height(self) -> int | None:
        return min(h for h, _ in self.disconnected) - 1 if self.disconnected else None


@dataclass(slots=True)
class _Batch:
    """Changes absorbed since the last commit."""

    connected: list[tuple[int, Block]] = field(default_factory=list)
    disconnected: list[tuple[int, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


# A change the index must follow: ("c" connect | "d" disconnect, height, block hash, the kernel's
# entry for a connect).
Event = tuple[str, int, str, "pbk.BlockTreeEntry | None"]


@dataclass(slots=True)
class _Pending:
    connected: list[tuple[int, Block]] = field(default_factory=list)
    disconnected: list[tuple[int, str, bytes]] = field(default_factory=list)


class KernelFollower:
    """The state of a chain engine and how its index follows the kernel (``engine.ChainNode``
    sets it up; ``mining.Mining`` feeds it blocks)."""

    chain_dir: Path
    clock: Callable[[], float]
    index: ChainIndex | None
    listeners: list[Callable[[NodeUpdate], None]]
    mempool: Mempool
    cm: pbk.ChainstateManager
    _chain: pbk.Chain
    _pending: _Pending
    _batch: _Batch
    _decoded: dict[str, Block]
    _tip_memo: tuple[BlockRow, Tip] | None
    _ahead: AheadWorker
    _log: list[str]
    _capturing: bool

    # --- the kernel's log (rejection reasons) ---------------------------------------------------

    def _on_log(self, msg: str) -> None:
        if self._capturing:
            self._log.append(msg.rstrip("\n"))

    def _tip_logged(self, bh: str) -> bool:
        """Whether the kernel's last tip change during this call made ``bh`` its tip. The kernel
        logs ``UpdateTip: new best=<hash>`` on every connect and disconnect, and the line is
        already here (captured for rejection reasons), so this costs no call into the kernel:
        asking the kernel's chain for the hash at a height costs 10-20 us per block. Only a
        shortcut: if the format ever changes, the answer is False and ``_chain_events`` finds
        the same result by comparing the chains."""
        for line in reversed(self._log):
            i = line.find(_UPDATE_TIP)
            if i >= 0:
                return line.startswith(bh, i + len(_UPDATE_TIP))
        return False

    # --- applying the kernel's chain to the index ---------------------------------------------

    def _kernel_hash_at(self, height: int) -> str:
        """Hash of the kernel's active-chain block at ``height`` ("" above its tip)."""
        chain = self._chain
        if height > chain.height:
            return ""
        return str(chain.block_tree_entries[height].block_hash)

    def _fork_height(self, hi: int, hk: int) -> int:
        """The last height where the index (tip ``hi``) and the kernel (tip ``hk``) hold the same
        block; -1 if none."""
        assert self.index is not None
        fork = min(hi, hk)
        while fork >= 0:
            row = self.index.block_at(fork)
            if row is not None and row.hash == self._kernel_hash_at(fork):
                break
            fork -= 1
        return fork

    def _chain_events(self) -> list[Event]:
        """What takes the index to the kernel's active chain: the index's blocks above the last
        height where both agree, as disconnects (top first), then the kernel's blocks from there,
        as connects (in order)."""
        assert self.index is not None
        hk = self._chain.height
        itip = self.index.tip()
        hi = itip.height if itip is not None else -1
        fork = self._fork_height(hi, hk)
        events: list[Event] = []
        for h in range(hi, fork, -1):
            row = self.index.block_at(h)
            assert row is not None
            events.append(("d", h, row.hash, None))
        entries = self._chain.block_tree_entries
        for h in range(fork + 1, hk + 1):
            entry = entries[h]
            events.append(("c", h, str(entry.block_hash), entry))
        return events

    def _apply(self, events: list[Event]) -> None:
        """Apply connects/disconnects to the index (inside one SQLite transaction)."""
        assert self.index is not None
        for kind, height, bh, entry in events:
            if kind == "c":
                tip = self.index.tip()
                row = self.index.block_at(height) if tip is not None and height <= tip.height else None
                if row is not None and row.hash == bh:
                    continue  # replaying a block the index already holds
                blk = self._decoded.get(bh)
                if blk is None:
                    assert entry is not None
                    blk = decode_block(bytes(self.cm.blocks[entry]))
                self.index.begin()
                self.index.connect_block(height, blk)
                self._pending.connected.append((height, blk))
            else:
                tip = self.index.tip()
                if tip is None or tip.hash != bh:
                    if self.index.block_by_hash(bh) is not None:
                        raise ChainError(f"kernel disconnected {bh}, which is not the index tip")
                    continue  # a block the index never had (kernel-only branch during repair)
                self.index.begin()
                row, raw = self.index.disconnect_tip()
                self._pending.disconnected.append((row.height, row.hash, raw))

    def _apply_or_repair(self, events: list[Event]) -> None:
        assert self.index is not None
        try:
            self._apply(events)
        except (ChainError, IndexInconsistent, TxDecodeError, AssertionError) as err:
            # Blocks absorbed earlier in this batch are rolled back too; reconcile re-reads them
            # from the kernel, and their events are not sent (the caller gets the error).
            self._pending = _Pending()
            self._batch = _Batch()
            self.index.rollback()
            self.reconcile()
            self._revalidate_mempool([])
            self.index.commit()
            raise ChainError(f"chain index repaired after an error: {err}") from err

    def _write_ahead(self, raw: bytes, height: int, commit: bool) -> tuple[Block | None, bool]:
        """Worker thread, while the kernel validates ``raw``: decode it, index it on the tip (in a
        savepoint of the call's transaction) and, for the call's last block, commit. Returns
        (the decoded block, whether it was indexed). See the module doc."""
        assert self.index is not None
        idx = self.index
        try:
            blk = decode_block(raw)
        except TxDecodeError:  # cannot happen after scan_block; _apply decodes the kernel's copy
            return None, False
        # A savepoint only inside a batch's open transaction: earlier blocks of the call stay.
        nested = idx.in_tx
        try:
            if nested:
                idx.savepoint("ahead")
            else:
                idx.begin()
        except SqliteError:
            return blk, False
        try:
            idx.connect_block(height, blk)
            if nested:
                idx.release("ahead")
        except (IndexInconsistent, SqliteError):
            # e.g. it spends a coin the index does not have: the kernel refuses it too, and the
            # caller applies whatever the kernel reports instead
            if nested:
                idx.rollback_to("ahead")
            else:
                idx.rollback()
            return blk, False
        if commit:
            idx.commit()  # an error here reaches the caller through the future
        # The notification after the kernel's verdict needs the new tip with its median time
        # past; worked out here, while the kernel validates, it is one identity check later.
        self.tip()
        return blk, True

    def _undo_write_ahead(self, bh: str) -> None:
        """The kernel did not connect a block written ahead: take it out again with the index's
        own undo data (committed with the rest of the call)."""
        assert self.index is not None
        self.index.begin()
        tip = self.index.tip()
        if tip is not None and tip.hash == bh:
            self.index.disconnect_tip()

    # --- commit / events --------------------------------------------------------------------

    def _absorb(self) -> None:
        """Fold what was just applied to the index into the open batch and update the mempool
        (inside the same SQLite transaction). Several blocks can be absorbed before one commit."""
        assert self.index is not None
        pending = self._pending
        if not pending.disconnected:
            if not pending.connected:
                return
            if not self.mempool.entries:
                # The common case, a block or more on the tip and an empty pool: nothing to drop,
                # and no objects built (this runs between two kernel calls on every block).
                self._batch.connected += pending.connected
                pending.connected.clear()
                return
        self._pending = _Pending()
        batch = self._batch
        removed: list[str] = []
        if pending.disconnected:
            resurrect: list[Tx] = []
            for _, _, raw in sorted(pending.disconnected):
                resurrect.extend(decode_block(raw).txs[1:])
            self.index.begin()
            removed = self._revalidate_mempool(resurrect)
            for h, bh, _ in pending.disconnected:
                # A block connected earlier in this batch and now gone is simply not reported.
                kept = [(ch, blk) for ch, blk in batch.connected if blk.header.hash != bh]
                if len(kept) == len(batch.connected):
                    batch.disconnected.append((h, bh))
                batch.connected = kept
        if pending.connected:
            if not pending.disconnected:
                for _, blk in pending.connected:
                    confirmed, evicted = self.mempool.remove_for_block(blk.txs)
                    removed += confirmed + evicted
                if removed:
                    self.index.begin()
                    self.index.mempool_remove(removed)
            batch.connected.extend(pending.connected)
        batch.removed.extend(removed)

    def _finish(self, added: tuple[Tx, ...] = ()) -> NodeUpdate | None:
        """Commit the batch (index + mempool) and tell the listeners. (Written to do nothing it
        need not on the path of a plain block: it runs after every kernel call, on a cache the
        kernel has just evicted.)"""
        index = self.index
        assert index is not None
        pending = self._pending
        if pending.connected or pending.disconnected:
            self._absorb()
        if index.in_tx:
            index.commit()
        batch = self._batch
        if not (batch.connected or batch.disconnected or batch.removed or added):
            return None
        self._batch = _Batch()
        if not self.listeners or not (batch.connected or batch.disconnected or added):
            return None  # (nobody to tell: no update is built)
        update = NodeUpdate(
            tip=self.tip(),
            disconnected=tuple(batch.disconnected),
            connected=tuple(batch.connected),
            mempool_added=added,
            mempool_removed=tuple(batch.removed),
        )
        for listener in list(self.listeners):
            try:
                listener(update)
            except Exception:  # supervision boundary: the change is committed; a listener bug must not undo it
                log.exception("chain update listener failed")
        return update

    # --- chain state --------------------------------------------------------------------------

    def tip(self) -> Tip:
        assert self.index is not None
        row = self.index.tip()
        assert row is not None
        memo = self._tip_memo
        if memo is not None and memo[0] is row:  # the index keeps its tip row until the tip moves
            return memo[1]
        tip = Tip(row.height, row.hash, self.mtp_at(row.height))
        self._tip_memo = (row, tip)
        return tip

    def tip_row(self) -> BlockRow:
        assert self.index is not None
        row = self.index.tip()
        assert row is not None
        return row

    def mtp_at(self, height: int) -> int:
        assert self.index is not None
        tip = self.index.tip()
        if tip is not None and tip.height == height:
            return median_time_past(self.index.tip_times())
        return median_time_past(self.index.last_times(height))

    # ChainView for the mempool
    def coin(self, txid: str, vout: int) -> Coin | None:
        assert self.index is not None
        return self.index.coin(txid, vout)

    def next_height(self) -> int:
        return self.tip_row().height + 1

    def tip_mtp(self) -> int:
        return self.mtp_at(self.tip_row().height)

    def is_confirmed(self, txid: str) -> bool:
        assert self.index is not None
        return self.index.tx_location(txid) is not None

    def _kernel_tip(self) -> tuple[int, str]:
        h = self._chain.height
        return h, self._kernel_hash_at(h)

    # --- repair ---------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring index and kernel to the same tip (see module doc)."""
        assert self.index is not None
        hk, khash = self._kernel_tip()
        itip = self.index.tip()
        if itip is not None and (itip.height, itip.hash) == (hk, khash):
            return
        hi = itip.height if itip else -1
        fork = self._fork_height(hi, hk)
        if hi > hk:
            # The kernel lost blocks the index had committed: give them back, while it takes them.
            for h in range(fork + 1, hi + 1):
                row = self.index.block_at(h)
                raw = self.index.raw_block(h)
                assert raw is not None and row is not None
                try:
                    self.cm.process_block(kernel_block(raw))
                except pbk.ProcessBlockException:
                    break
                if self._kernel_tip() != (h, row.hash):
                    break
            hk, khash = self._kernel_tip()
            itip = self.index.tip()
            if itip is not None and (itip.height, itip.hash) == (hk, khash):
                return
        # Otherwise the kernel is authoritative: roll the index back and follow it.
        self.index.begin()
        while (t := self.index.tip()) is not None and t.height > fork:
            self.index.disconnect_tip()
        entries = self._chain.block_tree_entries
        for h in range(fork + 1, hk + 1):
            entry = entries[h]
            self.index.connect_block(h, decode_block(bytes(self.cm.blocks[entry])))
        self.index.commit()

    def audit(self, depth: int = 10) -> list[str]:
        """Compare the index with the kernel: same tip, and for the last ``depth`` blocks the
        spent coins recorded in ``spends`` equal the kernel's undo data
        (``cm.block_spent_outputs``). Returns the differences (empty when consistent)."""
        assert self.index is not None
        problems: list[str] = []
        hk, khash = self._kernel_tip()
        itip = self.index.tip()
        if itip is None or (itip.height, itip.hash) != (hk, khash):
            return [f"tips differ: index {itip}, kernel {hk} {khash}"]
        chain = self._chain
        for height in range(max(1, hk - depth + 1), hk + 1):
            entry = chain.block_tree_entries[height]
            raw = self.index.raw_block(height)
            assert raw is not None
            blk = decode_block(raw)
            undo = self.cm.block_spent_outputs[entry]
            for tx, kspent in zip(blk.txs[1:], undo.transactions, strict=True):
                for txin, coin in zip(tx.inputs, kspent.coins, strict=True):
                    row = self.index.db.execute(
                        "SELECT spender, value, spk, coin_height, coinbase FROM spends WHERE txid=? AND vout=?",
                        (txin.prev_txid_hex, txin.prev_vout),
                    ).fetchone()
                    out = coin.output
                    want = (tx.txid, out.amount, bytes(out.script_pubkey), coin.confirmation_height, coin.is_coinbase)
                    got = None if row is None else (row[0], row[1], bytes(row[2]), row[3], bool(row[4]))
                    if got != want:
                        problems.append(f"block {height} input {txin.prev_txid_hex}:{txin.prev_vout}: {got} != {want}")
        return problems

    def _revalidate_mempool(self, first: list[Tx]) -> list[str]:
        """Re-accept ``first`` (disconnected-block txs) then the old mempool; returns dropped
        txids. Must run inside an index transaction."""
        assert self.index is not None
        old = self.mempool.clear()
        dropped = []
        now = int(self.clock())
        candidates = [(t, now) for t in first] + [(e.tx, e.added) for e in old]
        for tx, added in candidates:
            if tx.txid in self.mempool or self.index.tx_location(tx.txid) is not None:
                continue
            try:
                self.mempool.accept(tx, self, added)
            except BroadcastRefused:
                dropped.append(tx.txid)
        self.index.mempool_clear()
        for e in self.mempool.entries.values():
            self.index.mempool_add(e.tx, e.added)
        return dropped
