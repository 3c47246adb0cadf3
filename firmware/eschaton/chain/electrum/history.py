"""What the Electrum server tells about script hashes, transactions and the mempool: history,
status hashes, unspent outputs, balances, merkle proofs and the fee histogram.

Rules / theory of operation (the protocol's definitions):
- A script hash's history is every transaction paying to or spending from the script: the
  confirmed ones from the chain index's ``history`` table in chain order (height, then position
  in the block), then the mempool's. A mempool transaction's height is -1 when one of its inputs
  is itself unconfirmed, else 0; mempool entries are ordered by ``(-height, txid)`` and carry
  their ``fee``.
- The status is sha256 over ``"txid:height:"`` for each history entry in that order, as hex, or
  None for an empty history. Subscribers are told when it changes.
- The mempool's script hashes are computed once per mempool change (``MempoolScripts``), not
  per request: Electrum asks for many script hashes after every block.
- Merkle proofs of a block's transactions are computed from its raw bytes; the trees of the
  last few blocks asked for are kept whole (keyed by block hash, so a reorg cannot serve a stale
  proof), so each further proof of a block is a few list lookups.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from eschaton.chain.embedded.engine import ChainNode
from eschaton.core.merkle import Tree, branch_and_root, from_hex, to_hex
from eschaton.core.script import script_to_address
from eschaton.core.txcodec import decode_block, decode_tx

_sha = hashlib.sha256
_BLOCK_CACHE = 64  # blocks whose merkle trees are kept for proofs
# Fee histogram bins: the first holds ~100k vB of the best-paying transactions, each next one
# 10% more, so a wallet sees the top of the mempool finely and its tail coarsely.
_BIN_VSIZE = 100_000
_BIN_GROWTH = 1.1


@dataclass(frozen=True, slots=True)
class MempoolTx:
    txid: str
    height: int  # 0: every input confirmed; -1: spends an unconfirmed output
    fee: int


class MempoolScripts:
    """Script hash -> the mempool transactions touching it, for one state of the mempool."""

    def __init__(self, node: ChainNode) -> None:
        assert node.index is not None
        mp = node.mempool
        by_sh: dict[bytes, dict[str, MempoolTx]] = {}
        for txid, e in mp.entries.items():
            unconfirmed = any(i.prev_txid_hex in mp.entries for i in e.tx.inputs)
            item = MempoolTx(txid, -1 if unconfirmed else 0, e.fee)
            shs = {_sha(o.script_pubkey).digest() for o in e.tx.outputs}
            for i in e.tx.inputs:
                parent = mp.coin(i.prev_txid_hex, i.prev_vout)
                if parent is not None:
                    shs.add(_sha(parent[1]).digest())
                else:
                    coin = node.index.coin(i.prev_txid_hex, i.prev_vout)
                    if coin is not None:
                        shs.add(_sha(coin.spk).digest())
            for sh in shs:
                by_sh.setdefault(sh, {})[txid] = item
        self.by_sh = {sh: sorted(d.values(), key=lambda m: (-m.height, m.txid)) for sh, d in by_sh.items()}
        self.size = len(mp.entries)


class ScriptIndex:
    """The server's read side over one ``ChainNode``; shared by every session."""

    def __init__(self, node: ChainNode) -> None:
        self.node = node
        self._mempool: MempoolScripts | None = None
        self._trees: OrderedDict[str, tuple[Tree, dict[bytes, int]]] = OrderedDict()

    def changed(self) -> None:
        """The chain or the mempool moved: forget the mempool's script map."""
        self._mempool = None

    def mempool(self) -> MempoolScripts:
        m = self._mempool
        # The size check also catches a mempool change no update was sent for (an eviction).
        if m is None or m.size != len(self.node.mempool.entries):
            m = self._mempool = MempoolScripts(self.node)
        return m

    # --- script hashes ----------------------------------------------------------------------

    def history(self, sh: bytes) -> list[dict[str, Any]]:
        assert self.node.index is not None
        out: list[dict[str, Any]] = [{"tx_hash": t, "height": h} for t, h in self.node.index.history(sh)]
        out.extend(self.mempool_of(sh))
        return out

    def mempool_of(self, sh: bytes) -> list[dict[str, Any]]:
        return [{"tx_hash": m.txid, "height": m.height, "fee": m.fee} for m in self.mempool().by_sh.get(sh, [])]

    def status(self, sh: bytes) -> str | None:
        hist = self.history(sh)
        if not hist:
            return None
        return _sha("".join(f"{e['tx_hash']}:{e['height']}:" for e in hist).encode()).hexdigest()

    def unspent(self, sh: bytes) -> list[dict[str, Any]]:
        """Confirmed coins not spent in the mempool, then mempool outputs not spent in it
        (with ``script`` and ``coinbase`` besides the standard keys: the node's client reads them)."""
        node = self.node
        assert node.index is not None
        mp = node.mempool
        out = [
            {"tx_hash": c.txid, "tx_pos": c.vout, "height": c.height, "value": c.value,
             "script": c.spk.hex(), "coinbase": c.coinbase}
            for c in node.index.coins_for_scripthash(sh)
            if (c.txid, c.vout) not in mp.spent
        ]
        for m in self.mempool().by_sh.get(sh, []):
            for vout, o in enumerate(mp.entries[m.txid].tx.outputs):
                if (m.txid, vout) not in mp.spent and _sha(o.script_pubkey).digest() == sh:
                    out.append({"tx_hash": m.txid, "tx_pos": vout, "height": 0, "value": o.value,
                                "script": o.script_pubkey.hex(), "coinbase": False})
        return out

    def balance(self, sh: bytes) -> dict[str, int]:
        """Confirmed: the confirmed coins. Unconfirmed: what the mempool adds and takes away
        (negative when it spends confirmed coins), as ElectrumX reports it."""
        node = self.node
        assert node.index is not None
        mp = node.mempool
        coins = node.index.coins_for_scripthash(sh)
        confirmed = sum(c.value for c in coins)
        delta = -sum(c.value for c in coins if (c.txid, c.vout) in mp.spent)
        for m in self.mempool().by_sh.get(sh, []):
            e = mp.entries[m.txid]
            delta += sum(o.value for o in e.tx.outputs if _sha(o.script_pubkey).digest() == sh)
            for i in e.tx.inputs:  # spends of other mempool outputs of this script
                parent = mp.coin(i.prev_txid_hex, i.prev_vout)
                if parent is not None and _sha(parent[1]).digest() == sh:
                    delta -= parent[0]
        return {"confirmed": confirmed, "unconfirmed": delta}

    # --- blocks and transactions ------------------------------------------------------------

    def block_tree(self, height: int) -> tuple[Tree, dict[bytes, int]] | None:
        """The merkle tree of the active block at ``height`` and each txid's (internal order)
        position in it."""
        assert self.node.index is not None
        row = self.node.index.block_at(height)
        if row is None:
            return None
        found = self._trees.get(row.hash)
        if found is None:
            raw = self.node.index.raw_block(height)
            assert raw is not None
            txids = [from_hex(t.txid) for t in decode_block(raw).txs]
            found = self._trees[row.hash] = (Tree(txids), {t: i for i, t in enumerate(txids)})
            if len(self._trees) > _BLOCK_CACHE:
                self._trees.popitem(last=False)
        else:
            self._trees.move_to_end(row.hash)
        return found

    def merkle(self, txid: str, height: int) -> dict[str, Any] | None:
        found = self.block_tree(height)
        if found is None:
            return None
        tree, where = found
        pos = where.get(from_hex(txid))
        if pos is None:
            return None
        return {"block_height": height, "merkle": [to_hex(b) for b in tree.branch(pos)], "pos": pos}

    def id_from_pos(self, height: int, pos: int, merkle: bool) -> Any:
        """``blockchain.transaction.id_from_pos``; None when there is no such block or position."""
        found = self.block_tree(height)
        if found is None or pos >= found[0].size:
            return None
        tree = found[0]
        txid = to_hex(tree.layers[0][pos])
        if not merkle:
            return txid
        return {"tx_hash": txid, "merkle": [to_hex(b) for b in tree.branch(pos)]}

    def header_proof(self, height: int, cp_height: int) -> dict[str, Any]:
        """Branch and root of the header at ``height`` in the tree over all header hashes up to
        ``cp_height`` (the caller checks ``height <= cp_height <= tip``)."""
        assert self.node.index is not None
        leaves = [from_hex(h) for h in self.node.index.header_hashes(cp_height)]
        branch, root = branch_and_root(leaves, height)
        return {"branch": [to_hex(b) for b in branch], "root": to_hex(root)}

    def fee_histogram(self) -> list[list[float | int]]:
        entries = sorted(self.node.mempool.entries.values(), key=lambda e: -e.feerate)
        out: list[list[float | int]] = []
        size, limit = 0, float(_BIN_VSIZE)
        for e in entries:
            size += e.tx.vsize
            if size >= limit:
                out.append([_rate(e.feerate), size])
                size, limit = 0, limit * _BIN_GROWTH
        if size:
            out.append([_rate(entries[-1].feerate), size])
        return out

    def verbose_tx(self, raw: bytes) -> dict[str, Any]:
        """bitcoind's ``getrawtransaction`` verbose form, the fields a wallet reads."""
        node = self.node
        assert node.index is not None
        tx = decode_tx(raw)
        vin: list[dict[str, Any]] = []
        for i in tx.inputs:
            if tx.is_coinbase:
                d: dict[str, Any] = {"coinbase": i.script_sig.hex()}
            else:
                d = {"txid": i.prev_txid_hex, "vout": i.prev_vout,
                     "scriptSig": {"hex": i.script_sig.hex()}}
            if i.witness:
                d["txinwitness"] = [w.hex() for w in i.witness]
            d["sequence"] = i.sequence
            vin.append(d)
        vout = []
        for n, o in enumerate(tx.outputs):
            spk: dict[str, Any] = {"hex": o.script_pubkey.hex()}
            addr = script_to_address(o.script_pubkey)
            if addr is not None:
                spk["address"] = addr
            vout.append({"value": o.value / 1e8, "n": n, "scriptPubKey": spk})
        out: dict[str, Any] = {
            "txid": tx.txid, "hash": tx.wtxid, "version": tx.version, "size": len(tx.raw),
            "vsize": tx.vsize, "weight": tx.weight, "locktime": tx.locktime,
            "vin": vin, "vout": vout, "hex": raw.hex(),
        }
        loc = node.index.tx_location(tx.txid)
        if loc is not None:
            row = node.index.block_at(loc[0])
            assert row is not None
            out.update(blockhash=loc[1], confirmations=node.tip_row().height - loc[0] + 1,
                       time=row.time, blocktime=row.time)
        return out


def _rate(feerate: float) -> float:
    return round(feerate, 1)
