"""Blocks into the chain engine: submitted by peers or callers, or mined on the tip or a branch.

A submitted block is checked strictly (``scan_block``) before the kernel sees it, written ahead
to the index while the kernel validates it, and counts as accepted only when it is on the
kernel's active chain afterwards; a block that fails while connecting raises ``BlockRejected``
with the reason read from the kernel's log (rules in ``follow.py``).
"""
from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from typing import Any

import pbk

from eschaton.chain.embedded.blocks import MAX_FUTURE_SECONDS, build_block, median_time_past
from eschaton.chain.embedded.follow import KernelFollower
from eschaton.chain.embedded.mempool import Entry, is_final
from eschaton.chain.errors import BlockRejected, ChainError, InvalidRequest, TxDecodeError
from eschaton.chain.kernel import kernel_block
from eschaton.core.txcodec import Block, decode_block, decode_tx, scan_block

# Default coinbase destination: P2WSH(OP_TRUE), spendable by anyone who knows the trick; a
# caller that wants the coins passes ``to_script``.
OP_TRUE_P2WSH = bytes.fromhex("00204ae81572f06e1b88fd5ced7a1a000945432e83e1551e6f721ee9c00b8cc33260")

_REASON_PATTERNS = (
    re.compile(r"Block validation error: (.*)$"),
    re.compile(r"ConnectBlock .* failed, (.*)$"),
    re.compile(r"AcceptBlock FAILED \((.*)\)"),
    re.compile(r"CheckBlock: (.*)$"),
)


class Mining(KernelFollower):
    """Block submission and mining (``engine.ChainNode`` adds ownership and the mempool)."""

    _nonce: int
    production: BlockProduction | None
    """What automatic block production did (None: off); the owner's status answers show it."""

    # --- blocks ---------------------------------------------------------------------------------

    def _reason(self) -> tuple[str, str]:
        for line in self._log:
            for pat in _REASON_PATTERNS:
                m = pat.search(line)
                if m:
                    detail = m.group(1)
                    return re.split(r"[ ,(]", detail, maxsplit=1)[0], detail
        return "", ""

    def submit_block(self, raw: bytes) -> tuple[str, bool]:
        """Give a block to the kernel. Returns (hash, on the active chain). Raises BlockRejected."""
        return self.submit_blocks([raw])[0]

    def submit_blocks(self, raws: list[bytes]) -> list[tuple[str, bool]]:
        """Submit several blocks with one index commit at the end (the batch is the unit of
        durability, as a block import is). A rejected block raises ``BlockRejected`` after the
        blocks before it are committed."""
        out = []
        try:
            last = len(raws) - 1
            for i, raw in enumerate(raws):
                out.append(self._submit_one(raw, last=i == last))
                if i != last:
                    self._absorb()  # before the next block (the last one: _finish absorbs it)
        finally:
            self._finish()
        return out

    def _submit_one(self, raw: bytes, last: bool = False) -> tuple[str, bool]:
        raw = bytes(raw)
        try:
            bh, prev = scan_block(raw)  # strict layout before the kernel sees the bytes
        except TxDecodeError as e:
            raise BlockRejected("block-decode-failed", "") from e
        try:
            kblock = kernel_block(raw)
        except InvalidRequest:
            raise BlockRejected("block-decode-failed", bh) from None
        index = self.index
        assert index is not None
        self._log.clear()
        tip = index.tip()
        ahead = False
        blk: Block | None = None
        if tip is not None and prev == tip.hash:
            self._ahead.submit(self._write_ahead, raw, tip.height + 1, last)
            ahead = True
        else:
            blk = decode_block(raw)
        self._capturing = True
        failed = False
        try:
            self.cm.process_block(kblock)
        except pbk.ProcessBlockException:
            failed = True
        finally:
            self._capturing = False
            blk_ahead, written = self._ahead.result() if ahead else (None, False)
        if written and self._tip_logged(bh):
            # The kernel's last tip change made the block written ahead its tip. Its parent is
            # the index's tip, which was the kernel's too (index and kernel agree between
            # calls), so the kernel connected exactly that block at tip.height + 1 and nothing
            # is left to do. (No call into the kernel on this path: every Python step between
            # two kernel calls runs on a cache the kernel has just evicted.)
            assert tip is not None and blk_ahead is not None
            self._pending.connected.append((tip.height + 1, blk_ahead))
            return bh, True
        if blk is None:
            blk = blk_ahead
        if blk is not None:
            self._decoded[bh] = blk  # else _apply decodes the kernel's copy if it connected it
        try:
            if written:
                self._undo_write_ahead(bh)
            events = self._chain_events()
            self._apply_or_repair(events)
        finally:
            self._decoded.pop(bh, None)
        outcome = {b: k for k, _, b, _ in events}.get(bh)
        if outcome == "c":
            return bh, True  # the kernel connected it and did not disconnect it again
        entries = self.cm.block_tree_entries
        key = pbk.BlockHash(bytes.fromhex(bh)[::-1])
        entry = entries[key] if key in entries else None
        if entry is not None and entry in self._chain.block_tree_entries:
            return bh, True  # known before (a duplicate submission)
        reason, detail = self._reason()
        if failed or reason:
            raise BlockRejected(reason or "rejected", bh, detail)
        return bh, False

    def block_time(self, parent_mtp: int, now: int | None = None) -> int:
        now = int(self.clock()) if now is None else now
        t = max(parent_mtp + 1, now)
        if t > now + MAX_FUTURE_SECONDS - 60:
            raise ChainError("the chain's median time is too far ahead of the clock to mine")
        return t

    def _extra(self) -> bytes:
        self._nonce += 1
        return struct.pack("<QI", time.time_ns(), self._nonce)

    def mine(self, n: int, to_script: bytes | None = None) -> list[str]:
        """Mine ``n`` blocks on the tip, packing the mempool. Returns the block hashes."""
        if not isinstance(n, int) or n <= 0:
            raise InvalidRequest(f"number of blocks must be positive, got {n!r}")
        spk = OP_TRUE_P2WSH if to_script is None else bytes(to_script)
        hashes: list[str] = []
        try:
            self._mine_into(n, spk, hashes)
        finally:
            self._finish()
        return hashes

    def _mine_into(self, n: int, spk: bytes, hashes: list[str]) -> None:
        for i in range(n):
            tip = self.tip_row()
            height = tip.height + 1
            mtp = self.mtp_at(tip.height)
            t = self.block_time(mtp)

            def final(e: Entry, h: int = height, m: int = mtp) -> bool:
                return is_final(e.tx, h, m)

            entries = self.mempool.select(keep=final)
            raw = build_block(
                tip.hash, height, t, spk, [e.tx for e in entries], sum(e.fee for e in entries), self._extra()
            )
            bh, active = self._submit_one(raw, last=i == n - 1)
            self._absorb()  # the next block's template must not repeat these transactions
            if not active:
                raise BlockRejected("not-activated", bh)
            hashes.append(bh)

    def mine_branch(
        self, from_hash: str, n: int, txs: list[bytes] | None = None, to_script: bytes | None = None
    ) -> list[str]:
        """Mine ``n`` blocks on ``from_hash`` (any known block), the first holding ``txs``
        (raw, bypassing the mempool; the coinbase claims only the subsidy). For reorg tests."""
        if n <= 0:
            raise InvalidRequest("number of blocks must be positive")
        try:
            key = pbk.BlockHash(bytes.fromhex(from_hash)[::-1])
        except ValueError:
            raise InvalidRequest(f"bad block hash {from_hash!r}") from None
        entries = self.cm.block_tree_entries
        if key not in entries:
            raise InvalidRequest(f"unknown block {from_hash}")
        entry = entries[key]
        times = []
        e = entry
        for _ in range(11):
            times.append(int(e.block_header.timestamp.timestamp()))
            if e.height == 0:
                break
            e = e.previous
        times.reverse()
        height = entry.height
        prev = from_hash
        decoded = [decode_tx(t) for t in (txs or [])]
        spk = OP_TRUE_P2WSH if to_script is None else bytes(to_script)
        hashes = []
        for i in range(n):
            height += 1
            t = self.block_time(median_time_past(times))
            raw = build_block(prev, height, t, spk, decoded if i == 0 else [], 0, self._extra())
            prev, _ = self.submit_block(raw)
            times.append(t)
            hashes.append(prev)
        return hashes


# --- automatic block production (a village chain: ``[chain] block_interval_s``/``block_after_tx_s``)
#
# Rules: ``interval`` > 0 makes a block ``interval`` seconds after the last block (anyone's: a
# block typed by hand restarts the wait), so an idle chain still moves (locktimes mature, the
# tip's time stays near the clock). ``after_tx`` > 0 makes a block ``after_tx`` seconds after a
# transaction entered an empty mempool, or after a block left transactions behind in it, so a
# funding or closing transaction confirms soon without anyone mining. The schedule is pure:
# the driver (``EmbeddedChain.start_block_production``) feeds it the chain's updates and the
# clock and sleeps until ``deadline()``; there is no polling.

REASON_SCHEDULE = "schedule"
REASON_TRANSACTION = "transaction"


class BlockSchedule:
    """When the next block is due, from blocks and mempool changes seen at ``now``."""

    def __init__(self, interval: float, after_tx: float, now: float, mempool_size: int = 0) -> None:
        if interval < 0 or after_tx < 0:
            raise InvalidRequest("block intervals must be 0 (off) or positive")
        self.interval = interval
        self.after_tx = after_tx
        self.last_block = now
        self.tx_since: float | None = now if mempool_size else None

    def on_block(self, now: float, mempool_size: int) -> None:
        """A block connected (ours or not); ``mempool_size`` is what it left behind."""
        self.last_block = now
        self.tx_since = now if mempool_size else None

    def on_mempool(self, now: float, mempool_size: int) -> None:
        """Transactions came or went: the wait for a transaction starts when the first arrives."""
        if mempool_size == 0:
            self.tx_since = None
        elif self.tx_since is None:
            self.tx_since = now

    def deadline(self) -> float | None:
        """When the next block is due (None: never, until something changes)."""
        due = self._due()
        return min(at for at, _ in due) if due else None

    def due(self, now: float) -> str | None:
        """Why a block is due at ``now`` (``REASON_*``), or None if none is."""
        ready = [why for at, why in self._due() if at <= now]
        if REASON_TRANSACTION in ready:
            return REASON_TRANSACTION
        return ready[0] if ready else None

    def _due(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        if self.interval > 0:
            out.append((self.last_block + self.interval, REASON_SCHEDULE))
        if self.after_tx > 0 and self.tx_since is not None:
            out.append((self.tx_since + self.after_tx, REASON_TRANSACTION))
        return out


@dataclass(slots=True)
class BlockProduction:
    """Automatic block production on this chain: its settings and what it made since start."""

    interval_s: float
    after_tx_s: float
    produced: int = 0
    failures: int = 0
    last_height: int | None = None
    last_hash: str | None = None
    last_reason: str | None = None
    last_at: float | None = None  # unix seconds

    def to_json(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "after_tx_s": self.after_tx_s, "produced": self.produced,
                "failures": self.failures, "last_height": self.last_height, "last_hash": self.last_hash,
                "last_reason": self.last_reason, "last_at": self.last_at}
