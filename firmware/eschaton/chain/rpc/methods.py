"""The bitcoind RPC methods over an in-process ``ChainNode``.

Rules:
- One table (``RpcMethods.table``) names every method, its parameters (positional order, also accepted
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

from eschaton.chain.backend import BroadcastRefused
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.embedded.policy import MIN_RELAY_FEE
from eschaton.chain.rpc import shapes as S
from eschaton.chain.rpc.params import bool_param, hash_param, int_param, refusal, str_param
from eschaton.chain.rpc.shapes import RpcError
from eschaton.chain.rpc.txs import TxMethods
from eschaton.core.script import ScriptError, address_to_script
from eschaton.core.txcodec import Tx, _compact_at, decode_block, decode_header, decode_tx
from eschaton.errors import EschatonError

MAX_BLOCKS_PER_GENERATE = 1000


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
        tx = self.txs = TxMethods(node, network, self.chain)  # mempool, UTXO and broadcast methods (txs.py)
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
            "getrawmempool": Method(tx.getrawmempool, ("verbose", "mempool_sequence")),
            "getmempoolentry": Method(tx.getmempoolentry, ("txid",), 1),
            "getmempoolinfo": Method(tx.getmempoolinfo, ()),
            "gettxout": Method(tx.gettxout, ("txid", "n", "include_mempool"), 2),
            "scantxoutset": Method(tx.scantxoutset, ("action", "scanobjects"), 1),
            "sendrawtransaction": Method(tx.sendrawtransaction, ("hexstring", "maxfeerate", "maxburnamount"), 1),
            "testmempoolaccept": Method(tx.testmempoolaccept, ("rawtxs", "maxfeerate"), 1),
            "submitpackage": Method(tx.submitpackage, ("package", "maxfeerate", "maxburnamount"), 1),
            "estimatesmartfee": Method(tx.estimatesmartfee, ("conf_target", "estimate_mode"), 1),
            "gettxspendingprevout": Method(tx.gettxspendingprevout, ("outputs", "options"), 1),
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
        height = self._height_of(hash_param(block_hash, "blockhash"))
        raw = self.index.raw_block(height)
        assert raw is not None
        return height, raw

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
        name = str_param(index_name, "index_name")
        return {name: info[name]} if name in info else {}

    def uptime(self) -> int:
        return int(self.node.clock()) - self.started

    # --- blocks -----------------------------------------------------------------------------------

    def getblockcount(self) -> int:
        return int(self.node.tip_row().height)

    def getbestblockhash(self) -> str:
        return str(self.node.tip_row().hash)

    def getblockhash(self, height: Any) -> str:
        row = self.index.block_at(int_param(height, "height"))
        if row is None:
            raise RpcError(S.RPC_INVALID_PARAMETER, "Block height out of range")
        return str(row.hash)

    def getblockheader(self, blockhash: Any, verbose: Any = True) -> Any:
        height, raw = self._raw_block(blockhash)
        if not bool_param(verbose, "verbose"):
            return raw[:80].hex()
        return self._header_json(height, raw)

    def getblock(self, blockhash: Any, verbosity: Any = 1) -> Any:
        if isinstance(verbosity, bool):
            verbosity = int(verbosity)  # Core still takes the old boolean form
        v = int_param(verbosity, "verbosity")
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
            prevs = [self.txs.prevout(i.prev_txid_hex, i.prev_vout) for i in tx.inputs]
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
        t = hash_param(txid, "parameter 1")
        if isinstance(verbose, bool):
            verbose = int(verbose)
        v = int_param(verbose, "verbose") if verbose is not None else 0
        where: tuple[int, str] | None = None
        if blockhash is not None:
            want = hash_param(blockhash, "parameter 3")
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
                fee = self.txs.fee_of(tx)
                if fee is not None:
                    d["fee"] = S.btc(fee)
        elif v >= 2:
            e = self.node.mempool.entries.get(t)
            if e is not None:
                d["fee"] = S.btc(e.fee)
        return d

    # --- mining (owner only) ----------------------------------------------------------------------

    def generatetoaddress(self, nblocks: Any, address: Any, maxtries: Any = None) -> list[str]:
        n = int_param(nblocks, "nblocks")
        if not 1 <= n <= MAX_BLOCKS_PER_GENERATE:
            raise RpcError(S.RPC_INVALID_PARAMETER, f"nblocks must be between 1 and {MAX_BLOCKS_PER_GENERATE}")
        if self.network != "regtest":
            raise RpcError(S.RPC_MISC_ERROR, "generatetoaddress works only on regtest")
        try:
            spk = address_to_script(str_param(address, "address"), "regtest")
        except ScriptError:
            raise RpcError(S.RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
        return self.node.mine(n, spk)

    def close(self) -> None:
        self.chain.close_sync()
