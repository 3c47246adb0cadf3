"""The mempool: acceptance rules, conflict tracking and block-template selection.

Rules / theory of operation:
- ``accept`` applies, in bitcoind's order and with bitcoind's reason strings:
  decode (``TX decode failed``), context-free checks (``bad-txns-*``, ``coinbase``), standardness
  (``eschaton.chain.embedded.policy``), duplicates, finality (``non-final``), input lookup against
  the mempool and the chain (``bad-txns-inputs-missingorspent``), coinbase maturity
  (``bad-txns-premature-spend-of-coinbase``), BIP68 (``non-BIP68-final``), amounts
  (``bad-txns-in-belowout``), the 1 sat/vB relay floor (``min relay fee not met``), then every
  input through libbitcoinkernel (``mandatory-script-verify-flag-failed``) and the policy script
  rules the kernel lacks, LOW_S and MINIMALIF (``non-mandatory-script-verify-flag``).
- Replacement (full RBF, as bitcoind >= 28 by default): a transaction spending an input that a
  mempool transaction already spends replaces it, with its descendants, only if it pays a higher
  fee rate than every transaction it directly conflicts with, at least their fees plus their
  descendants' fees, and on top of that the relay fee for its own size (BIP125 rules 3, 4, 6);
  it may not add unconfirmed inputs the replaced ones did not spend (rule 2), nor spend an
  output of a transaction it replaces, nor evict more than 100 transactions (rule 5). Refusals
  use bitcoind's strings (``insufficient fee``, ``replacement-adds-unconfirmed``,
  ``bad-txns-spends-conflicting-tx``, ``too many potential replacements``). This is what lets a
  channel's newer version (higher fee by design) displace an older one already in the mempool.
- The mempool itself is in memory; the node persists every add/remove in the chain index's
  ``mempool`` table within the same SQLite transaction, and re-accepts the stored transactions
  on open.
- A connected block removes the transactions it confirms and everything that conflicts with it
  (with descendants). After a reorg the node re-validates the whole mempool, starting with the
  transactions of the disconnected blocks.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from eschaton.chain import kernel
from eschaton.chain.backend import BroadcastRefused
from eschaton.chain.embedded import policy
from eschaton.chain.embedded.index import Coin
from eschaton.chain.errors import InvalidRequest, ScriptVerifyError
from eschaton.core.txcodec import Tx

COINBASE_MATURITY = 100
LOCKTIME_THRESHOLD = 500_000_000
SEQUENCE_FINAL = 0xFFFFFFFF
SEQ_DISABLE = 1 << 31
SEQ_TYPE_TIME = 1 << 22
SEQ_MASK = 0xFFFF
MAX_MONEY = 21_000_000 * 100_000_000
MAX_BLOCK_WEIGHT = 4_000_000
MAX_REPLACEMENT_CANDIDATES = 100  # BIP125 rule 5


class ChainView(Protocol):
    """What acceptance needs from the confirmed chain."""

    def coin(self, txid: str, vout: int) -> Coin | None: ...

    def next_height(self) -> int: ...

    def tip_mtp(self) -> int: ...

    def mtp_at(self, height: int) -> int: ...

    def is_confirmed(self, txid: str) -> bool: ...


@dataclass(slots=True)
class Entry:
    tx: Tx
    fee: int
    added: int
    parents: set[str] = field(default_factory=set)
    replaced: list[str] = field(default_factory=list)  # mempool txids this one evicted (RBF)
    height: int = 0  # the chain's height when it was accepted (getmempoolentry)

    @property
    def feerate(self) -> float:
        return self.fee / self.tx.vsize


def _refuse(reason: str, detail: str = "") -> BroadcastRefused:
    return BroadcastRefused(reason, detail)


def is_final(tx: Tx, height: int, mtp: int) -> bool:
    """Bitcoin Core's ``IsFinalTx`` for a transaction in a block at ``height`` after ``mtp``."""
    if tx.locktime == 0:
        return True
    limit = height if tx.locktime < LOCKTIME_THRESHOLD else mtp
    if tx.locktime < limit:
        return True
    return all(i.sequence == SEQUENCE_FINAL for i in tx.inputs)


def check_basic(tx: Tx) -> None:
    """Context-free consensus checks (Core's ``CheckTransaction``)."""
    if not tx.inputs:
        raise _refuse("bad-txns-vin-empty")
    if not tx.outputs:
        raise _refuse("bad-txns-vout-empty")
    total = 0
    for out in tx.outputs:
        if out.value < 0:
            raise _refuse("bad-txns-vout-negative")
        if out.value > MAX_MONEY:
            raise _refuse("bad-txns-vout-toolarge")
        total += out.value
        if total > MAX_MONEY:
            raise _refuse("bad-txns-txouttotal-toolarge")
    seen = set()
    for i in tx.inputs:
        key = (i.prev_txid, i.prev_vout)
        if key in seen:
            raise _refuse("bad-txns-inputs-duplicate")
        seen.add(key)
    if tx.is_coinbase:
        raise _refuse("coinbase")
    if any(i.is_null for i in tx.inputs):
        raise _refuse("bad-txns-prevout-null")


class Mempool:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.spent: dict[tuple[str, int], str] = {}

    def __contains__(self, txid: str) -> bool:
        return txid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def coin(self, txid: str, vout: int) -> tuple[int, bytes] | None:
        """An output created by a mempool transaction (spent or not)."""
        e = self.entries.get(txid)
        if e is None or vout >= len(e.tx.outputs):
            return None
        out = e.tx.outputs[vout]
        return out.value, out.script_pubkey

    def accept(self, tx: Tx, view: ChainView, now: int) -> Entry:
        """Validate and add; raises ``BroadcastRefused``. The caller checks duplicates first."""
        check_basic(tx)
        try:
            policy.check_transaction(tx)
        except policy.PolicyViolation as e:
            raise _refuse(e.reason, e.detail) from None
        height = view.next_height()
        mtp = view.tip_mtp()
        if not is_final(tx, height, mtp):
            raise _refuse("non-final", f"nLockTime {tx.locktime}, next block {height}")
        spent: list[tuple[int, bytes]] = []
        parents: set[str] = set()
        coin_heights: list[int] = []
        conflicts: list[str] = []
        for txin in tx.inputs:
            prev = txin.prev_txid_hex
            key = (prev, txin.prev_vout)
            if key in self.spent and self.spent[key] not in conflicts:
                conflicts.append(self.spent[key])
            mem = self.coin(prev, txin.prev_vout)
            if mem is not None:
                spent.append(mem)
                parents.add(prev)
                coin_heights.append(height)
                continue
            c = view.coin(prev, txin.prev_vout)
            if c is None:
                raise _refuse("bad-txns-inputs-missingorspent", f"{prev}:{txin.prev_vout}")
            if c.coinbase and height - c.height < COINBASE_MATURITY:
                raise _refuse(
                    "bad-txns-premature-spend-of-coinbase", f"tried to spend coinbase at depth {height - c.height}"
                )
            spent.append((c.value, c.spk))
            coin_heights.append(c.height)
        self._check_bip68(tx, coin_heights, height, mtp, view)
        value_in = sum(v for v, _ in spent)
        value_out = sum(o.value for o in tx.outputs)
        if value_in < value_out:
            raise _refuse("bad-txns-in-belowout", f"value in ({value_in}) < value out ({value_out})")
        fee = value_in - value_out
        min_fee = policy.MIN_RELAY_FEE * tx.vsize // 1000
        if fee < min_fee:
            raise _refuse("min relay fee not met", f"{fee} < {min_fee}")
        replaced = self._check_replacement(tx, fee, conflicts, parents) if conflicts else []
        try:
            kernel.verify_tx(tx, spent)
        except ScriptVerifyError as e:
            raise _refuse(e.reason, e.detail) from None
        except InvalidRequest as e:  # amounts out of range in the spent coins
            raise _refuse("bad-txns-inputvalues-outofrange", str(e)) from None
        for txin, (_, spk) in zip(tx.inputs, spent, strict=True):
            try:
                policy.check_input_witness(txin, spk)
            except policy.PolicyViolation as e:
                raise _refuse(e.reason, e.detail) from None
        entry = Entry(tx, fee, now, parents, self.remove(replaced), height - 1)
        self.entries[tx.txid] = entry
        for txin in tx.inputs:
            self.spent[(txin.prev_txid_hex, txin.prev_vout)] = tx.txid
        return entry

    def _check_replacement(self, tx: Tx, fee: int, conflicts: list[str], parents: set[str]) -> list[str]:
        """BIP125 as bitcoind applies it with full RBF; returns every txid to evict."""
        evict = self.descendants(conflicts)
        if len(evict) > MAX_REPLACEMENT_CANDIDATES:
            raise _refuse("too many potential replacements",
                          f"rejecting replacement {tx.txid}; too many potential replacements "
                          f"({len(evict)} > {MAX_REPLACEMENT_CANDIDATES})")
        evicted = set(evict)
        if parents & evicted:
            raise _refuse("bad-txns-spends-conflicting-tx",
                          f"{tx.txid} spends conflicting transaction {sorted(parents & evicted)[0]}")
        old_parents = {p for c in conflicts for p in self.entries[c].parents}
        if parents - old_parents:
            raise _refuse("replacement-adds-unconfirmed",
                          f"replacement {tx.txid} adds unconfirmed input, idx {sorted(parents - old_parents)[0]}")
        rate = fee / tx.vsize
        for c in conflicts:
            old = self.entries[c]
            if rate <= old.feerate:
                raise _refuse("insufficient fee", f"rejecting replacement {tx.txid}; new feerate "
                              f"{rate:.8f} <= old feerate {old.feerate:.8f}")
        old_fees = sum(self.entries[t].fee for t in evict)
        if fee < old_fees:
            raise _refuse("insufficient fee",
                          f"rejecting replacement {tx.txid}, less fees than conflicting txs; {fee} < {old_fees}")
        relay = policy.MIN_RELAY_FEE * tx.vsize // 1000
        if fee - old_fees < relay:
            raise _refuse("insufficient fee", f"rejecting replacement {tx.txid}, not enough additional fees "
                          f"to relay; {fee - old_fees} < {relay}")
        return evict

    @staticmethod
    def _check_bip68(tx: Tx, coin_heights: list[int], height: int, mtp: int, view: ChainView) -> None:
        if tx.version < 2:
            return
        min_height = -1
        min_time = -1
        for txin, ch in zip(tx.inputs, coin_heights, strict=True):
            seq = txin.sequence
            if seq & SEQ_DISABLE:
                continue
            if seq & SEQ_TYPE_TIME:
                coin_time = view.mtp_at(max(ch - 1, 0))
                min_time = max(min_time, coin_time + ((seq & SEQ_MASK) << 9) - 1)
            else:
                min_height = max(min_height, ch + (seq & SEQ_MASK) - 1)
        if min_height >= height or min_time >= mtp:
            raise _refuse("non-BIP68-final")

    # --- removal ------------------------------------------------------------------------------

    def descendants(self, txids: Iterable[str]) -> list[str]:
        out: list[str] = []
        todo = [t for t in txids if t in self.entries]
        seen = set(todo)
        while todo:
            t = todo.pop()
            out.append(t)
            e = self.entries[t]
            for vout in range(len(e.tx.outputs)):
                child = self.spent.get((t, vout))
                if child is not None and child not in seen:
                    seen.add(child)
                    todo.append(child)
        return out

    def remove(self, txids: Iterable[str]) -> list[str]:
        removed = []
        for t in txids:
            e = self.entries.pop(t, None)
            if e is None:
                continue
            removed.append(t)
            for txin in e.tx.inputs:
                key = (txin.prev_txid_hex, txin.prev_vout)
                if self.spent.get(key) == t:
                    del self.spent[key]
        return removed

    def remove_for_block(self, txs: Iterable[Tx]) -> tuple[list[str], list[str]]:
        """Drop confirmed transactions and conflicts (with descendants): (confirmed, evicted)."""
        confirmed: list[str] = []
        conflicts: list[str] = []
        for tx in txs:
            if tx.txid in self.entries:
                confirmed.extend(self.remove([tx.txid]))
                for e in self.entries.values():
                    e.parents.discard(tx.txid)
            if tx.is_coinbase:
                continue
            for txin in tx.inputs:
                other = self.spent.get((txin.prev_txid_hex, txin.prev_vout))
                if other is not None and other != tx.txid:
                    conflicts.append(other)
        evicted = self.remove(self.descendants(conflicts))
        return confirmed, evicted

    def clear(self) -> list[Entry]:
        old = list(self.entries.values())
        self.entries.clear()
        self.spent.clear()
        return old

    # --- mining -------------------------------------------------------------------------------

    def select(self, max_weight: int = MAX_BLOCK_WEIGHT - 8_000, keep: Callable[[Entry], bool] | None = None) -> list[Entry]:
        """Transactions for a block: highest fee rate first, parents always before children."""
        order = sorted(self.entries.values(), key=lambda e: (-e.feerate, e.added))
        chosen: list[Entry] = []
        chosen_ids: set[str] = set()
        weight = 0
        progress = True
        while progress:
            progress = False
            for e in order:
                t = e.tx.txid
                if t in chosen_ids or not e.parents <= chosen_ids:
                    continue
                if keep is not None and not keep(e):
                    continue
                if weight + e.tx.weight > max_weight:
                    continue
                chosen.append(e)
                chosen_ids.add(t)
                weight += e.tx.weight
                progress = True
        return chosen
