"""The chain index: active-chain blocks, transactions, UTXOs, spenders and the mempool, in SQLite.

Rules / theory of operation:
- The kernel (libbitcoinkernel) validates; this index answers the questions the kernel cannot
  (UTXO by script, who spent an outpoint, where a transaction confirmed).
- One SQLite file in WAL mode (opened by ``eschaton.store.sqlite.open_db``, schema version in
  ``PRAGMA user_version``), ``synchronous=NORMAL``: a committed block survives a process crash
  (WAL is durable against application crashes); after a power loss the last few commits may be
  lost, which the node sees as a short reorg on regtest. Checkpoints (the fsyncs) run on a
  thread of their own (``wal.Checkpointer``).
- The index is also the durable log of the active chain: the raw block is stored with each block
  row. The kernel flushes its chainstate lazily, so after a SIGKILL its tip can be behind the
  index; ``ChainNode`` then re-feeds the stored blocks to the kernel.
- ``connect_block`` removes spent coins with one batched ``DELETE .. RETURNING`` per block (coins
  created and spent in the same block never reach SQL) and records them in
  ``spends`` together with the spender: that row is both the spender index and the undo data
  that ``disconnect_tip`` uses to restore the coin. Keeping undo here (rather than reading
  ``cm.block_spent_outputs`` on disconnect) lets the index roll back blocks that the kernel lost
  in a crash, and costs no ctypes calls per input. ``ChainNode.audit`` checks these rows against
  the kernel's undo data (``cm.block_spent_outputs``).
- UTXOs are indexed by Electrum's script hash (sha256 of the script), which serves both
  ``list_unspent(script)`` and ``blockchain.scripthash.listunspent``.
- A script hash's history (Electrum's ``get_history`` and status hash: every active-chain
  transaction paying to or spending from the script) needs no table of its own: the funding
  transactions are those of its unspent coins (``utxos``) and of its spent ones (``spends``), the
  spending transactions are the spenders in ``spends``; ``spends`` carries the spent coin's
  script hash, indexed, from schema 2. So a block without spends writes nothing more for it
  (an extra table cost every empty block one more B-tree page per commit), and it follows
  reorgs with the rows it is made of.
- Raw transactions are not duplicated: ``txs`` stores (offset, length) into the block's raw bytes.
- Provably unspendable outputs (OP_RETURN, scripts over 10 000 bytes) and the genesis coinbase
  never enter the UTXO set, as in Bitcoin Core.
- All writes happen inside ``begin()`` .. ``commit()``/``rollback()`` driven by the node.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eschaton.chain.embedded.wal import Checkpointer
from eschaton.core.txcodec import Block, Tx, compact_size, decode_block
from eschaton.store.sqlite import Connection, Migration, open_db, run_script

_sha = hashlib.sha256
MAX_SCRIPT_SIZE = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(
    height INTEGER PRIMARY KEY, hash TEXT UNIQUE NOT NULL, prev TEXT NOT NULL,
    time INTEGER NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs(
    txid TEXT PRIMARY KEY, height INTEGER NOT NULL, pos INTEGER NOT NULL,
    off INTEGER NOT NULL, len INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS utxos(
    txid TEXT NOT NULL, vout INTEGER NOT NULL, value INTEGER NOT NULL, spk BLOB NOT NULL,
    height INTEGER NOT NULL, coinbase INTEGER NOT NULL, sh BLOB NOT NULL,
    PRIMARY KEY(txid, vout)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS utxos_sh ON utxos(sh);
CREATE TABLE IF NOT EXISTS spends(
    txid TEXT NOT NULL, vout INTEGER NOT NULL, spender TEXT NOT NULL, input_index INTEGER NOT NULL,
    height INTEGER NOT NULL, value INTEGER NOT NULL, spk BLOB NOT NULL,
    coin_height INTEGER NOT NULL, coinbase INTEGER NOT NULL,
    PRIMARY KEY(txid, vout)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mempool(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, txid TEXT UNIQUE NOT NULL, raw BLOB NOT NULL,
    added INTEGER NOT NULL);
"""


class IndexInconsistent(Exception):
    """The index does not match the block being applied (repair by reconciling with the kernel)."""


def _v1(db: Connection) -> None:
    # Firmware before ``user_version`` kept the version in ``meta`` ('schema' = '1') and left
    # user_version at 0: its tables are kept (IF NOT EXISTS) and the row stays for it to read.
    run_script(db, _SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES('schema', '1')")
    elif row[0] != "1":
        raise IndexInconsistent(f"index schema {row[0]}, expected 1")


def _v2(db: Connection) -> None:
    """``spends.sh``: the spent coin's script hash, for the history of a script."""
    db.execute("ALTER TABLE spends ADD COLUMN sh BLOB")
    rows = db.execute("SELECT txid, vout, spk FROM spends").fetchall()
    db.executemany("UPDATE spends SET sh=? WHERE txid=? AND vout=?",
                   [(_sha(bytes(spk)).digest(), txid, vout) for txid, vout, spk in rows])
    db.execute("CREATE INDEX spends_sh ON spends(sh)")


MIGRATIONS: tuple[Migration, ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Coin:
    txid: str
    vout: int
    value: int
    spk: bytes
    height: int
    coinbase: bool


@dataclass(frozen=True, slots=True)
class BlockRow:
    height: int
    hash: str
    prev: str
    time: int


def unspendable(spk: bytes) -> bool:
    return (len(spk) > 0 and spk[0] == 0x6A) or len(spk) > MAX_SCRIPT_SIZE


def _tx_offsets(block: Block) -> Iterator[tuple[int, int]]:
    off = 80 + len(compact_size(len(block.txs)))
    for tx in block.txs:
        yield off, len(tx.raw)
        off += len(tx.raw)


class ChainIndex:
    def __init__(self, path: Path) -> None:
        self.db = open_db(path, MIGRATIONS, synchronous="NORMAL", check_same_thread=False,
                          pragmas=("cache_size=-32768",  # 32 MiB: random txid keys miss a small cache
                                   "temp_store=MEMORY"))
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS spent_batch(txid TEXT NOT NULL, vout INTEGER NOT NULL)")
        self.in_tx = False
        self._tip: BlockRow | None | bool = False  # False: not cached
        self._times: list[int] | None = None  # times of the last (up to) 11 blocks up to the tip
        # Checkpoints wait for the disk on their own thread, not inside a commit (see wal.py).
        self.checkpointer = Checkpointer(self.db, path)

    def close(self) -> None:
        self.checkpointer.close()
        self.db.close()

    # --- transactions ---------------------------------------------------------------------

    def begin(self) -> None:
        if not self.in_tx:
            self.checkpointer.before_begin()
            self.db.execute("BEGIN IMMEDIATE")
            self.in_tx = True

    def commit(self) -> None:
        if self.in_tx:
            self.db.execute("COMMIT")
            self.in_tx = False
            self.checkpointer.committed()

    def rollback(self) -> None:
        self._tip = False
        self._times = None
        if self.in_tx:
            self.db.execute("ROLLBACK")
            self.in_tx = False

    def savepoint(self, name: str) -> None:
        """A nested point inside the open transaction (opened if needed) to roll back to."""
        self.begin()
        self.db.execute(f"SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        """Undo everything since ``savepoint(name)``, keeping earlier writes of the transaction."""
        self._tip = False
        self._times = None
        self.db.execute(f"ROLLBACK TO {name}")
        self.db.execute(f"RELEASE {name}")

    def release(self, name: str) -> None:
        self.db.execute(f"RELEASE {name}")

    # --- blocks -------------------------------------------------------------------------------

    def tip(self) -> BlockRow | None:
        if self._tip is False:
            r = self.db.execute("SELECT height, hash, prev, time FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
            self._tip = BlockRow(*r) if r else None
        assert self._tip is not True
        return self._tip

    def block_at(self, height: int) -> BlockRow | None:
        r = self.db.execute("SELECT height, hash, prev, time FROM blocks WHERE height=?", (height,)).fetchone()
        return BlockRow(*r) if r else None

    def block_by_hash(self, block_hash: str) -> BlockRow | None:
        r = self.db.execute("SELECT height, hash, prev, time FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        return BlockRow(*r) if r else None

    def raw_block(self, height: int) -> bytes | None:
        r = self.db.execute("SELECT raw FROM blocks WHERE height=?", (height,)).fetchone()
        return bytes(r[0]) if r else None

    def tip_times(self) -> list[int]:
        """Times of the last (up to) 11 blocks ending at the tip, oldest first. Cached: every
        block's NodeUpdate and every mempool acceptance needs the tip's median time past."""
        if self._times is None:
            tip = self.tip()
            self._times = self.last_times(tip.height) if tip is not None else []
        return self._times

    def last_times(self, height: int, n: int = 11) -> list[int]:
        """Times of blocks ``height-n+1 .. height`` in height order."""
        rows = self.db.execute(
            "SELECT time FROM blocks WHERE height<=? AND height>? ORDER BY height", (height, height - n)
        ).fetchall()
        return [r[0] for r in rows]

    def connect_block(self, height: int, block: Block) -> None:
        """Apply a block on top of the current tip (must be inside ``begin()``)."""
        tip = self.tip()
        if tip is None:
            if height != 0:
                raise IndexInconsistent(f"empty index, block at height {height}")
        elif tip.height != height - 1 or tip.hash != block.header.prev_hash:
            raise IndexInconsistent(f"block {block.header.hash} at {height} does not extend tip {tip.hash}")
        h = block.header
        db = self.db
        self._tip = False
        db.execute("INSERT INTO blocks VALUES(?,?,?,?,?)", (height, h.hash, h.prev_hash, h.time, block.raw))
        tx_rows = []
        spend_rows = []
        # Coins created in this block, so that an in-block spend never touches SQL.
        created: dict[tuple[str, int], tuple[str, int, int, bytes, int, int, bytes]] = {}
        from_db: list[tuple[str, int, str, int]] = []  # (prev txid, prev vout, spender, input index)
        for pos, (tx, (off, ln)) in enumerate(zip(block.txs, _tx_offsets(block), strict=True)):
            txid = tx.txid
            tx_rows.append((txid, height, pos, off, ln))
            if pos > 0:
                for i, txin in enumerate(tx.inputs):
                    key = (txin.prev_txid_hex, txin.prev_vout)
                    row = created.pop(key, None)
                    if row is None:
                        from_db.append((key[0], key[1], txid, i))
                    else:
                        spend_rows.append((key[0], key[1], txid, i, height, row[2], row[3], row[4], row[5], row[6]))
            if height == 0:
                continue  # the genesis coinbase is not spendable
            coinbase = 1 if pos == 0 else 0
            for vout, out in enumerate(tx.outputs):
                spk = out.script_pubkey
                if not unspendable(spk):
                    created[(txid, vout)] = (txid, vout, out.value, spk, height, coinbase, _sha(spk).digest())
        if from_db:
            # One set-based DELETE through a temp table: ``(txid, vout) IN (VALUES ...)`` would
            # scan the whole UTXO table (SQLite 3.40 plans row-value lists that way).
            db.executemany("INSERT INTO temp.spent_batch VALUES(?,?)", [c[:2] for c in from_db])
            rows = db.execute(
                "DELETE FROM utxos WHERE (txid, vout) IN (SELECT txid, vout FROM temp.spent_batch) "
                "RETURNING txid, vout, value, spk, height, coinbase"
            ).fetchall()
            db.execute("DELETE FROM temp.spent_batch")
            found = {(r[0], r[1]): r for r in rows}
            for prev, vout, spender, idx in from_db:
                r = found.pop((prev, vout), None)
                if r is None:
                    raise IndexInconsistent(f"block {h.hash} spends {prev}:{vout}, not in the index")
                spend_rows.append((prev, vout, spender, idx, height, r[2], r[3], r[4], r[5], _sha(r[3]).digest()))
        if created:
            db.executemany("INSERT INTO utxos VALUES(?,?,?,?,?,?,?)", list(created.values()))
        db.executemany("INSERT INTO txs VALUES(?,?,?,?,?)", tx_rows)
        if spend_rows:
            db.executemany("INSERT INTO spends VALUES(?,?,?,?,?,?,?,?,?,?)", spend_rows)
        self._tip = BlockRow(height, h.hash, h.prev_hash, h.time)
        if self._times is not None:
            self._times = [*self._times[-10:], h.time]

    def disconnect_tip(self) -> tuple[BlockRow, bytes]:
        """Undo the tip block; returns it and its raw bytes (must be inside ``begin()``)."""
        tip = self.tip()
        if tip is None:
            raise IndexInconsistent("nothing to disconnect")
        raw = self.raw_block(tip.height)
        assert raw is not None
        self._tip = False
        self._times = None
        db = self.db
        # No height indexes (they cost every insert): the block's own transactions name the rows.
        block = decode_block(raw)
        created = [(tx.txid, v) for tx in block.txs for v in range(len(tx.outputs))]
        spent = [(i.prev_txid_hex, i.prev_vout) for tx in block.txs[1:] for i in tx.inputs]
        db.executemany("DELETE FROM utxos WHERE txid=? AND vout=?", created)
        restored = []
        for key in spent:
            r = db.execute(
                "DELETE FROM spends WHERE txid=? AND vout=? AND height=? "
                "RETURNING txid, vout, value, spk, coin_height, coinbase",
                (*key, tip.height),
            ).fetchone()
            if r is not None:  # None: created and spent inside this block
                restored.append((*r, _sha(bytes(r[3])).digest()))
        # Coins created and spent inside the block come back too; drop them again.
        created_set = set(created)
        db.executemany(
            "INSERT INTO utxos VALUES(?,?,?,?,?,?,?)", [r for r in restored if (r[0], r[1]) not in created_set]
        )
        db.executemany("DELETE FROM txs WHERE txid=?", [(tx.txid,) for tx in block.txs])
        db.execute("DELETE FROM blocks WHERE height=?", (tip.height,))
        return tip, raw

    # --- queries ------------------------------------------------------------------------------

    def coin(self, txid: str, vout: int) -> Coin | None:
        r = self.db.execute(
            "SELECT value, spk, height, coinbase FROM utxos WHERE txid=? AND vout=?", (txid, vout)
        ).fetchone()
        return Coin(txid, vout, r[0], bytes(r[1]), r[2], bool(r[3])) if r else None

    def coins_for_script(self, spk: bytes) -> list[Coin]:
        return self.coins_for_scripthash(_sha(spk).digest())

    def coins_for_scripthash(self, sh: bytes) -> list[Coin]:
        """Coins whose script's sha256 is ``sh`` (Electrum's script hash, internal byte order)."""
        rows = self.db.execute(
            "SELECT txid, vout, value, spk, height, coinbase FROM utxos WHERE sh=? ORDER BY height, txid, vout",
            (sh,),
        ).fetchall()
        return [Coin(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5])) for r in rows]

    def history(self, sh: bytes) -> list[tuple[str, int]]:
        """(txid, height) of every confirmed transaction touching script hash ``sh`` (internal
        byte order), in chain order: by height, then by position in the block."""
        rows = self.db.execute(
            "SELECT h.txid, h.height FROM ("
            " SELECT txid, height FROM utxos WHERE sh=?1"
            " UNION SELECT txid, coin_height FROM spends WHERE sh=?1"
            " UNION SELECT spender, height FROM spends WHERE sh=?1"
            ") h JOIN txs t ON t.txid=h.txid ORDER BY h.height, t.pos",
            (sh,),
        )
        return [(r[0], r[1]) for r in rows.fetchall()]

    def header_hashes(self, upto: int) -> list[str]:
        """Block hashes (display hex) of heights 0..``upto`` of the active chain."""
        return [r[0] for r in self.db.execute("SELECT hash FROM blocks WHERE height<=? ORDER BY height", (upto,))]

    def headers(self, start: int, count: int) -> list[bytes]:
        """The 80-byte headers of heights ``start`` .. ``start+count-1`` that exist."""
        rows = self.db.execute("SELECT substr(raw, 1, 80) FROM blocks WHERE height>=? AND height<? ORDER BY height",
                               (start, start + count))
        return [bytes(r[0]) for r in rows.fetchall()]

    def tx_location(self, txid: str) -> tuple[int, str] | None:
        r = self.db.execute(
            "SELECT t.height, b.hash FROM txs t JOIN blocks b ON b.height=t.height WHERE t.txid=?", (txid,)
        ).fetchone()
        return (r[0], r[1]) if r else None

    def raw_tx(self, txid: str) -> bytes | None:
        r = self.db.execute(
            "SELECT substr(b.raw, t.off + 1, t.len) FROM txs t JOIN blocks b ON b.height=t.height WHERE t.txid=?",
            (txid,),
        ).fetchone()
        return bytes(r[0]) if r else None

    def spender(self, txid: str, vout: int) -> tuple[str, int, int] | None:
        r = self.db.execute(
            "SELECT spender, input_index, height FROM spends WHERE txid=? AND vout=?", (txid, vout)
        ).fetchone()
        return (r[0], r[1], r[2]) if r else None

    def has_outputs_of(self, txid: str) -> bool:
        return self.db.execute("SELECT 1 FROM utxos WHERE txid=? LIMIT 1", (txid,)).fetchone() is not None

    # --- mempool persistence ----------------------------------------------------------------

    def mempool_rows(self) -> list[tuple[str, bytes, int]]:
        return [(r[0], bytes(r[1]), r[2]) for r in self.db.execute("SELECT txid, raw, added FROM mempool ORDER BY seq")]

    def mempool_add(self, tx: Tx, added: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO mempool(txid, raw, added) VALUES(?,?,?)", (tx.txid, tx.raw, added))

    def mempool_remove(self, txids: list[str]) -> None:
        if txids:
            self.db.executemany("DELETE FROM mempool WHERE txid=?", [(t,) for t in txids])

    def mempool_clear(self) -> None:
        self.db.execute("DELETE FROM mempool")
