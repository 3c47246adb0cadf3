"""The bitcoind RPC methods over an in-process ``ChainNode``.

Rules:
- One table (``METHODS``) names every method, its parameters (positional order, also accepted
  by name as JSON-RPC named parameters) and whether only the owner may call it. The server
  looks a method up there and nowhere else.
- Errors are ``RpcError`` with Bitcoin Core's codes and, where a client may match on them,
  Core's messages: -5 for anything not found, -8 for a bad parameter, -3 for a wrong JSON
  type, -22/-25/-26/-27 for refused transactions (the reason string first, as Core's
  ``ValidationState::ToString``: ``reason, detail``).
- The node is not thread-safe: every method runs on the event loop's thread, synchronously.
- What the embedded chain does not have is not pretended: there is no wallet, no P2P network
  (``connections`` is 0), and ``scantxoutset`` understands only ``raw(HEX)`` and ``addr(ADDR)``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eschaton.chain.backend import BroadcastRefused, OutPoint
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.mempool import Mempool
from eschaton.chain.embedded.node import ChainNode
from eschaton.chain.embedded.policy import MIN_RELAY_FEE
from eschaton.chain.rpc import shapes as S
from eschaton.chain.rpc.shapes import RpcError
from eschaton.core.codec import (
    Tx,
    TxDecodeError,
    _compact_at,
    decode_block,
    decode_header,
    decode_tx,
)
from eschaton.core.script import ScriptError, address_to_script
from eschaton.errors import EschatonError

MAX_BLOCKS_PER_GENERATE = 1000
DEFAULT_MAX_FEERATE = 0.10  # BTC/kvB, as Core's sendrawtransaction and testmempoolaccept
MAX_MEMPOOL = 300_000_000  # what getmempoolinfo reports as maxmempool (Core's default)


# --- parameter checks (Core's messages) ---------------------------------------------------------


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RpcError(S.RPC_TYPE_ERROR, f"JSON value of type {_jtype(v)} for field {name} is not of expected type number")
    return v


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise RpcError(S.RPC_TYPE_ERROR, f"JSON value of type {_jtype(v)} for field {name} is not of expected type string")
    return v


def _bool(v: Any, name: str) -> bool:
    if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1):
        return bool(v)  # Core's getrawtransaction takes 0/1 as well as false/true
    if not isinstance(v, bool):
        raise RpcError(S.RPC_TYPE_ERROR, f"JSON value of type {_jtype(v)} for field {name} is not of expected type bool")
    return v


def _jtype(v: Any) -> str:
    return {type(None): "null", bool: "bool", int: "number", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(v), "unknown")


def _hash(v: Any, name: str) -> str:
    s = _str(v, name)
    if len(s) != 64:
        raise RpcError(S.RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(s)}, for '{s}')")
    try:
        bytes.fromhex(s)
    except ValueError:
        raise RpcError(S.RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{s}')") from None
    return s.lower()


def _hex(v: Any, name: str) -> bytes:
    s = _str(v, name)
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise RpcError(S.RPC_DESERIALIZATION_ERROR, "TX decode failed") from None


def _raw_tx(v: Any) -> Tx:
    try:
        return decode_tx(_hex(v, "hexstring"))
    except TxDecodeError:
        raise RpcError(S.RPC_DESERIALIZATION_ERROR,
                       "TX decode failed. Make sure the tx has at least one input.") from None


def _feerate(v: Any, name: str = "maxfeerate") -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise RpcError(S.RPC_TYPE_ERROR, f"Amount is not a number or string ({name})")
    try:
        rate = float(v)
    except ValueError:
        raise RpcError(S.RPC_TYPE_ERROR, "Invalid amount") from None
    if rate < 0:
        raise RpcError(S.RPC_TYPE_ERROR, "Amount out of range")
    return rate


def refusal(e: BroadcastRefused) -> RpcError:
    """A mempool refusal as Core's ``sendrawtransaction`` reports it."""
    if e.reason == "TX decode failed":
        return RpcError(S.RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.")
    if e.reason == "bad-txns-inputs-missingorspent":
        return RpcError(S.RPC_VERIFY_ERROR, "bad-txns-inputs-missingorspent")
    if e.reason == "txn-already-known":
        return RpcError(S.RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
    return RpcError(S.RPC_VERIFY_REJECTED, e.reason + (f", {e.detail}" if e.detail else ""))


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Method:
    fn: Callable[..., Any]
    params: tuple[str, ...]  # names, positional order
    required: int = 0  # how many of them are required
    owner_only: bool = False


class RpcMethods:
    """The methods over ``node``; ``call`` is the one entry point."""

    def __init__(self, node: ChainNode, network: str = "regtest") -> None:
        self.node = node
        self.network = network
        self.chain = EmbeddedChain(node, owns_node=False)  # shared lookups (utxo, spender, fee)
        self.table: dict[str, Method] = {
            "getnetworkinfo": Method(self.getnetworkinfo, ()),
            "getindexinfo": Method(self.getindexinfo, ("index_name",)),
            "getblockcount": Method(self.getblockcount, ()),
            "getbestblockhash": Method(self.getbestblockhash, ()),
            "getblockhash": Method(self.getblockhash, ("height",), 1),
            "getblock": Method(self.getblock, ("blockhash", "verbosity"), 1),
            "getblockheader": Method(self.getblockheader, ("blockhash", "verbose"), 1),
            "getblockchaininfo": Method(self.getblockchaininfo, ()),
            "getrawtransaction": Method(self.getrawtransaction, ("txid", "verbose", "blockhash"), 1),
            "getrawmempool": Method(self.getrawmempool, ("verbose", "mempool_sequence")),
            "getmempoolentry": Method(self.getmempoolentry, ("txid",), 1),
            "getmempoolinfo": Method(self.getmempoolinfo, ()),
            "gettxout": Method(self.gettxout, ("txid", "n", "include_mempool"), 2),
            "scantxoutset": Method(self.scantxoutset, ("action", "scanobjects"), 1),
            "sendrawtransaction": Method(self.sendrawtransaction, ("hexstring", "maxfeerate", "maxburnamount"), 1),
            "testmempoolaccept": Method(self.testmempoolaccept, ("rawtxs", "maxfeerate"), 1),
            "submitpackage": Method(self.submitpackage, ("package", "maxfeerate", "maxburnamount"), 1),
            "estimatesmartfee": Method(self.estimatesmartfee, ("conf_target", "estimate_mode"), 1),
            "gettxspendingprevout": Method(self.gettxspendingprevout, ("outputs", "options"), 1),
            "generatetoaddress": Method(self.generatetoaddress, ("nblocks", "address", "maxtries"), 2,
                                        owner_only=True),
            "uptime": Method(self.uptime, ()),
        }
        self.started = int(node.clock())

    def call(self, method: str, params: Any, *, owner: bool) -> Any:
        m = self.table.get(method)
        if m is None:
            raise RpcError(S.RPC_METHOD_NOT_FOUND, "Method not found")
        if m.owner_only and not owner:
            raise RpcError(S.RPC_MISC_ERROR,
                           f"{method} refused: only the chain's owner may make blocks (a connection "
                           "from the owner's user on this machine); this caller may read and broadcast")
        if params is None:
            args: list[Any] = []
        elif isinstance(params, list):
            args = list(params)
        elif isinstance(params, dict):
            unknown = sorted(set(params) - set(m.params))
            if unknown:
                raise RpcError(S.RPC_INVALID_PARAMETER, f"Unknown named parameter {unknown[0]}")
            args = [params.get(n) for n in m.params]
            while args and args[-1] is None:
                args.pop()
        else:
            raise RpcError(S.RPC_INVALID_REQUEST, "Params must be an array or object")
        if len(args) > len(m.params) or sum(a is not None for a in args[: m.required]) < m.required \
                or len(args) < m.required:
            raise RpcError(S.RPC_MISC_ERROR, f"{method} takes {m.required} to {len(m.params)} parameters: "
                                             f"{', '.join(m.params) or 'none'}")
        try:
            return m.fn(*args)
        except BroadcastRefused as e:
            raise refusal(e) from None
        except EschatonError as e:  # the chain's own refusals (e.g. mining too far ahead of the clock)
            raise RpcError(S.RPC_MISC_ERROR, str(e)) from None

    # --- helpers ----------------------------------------------------------------------------------

    @property
    def index(self) -> Any:
        assert self.node.index is not None
        return self.node.index

    def _height_of(self, block_hash: str) -> int:
        row = self.index.block_by_hash(block_hash)
        if row is None:
            raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return int(row.height)

    def _chainwork(self, height: int, bits: int) -> int:
        # Regtest never retargets: every block has the genesis block's bits.
        return S.block_work(bits) * (height + 1)

    def _header_json(self, height: int, raw: bytes) -> dict[str, Any]:
        h = decode_header(raw[:80])
        tip = self.node.tip_row().height
        nxt = self.index.block_at(height + 1)
        n_tx, _ = _compact_at(raw, 80, len(raw))  # the block's tx count, without decoding it
        return S.header_json(h, height=height, tip_height=tip, mtp=self.node.mtp_at(height),
                             chainwork=self._chainwork(height, h.bits), n_tx=n_tx,
                             next_hash=nxt.hash if nxt is not None else None)

    def _raw_block(self, block_hash: str) -> tuple[int, bytes]:
        height = self._height_of(_hash(block_hash, "blockhash"))
        raw = self.index.raw_block(height)
        assert raw is not None
        return height, raw

    def _prevout(self, txid: str, vout: int) -> tuple[int, bytes, int, bool] | None:
        """(value, script, height, coinbase) of a coin spent in the active chain."""
        r = self.index.db.execute(
            "SELECT value, spk, coin_height, coinbase FROM spends WHERE txid=? AND vout=?", (txid, vout)
        ).fetchone()
        return (r[0], bytes(r[1]), r[2], bool(r[3])) if r else None

    def _fee_of(self, tx: Tx) -> int | None:
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
            p = self._prevout(*key)
            if p is None:
                return None
            total += p[0]
        return total - sum(o.value for o in tx.outputs)

    # --- network / indexes ------------------------------------------------------------------------

    def getnetworkinfo(self) -> dict[str, Any]:
        relay = S.btc(MIN_RELAY_FEE)
        return {"version": S.CORE_VERSION, "subversion": S.SUBVERSION, "protocolversion": 70016,
                "localservices": "0000000000000000", "localservicesnames": [], "localrelay": True,
                "timeoffset": 0, "networkactive": False, "connections": 0, "connections_in": 0,
                "connections_out": 0, "networks": [], "relayfee": relay, "incrementalfee": relay,
                "localaddresses": [], "warnings": []}

    def getindexinfo(self, index_name: Any = None) -> dict[str, Any]:
        # The chain index answers both questions for every block it holds (index.py).
        h = self.node.tip_row().height
        info = {name: {"synced": True, "best_block_height": h} for name in ("txindex", "txospenderindex")}
        if index_name is None:
            return info
        name = _str(index_name, "index_name")
        return {name: info[name]} if name in info else {}

    def uptime(self) -> int:
        return int(self.node.clock()) - self.started

    # --- blocks -----------------------------------------------------------------------------------

    def getblockcount(self) -> int:
        return int(self.node.tip_row().height)

    def getbestblockhash(self) -> str:
        return str(self.node.tip_row().hash)

    def getblockhash(self, height: Any) -> str:
        row = self.index.block_at(_int(height, "height"))
        if row is None:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Block height out of range")
        return str(row.hash)

    def getblockheader(self, blockhash: Any, verbose: Any = True) -> Any:
        height, raw = self._raw_block(blockhash)
        if not _bool(verbose, "verbose"):
            return raw[:80].hex()
        return self._header_json(height, raw)

    def getblock(self, blockhash: Any, verbosity: Any = 1) -> Any:
        if isinstance(verbosity, bool):
            verbosity = int(verbosity)  # Core still takes the old boolean form
        v = _int(verbosity, "verbosity")
        height, raw = self._raw_block(blockhash)
        if v <= 0:
            return raw.hex()
        blk = decode_block(raw)
        d = self._header_json(height, raw)
        witness = sum(len(t.raw) - t.base_size for t in blk.txs)
        d.update({"strippedsize": len(raw) - witness, "size": len(raw), "weight": 3 * (len(raw) - witness) + len(raw)})
        if v == 1:
            d["tx"] = [t.txid for t in blk.txs]
        else:
            d["tx"] = [self._block_tx_json(t, height, v) for t in blk.txs]
        return d

    def _block_tx_json(self, tx: Tx, height: int, verbosity: int) -> dict[str, Any]:
        d = S.tx_json(tx, self.network)
        if not tx.is_coinbase:
            prevs = [self._prevout(i.prev_txid_hex, i.prev_vout) for i in tx.inputs]
            if all(p is not None for p in prevs):
                d["fee"] = S.btc(sum(p[0] for p in prevs if p) - sum(o.value for o in tx.outputs))
                if verbosity >= 3:
                    for e, p in zip(d["vin"], prevs, strict=True):
                        assert p is not None
                        e["prevout"] = {"generated": p[3], "height": p[2], "value": S.btc(p[0]),
                                        "scriptPubKey": S.script_pubkey_json(p[1], self.network)}
        d["hex"] = tx.raw.hex()
        return d

    def getblockchaininfo(self) -> dict[str, Any]:
        tip = self.node.tip_row()
        raw = self.index.raw_block(tip.height)
        h = decode_header(raw[:80])
        size = 0
        for root, _dirs, files in os.walk(self.node.chain_dir / "kernel"):
            for f in files:
                try:
                    size += (Path(root) / f).stat().st_size
                except OSError:
                    continue
        return {"chain": self.network, "blocks": tip.height, "headers": tip.height, "bestblockhash": tip.hash,
                "bits": f"{h.bits:08x}", "target": f"{S.target(h.bits):064x}", "difficulty": S.difficulty(h.bits),
                "time": h.time, "mediantime": self.node.mtp_at(tip.height), "verificationprogress": 1.0,
                "initialblockdownload": False, "chainwork": f"{self._chainwork(tip.height, h.bits):064x}",
                "size_on_disk": size, "pruned": False, "warnings": []}

    # --- transactions -----------------------------------------------------------------------------

    def getrawtransaction(self, txid: Any, verbose: Any = 0, blockhash: Any = None) -> Any:
        t = _hash(txid, "parameter 1")
        if isinstance(verbose, bool):
            verbose = int(verbose)
        v = _int(verbose, "verbose") if verbose is not None else 0
        where: tuple[int, str] | None = None
        if blockhash is not None:
            want = _hash(blockhash, "parameter 3")
            if self.index.block_by_hash(want) is None:
                raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
            loc = self.index.tx_location(t)
            if loc is None or loc[1] != want:
                raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "No such transaction found in the provided block. "
                                                             "Use gettransaction for wallet transactions.")
            raw = self.index.raw_tx(t)
            where = (int(loc[0]), str(loc[1]))
        else:
            raw = self.node.get_transaction(t)
            if raw is None:
                raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "No such mempool or blockchain transaction. "
                                                             "Use gettransaction for wallet transactions.")
            if t not in self.node.mempool:
                loc = self.index.tx_location(t)
                where = (int(loc[0]), str(loc[1])) if loc else None
        assert raw is not None
        if v <= 0:
            return raw.hex()
        tx = decode_tx(raw)
        d = S.tx_json(tx, self.network)
        d["hex"] = raw.hex()
        if where is not None:
            height, bh = where
            row = self.index.block_at(height)
            d["blockhash"] = bh
            d["confirmations"] = self.node.tip_row().height - height + 1
            d["time"] = d["blocktime"] = row.time
            if blockhash is not None:
                d["in_active_chain"] = True  # (Core: only with an explicit blockhash)
            if v >= 2 and not tx.is_coinbase:
                fee = self._fee_of(tx)
                if fee is not None:
                    d["fee"] = S.btc(fee)
        elif v >= 2:
            e = self.node.mempool.entries.get(t)
            if e is not None:
                d["fee"] = S.btc(e.fee)
        return d

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
        if _bool(verbose, "verbose"):
            return {t: self._mempool_entry(t) for t in self.node.mempool.entries}
        if mempool_sequence is not None and _bool(mempool_sequence, "mempool_sequence"):
            raise RpcError(S.RPC_INVALID_PARAMETER, "mempool_sequence is not supported by this node")
        return list(self.node.mempool.entries)

    def getmempoolentry(self, txid: Any) -> dict[str, Any]:
        t = _hash(txid, "txid")
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
        t, vout = _hash(txid, "txid"), _int(n, "n")
        mem = _bool(include_mempool, "include_mempool")
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
        act = _str(action, "action")
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
            spk = self._descriptor_script(_str(desc, "desc"))
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
        limit = DEFAULT_MAX_FEERATE if maxfeerate is None else _feerate(maxfeerate)
        if limit == 0:
            return
        fee = self._fee_of(tx)
        if fee is not None and fee * 1000 / tx.vsize > limit * S.COIN:
            raise RpcError(S.RPC_VERIFY_ERROR,
                           "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")

    def sendrawtransaction(self, hexstring: Any, maxfeerate: Any = None, maxburnamount: Any = None) -> str:
        tx = _raw_tx(hexstring)
        self._check_feerate(tx, maxfeerate)
        if maxburnamount is not None:
            burn = S.sats(_feerate(maxburnamount, "maxburnamount"))
            if any(o.script_pubkey[:1] == b"\x6a" and o.value > burn for o in tx.outputs):
                raise RpcError(S.RPC_VERIFY_ERROR, "Unspendable output exceeds maximum configured by user "
                                                   "(maxburnamount)")
        return self.node.broadcast(tx.raw)

    def testmempoolaccept(self, rawtxs: Any, maxfeerate: Any = None) -> list[dict[str, Any]]:
        if not isinstance(rawtxs, list):
            raise RpcError(S.RPC_TYPE_ERROR, "JSON value of type string is not of expected type array")
        if not 1 <= len(rawtxs) <= 25:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
        txs = [_raw_tx(r) for r in rawtxs]
        limit = DEFAULT_MAX_FEERATE if maxfeerate is None else _feerate(maxfeerate)
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
        txs = [_raw_tx(r) for r in package]
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
        n = _int(conf_target, "conf_target")
        if not 1 <= n <= 1008:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
        if estimate_mode is not None and _str(estimate_mode, "estimate_mode").lower() not in (
                "unset", "economical", "conservative"):
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid estimate_mode parameter, must be one of: "
                                                    "\"unset\", \"economical\", \"conservative\"")
        return {"feerate": S.btc(self.chain.estimate_fee_sync(n)), "blocks": n}

    def gettxspendingprevout(self, outputs: Any, options: Any = None) -> list[dict[str, Any]]:
        if not isinstance(outputs, list) or not outputs:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Invalid parameter, outputs are missing")
        opts = options if isinstance(options, dict) else {}
        mempool_only = _bool(opts.get("mempool_only", False), "mempool_only")
        with_tx = _bool(opts.get("return_spending_tx", False), "return_spending_tx")
        out: list[dict[str, Any]] = []
        for o in outputs:
            if not isinstance(o, dict):
                raise RpcError(S.RPC_TYPE_ERROR, "JSON value of type string is not of expected type object")
            txid = _hash(o.get("txid"), "txid")
            vout = _int(o.get("vout"), "vout")
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

    # --- mining (owner only) ----------------------------------------------------------------------

    def generatetoaddress(self, nblocks: Any, address: Any, maxtries: Any = None) -> list[str]:
        n = _int(nblocks, "nblocks")
        if not 1 <= n <= MAX_BLOCKS_PER_GENERATE:
            raise RpcError(S.RPC_INVALID_PARAMETER, f"nblocks must be between 1 and {MAX_BLOCKS_PER_GENERATE}")
        if self.network != "regtest":
            raise RpcError(S.RPC_MISC_ERROR, "generatetoaddress works only on regtest")
        try:
            spk = address_to_script(_str(address, "address"), "regtest")
        except ScriptError:
            raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
        return self.node.mine(n, spk)

    def close(self) -> None:
        self.chain.close_sync()
