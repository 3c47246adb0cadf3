"""The mempool, UTXO and broadcast methods (``RpcMethods`` registers them in its table)."""
from __future__ import annotations

from typing import Any

from eschaton.chain.backend import BroadcastRefused, OutPoint
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.embedded.mempool import Mempool
from eschaton.chain.embedded.policy import MIN_RELAY_FEE
from eschaton.chain.rpc import shapes as S
from eschaton.chain.rpc.params import (
    bool_param,
    feerate_param,
    hash_param,
    int_param,
    raw_tx_param,
    refusal,
    str_param,
)
from eschaton.chain.rpc.shapes import RpcError
from eschaton.core.script import ScriptError, address_to_script
from eschaton.core.txcodec import Tx

DEFAULT_MAX_FEERATE = 0.10  # BTC/kvB, as Core's sendrawtransaction and testmempoolaccept
MAX_MEMPOOL = 300_000_000  # what getmempoolinfo reports as maxmempool (Core's default)


class TxMethods:
    def __init__(self, node: ChainNode, network: str, chain: EmbeddedChain) -> None:
        self.node = node
        self.network = network
        self.chain = chain

    @property
    def index(self) -> Any:
        assert self.node.index is not None
        return self.node.index

    def prevout(self, txid: str, vout: int) -> tuple[int, bytes, int, bool] | None:
        """(value, script, height, coinbase) of a coin spent in the active chain."""
        r = self.index.db.execute(
            "SELECT value, spk, coin_height, coinbase FROM spends WHERE txid=? AND vout=?", (txid, vout)
        ).fetchone()
        return (r[0], bytes(r[1]), r[2], bool(r[3])) if r else None

    def fee_of(self, tx: Tx) -> int | None:
        """The fee of a transaction whose inputs are coins (unspent, spent in the chain, or mempool
        outputs); None if one is unknown."""
        total = 0
        mp = self.node.mempool
        for i in tx.inputs:
            key = (i.prev_txid_hex, i.prev_vout)
            c = self.index.coin(*key)
            if c is not None:
                total += c.value
                continue
            m = mp.coin(*key)
            if m is not None:
                total += m[0]
                continue
            p = self.prevout(*key)
            if p is None:
                return None
            total += p[0]
        return total - sum(o.value for o in tx.outputs)

    def _mempool_entry(self, txid: str) -> dict[str, Any]:
        mp = self.node.mempool
        e = mp.entries[txid]
        anc: set[str] = set()
        todo = list(e.parents)
        while todo:
            p = todo.pop()
            if p in anc or p not in mp.entries:
                continue
            anc.add(p)
            todo.extend(mp.entries[p].parents)
        desc = mp.descendants([txid])  # includes txid itself, as Core's counts do
        children = sorted({mp.spent[(txid, v)] for v in range(len(e.tx.outputs)) if (txid, v) in mp.spent})
        anc_fee = e.fee + sum(mp.entries[a].fee for a in anc)
        desc_fee = sum(mp.entries[d].fee for d in desc)
        return {
            "vsize": e.tx.vsize, "weight": e.tx.weight, "time": e.added, "height": e.height,
            "descendantcount": len(desc), "descendantsize": sum(mp.entries[d].tx.vsize for d in desc),
            "ancestorcount": len(anc) + 1, "ancestorsize": e.tx.vsize + sum(mp.entries[a].tx.vsize for a in anc),
            "wtxid": e.tx.wtxid,
            "fees": {"base": S.btc(e.fee), "modified": S.btc(e.fee), "ancestor": S.btc(anc_fee),
                     "descendant": S.btc(desc_fee)},
            "depends": sorted(e.parents), "spentby": children,
            "bip125-replaceable": True,  # full RBF: every mempool transaction may be replaced
            "unbroadcast": False,
        }

    def getrawmempool(self, verbose: Any = False, mempool_sequence: Any = False) -> Any:
        if bool_param(verbose, "verbose"):
            return {t: self._mempool_entry(t) for t in self.node.mempool.entries}
        if mempool_sequence is not None and bool_param(mempool_sequence, "mempool_sequence"):
            raise RpcError(S.RPC_INVALID_PARAMETER, "mempool_sequence is not supported by this node")
        return list(self.node.mempool.entries)

    def getmempoolentry(self, txid: Any) -> dict[str, Any]:
        t = hash_param(txid, "txid")
        if t not in self.node.mempool:
            raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
        return self._mempool_entry(t)

    def getmempoolinfo(self) -> dict[str, Any]:
        entries = self.node.mempool.entries.values()
        relay = S.btc(MIN_RELAY_FEE)
        return {"loaded": True, "size": len(entries), "bytes": sum(e.tx.vsize for e in entries),
                # Core reports its memory estimate; ours is the transactions' serialized size.
                "usage": sum(len(e.tx.raw) for e in entries),
                "total_fee": S.btc(sum(e.fee for e in entries)), "maxmempool": MAX_MEMPOOL,
                "mempoolminfee": relay, "minrelaytxfee": relay, "incrementalrelayfee": relay,
                "unbroadcastcount": 0, "fullrbf": True}

    def gettxout(self, txid: Any, n: Any, include_mempool: Any = True) -> Any:
        t, vout = hash_param(txid, "txid"), int_param(n, "n")
        mem = bool_param(include_mempool, "include_mempool")
        mp = self.node.mempool
        tip = self.node.tip_row()
        if mem and (t, vout) in mp.spent:
            return None
        c = self.index.coin(t, vout)
        if c is not None:
            value, spk, conf, coinbase = c.value, c.spk, tip.height - c.height + 1, c.coinbase
        elif mem and mp.coin(t, vout) is not None:
            m = mp.coin(t, vout)
            assert m is not None
            value, spk, conf, coinbase = m[0], m[1], 0, False
        else:
            return None
        return {"bestblock": tip.hash, "confirmations": conf, "value": S.btc(value),
                "scriptPubKey": S.script_pubkey_json(spk, self.network), "coinbase": coinbase}

    def scantxoutset(self, action: Any, scanobjects: Any = None) -> Any:
        act = str_param(action, "action")
        if act in ("status", "abort"):
            return None if act == "status" else False  # scans finish inside the call
        if act != "start":
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid action '" + act + "'")
        if not isinstance(scanobjects, list):
            raise RpcError(S.RPC_MISC_ERROR, "scanobjects argument is required for the start action")
        tip = self.node.tip_row()
        unspents: list[dict[str, Any]] = []
        for obj in scanobjects:
            desc = obj.get("desc") if isinstance(obj, dict) else obj
            spk = self._descriptor_script(str_param(desc, "desc"))
            for c in self.index.coins_for_script(spk):
                row = self.index.block_at(c.height)
                unspents.append({"txid": c.txid, "vout": c.vout, "scriptPubKey": spk.hex(), "desc": desc,
                                 "amount": S.btc(c.value), "coinbase": c.coinbase, "height": c.height,
                                 "blockhash": row.hash})
        count = self.index.db.execute("SELECT count(*) FROM utxos").fetchone()[0]
        return {"success": True, "txouts": count, "height": tip.height, "bestblock": tip.hash,
                "unspents": unspents, "total_amount": S.btc(sum(S.sats(u["amount"]) for u in unspents))}

    def _descriptor_script(self, desc: str) -> bytes:
        d = desc.split("#", 1)[0].strip()
        if d.startswith("raw(") and d.endswith(")"):
            try:
                return bytes.fromhex(d[4:-1])
            except ValueError:
                raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, f"raw(): not a hex string: {desc}") from None
        if d.startswith("addr(") and d.endswith(")"):
            try:
                return address_to_script(d[5:-1], self._address_net())
            except ScriptError as e:
                raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, str(e)) from None
        raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY,
                       f"this node scans only raw(HEX) and addr(ADDRESS) descriptors, not {desc}")

    def _address_net(self) -> str:
        return {"mainnet": "main", "testnet": "test"}.get(self.network, self.network)

    # --- broadcast --------------------------------------------------------------------------------

    def _check_feerate(self, tx: Tx, maxfeerate: Any) -> None:
        limit = DEFAULT_MAX_FEERATE if maxfeerate is None else feerate_param(maxfeerate)
        if limit == 0:
            return
        fee = self.fee_of(tx)
        if fee is not None and fee * 1000 / tx.vsize > limit * S.COIN:
            raise RpcError(S.RPC_VERIFY_ERROR,
                           "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")

    def sendrawtransaction(self, hexstring: Any, maxfeerate: Any = None, maxburnamount: Any = None) -> str:
        tx = raw_tx_param(hexstring)
        self._check_feerate(tx, maxfeerate)
        if maxburnamount is not None:
            burn = S.sats(feerate_param(maxburnamount, "maxburnamount"))
            if any(o.script_pubkey[:1] == b"\x6a" and o.value > burn for o in tx.outputs):
                raise RpcError(S.RPC_VERIFY_ERROR, "Unspendable output exceeds maximum configured by user "
                                                   "(maxburnamount)")
        return self.node.broadcast(tx.raw)

    def testmempoolaccept(self, rawtxs: Any, maxfeerate: Any = None) -> list[dict[str, Any]]:
        if not isinstance(rawtxs, list):
            raise RpcError(S.RPC_TYPE_ERROR, "JSON value of type string is not of expected type array")
        if not 1 <= len(rawtxs) <= 25:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
        txs = [raw_tx_param(r) for r in rawtxs]
        limit = DEFAULT_MAX_FEERATE if maxfeerate is None else feerate_param(maxfeerate)
        # A dry run on a copy of the pool (accept mutates only the pool's two dicts); the
        # package's transactions see each other, as in Core.
        trial = Mempool()
        trial.entries = dict(self.node.mempool.entries)
        trial.spent = dict(self.node.mempool.spent)
        now = int(self.node.clock())
        out: list[dict[str, Any]] = []
        failed = False
        for tx in txs:
            r: dict[str, Any] = {"txid": tx.txid, "wtxid": tx.wtxid}
            if failed:
                r["package-error"] = "package-not-validated"
                out.append(r)
                continue
            try:
                if tx.txid in self.node.mempool:
                    raise BroadcastRefused("txn-already-in-mempool")
                if self.index.tx_location(tx.txid) is not None and self.index.has_outputs_of(tx.txid):
                    raise BroadcastRefused("txn-already-known")
                e = trial.accept(tx, self.node, now)
            except BroadcastRefused as err:
                failed = len(txs) > 1
                r.update({"allowed": False, "reject-reason": err.reason})
                if err.detail:
                    r["reject-details"] = f"{err.reason}, {err.detail}"
                out.append(r)
                continue
            rate = e.fee * 1000 / tx.vsize
            if limit and rate > limit * S.COIN:
                r.update({"allowed": False, "reject-reason": "max-fee-exceeded"})
            else:
                r.update({"allowed": True, "vsize": tx.vsize,
                          "fees": {"base": S.btc(e.fee), "effective-feerate": S.btc(round(rate)),
                                   "effective-includes": [tx.wtxid]}})
            out.append(r)
        return out

    def submitpackage(self, package: Any, maxfeerate: Any = None, maxburnamount: Any = None) -> dict[str, Any]:
        if not isinstance(package, list) or not 1 <= len(package) <= 25:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
        txs = [raw_tx_param(r) for r in package]
        ids = {t.txid for t in txs}
        seen: set[str] = set()
        for t in txs:  # Core: topologically sorted, parents before the child
            if any(i.prev_txid_hex in ids and i.prev_txid_hex not in seen for i in t.inputs):
                raise RpcError(S.RPC_INVALID_PARAMETER, "package topology disallowed. not child-with-parents "
                                                        "or parents depend on each other.")
            seen.add(t.txid)
        results: dict[str, Any] = {}
        msg = "success"
        replaced: list[str] = []
        before = set(self.node.mempool.entries)
        for t in txs:
            try:
                self._check_feerate(t, maxfeerate)
                self.node.broadcast(t.raw)
            except (BroadcastRefused, RpcError) as err:
                reason = refusal(err).message if isinstance(err, BroadcastRefused) else err.message
                results[t.wtxid] = {"txid": t.txid, "error": reason}
                msg = "transaction failed"
                continue
            e = self.node.mempool.entries[t.txid]
            replaced += [r for r in e.replaced if r in before]
            results[t.wtxid] = {"txid": t.txid, "vsize": t.vsize,
                                "fees": {"base": S.btc(e.fee), "effective-feerate": S.btc(round(e.feerate * 1000)),
                                         "effective-includes": [t.wtxid]}}
        return {"package_msg": msg, "tx-results": results, "replaced-transactions": replaced}

    def estimatesmartfee(self, conf_target: Any, estimate_mode: Any = None) -> dict[str, Any]:
        n = int_param(conf_target, "conf_target")
        if not 1 <= n <= 1008:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
        if estimate_mode is not None and str_param(estimate_mode, "estimate_mode").lower() not in (
                "unset", "economical", "conservative"):
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid estimate_mode parameter, must be one of: "
                                                    "\"unset\", \"economical\", \"conservative\"")
        return {"feerate": S.btc(self.chain.estimate_fee_sync(n)), "blocks": n}

    def gettxspendingprevout(self, outputs: Any, options: Any = None) -> list[dict[str, Any]]:
        if not isinstance(outputs, list) or not outputs:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid parameter, outputs are missing")
        opts = options if isinstance(options, dict) else {}
        mempool_only = bool_param(opts.get("mempool_only", False), "mempool_only")
        with_tx = bool_param(opts.get("return_spending_tx", False), "return_spending_tx")
        out: list[dict[str, Any]] = []
        for o in outputs:
            if not isinstance(o, dict):
                raise RpcError(S.RPC_TYPE_ERROR, "JSON value of type string is not of expected type object")
            txid = hash_param(o.get("txid"), "txid")
            vout = int_param(o.get("vout"), "vout")
            if vout < 0:
                raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            r: dict[str, Any] = {"txid": txid, "vout": vout}
            sp = self.chain.spender_sync(OutPoint(txid, vout))
            if sp is not None and (sp.height is None or not mempool_only):
                r["spendingtxid"] = sp.txid
                if sp.height is not None:
                    row = self.index.block_at(sp.height)
                    r["blockhash"] = row.hash
                if with_tx:
                    raw = self.node.get_transaction(sp.txid)
                    if raw is not None:
                        r["spendingtx"] = raw.hex()
            out.append(r)
        return out
