"""``RpcChainClient``: the ``ChainBackend`` over a bitcoind-compatible JSON-RPC (``backend = "rpc"``).

For a node next to Bitcoin Core or Knots (or another Eschaton chain's RPC). What it needs of
the remote node: ``txindex=1`` (transactions by txid) and, for spends that confirmed,
``txospenderindex=1`` with Core >= 31 (``gettxspendingprevout`` answers from it; older nodes
know only mempool spends). Both are what ElectrumX 2.0 needs too.

Rules:
- Every call is one HTTP request (several methods go in one JSON-RPC batch where a call needs
  them). A refused connection or an HTTP failure is ``ChainUnavailable``; the next call simply
  tries again, so no reconnect logic is needed.
- Authentication: user/password, or the remote node's cookie file, re-read after a 401
  because bitcoind writes a new cookie at every start.
- Errors map to the backend's types by Core's codes: -5 on a transaction is
  ``UnknownTransaction``; -22/-25/-26/-27 from ``sendrawtransaction`` are ``BroadcastRefused``
  with the reason first (``reason, detail``, as ``ValidationState::ToString``); a refused
  ``generatetoaddress`` is ``NotOwner``; anything else is ``InvalidRequest``.
- Subscriptions are polled (``poll`` seconds): the remote tip, and while something is watched
  the new blocks and mempool transactions. A tip that does not extend the last one seen is a
  reorg: the client walks back by ``previousblockhash`` to the last block it knew and emits
  ``Reorg`` (hashes top first), then ``NewTip``, then spends/activity of the new blocks in
  chain order, then of new mempool transactions: the order ``EmbeddedChain`` uses.
- ``list_unspent`` uses ``scantxoutset`` (a scan of the whole UTXO set in bitcoind: quick on
  regtest and signet, minutes on mainnet) plus the mempool's transactions.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from eschaton.chain.backend import (
    BroadcastRefused,
    ChainEvent,
    Listener,
    NewTip,
    OutPoint,
    OutpointSpent,
    Reorg,
    ScriptActivity,
    Spend,
    Tip,
    TxStatus,
    UnknownTransaction,
    Utxo,
)
from eschaton.chain.errors import ChainUnavailable, InvalidRequest, NotOwner, WrongNetwork
from eschaton.chain.rpc import shapes as S
from eschaton.chain.rpc.shapes import RpcError
from eschaton.core.script import script_to_address
from eschaton.core.txcodec import Tx, TxDecodeError, decode_block, decode_tx

log = logging.getLogger(__name__)

# The embedded chain's default coinbase destination (P2WSH(OP_TRUE), mining.OP_TRUE_P2WSH),
# repeated here so that this client does not load the kernel.
OP_TRUE_P2WSH = bytes.fromhex("00204ae81572f06e1b88fd5ced7a1a000945432e83e1551e6f721ee9c00b8cc33260")
REORG_WINDOW = 200  # block hashes remembered to find a fork point
TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RpcCredentials:
    user: str | None = None
    password: str | None = None
    cookie: Path | None = None

    def header(self) -> str:
        if self.user is not None and self.password is not None:
            secret = f"{self.user}:{self.password}"
        elif self.cookie is not None:
            try:
                secret = self.cookie.read_text().strip()
            except OSError as e:
                raise ChainUnavailable(f"cannot read the RPC cookie {self.cookie}: {e.strerror or e}") from None
        else:
            raise InvalidRequest("no RPC credentials: rpc_user/rpc_password or rpc_cookie")
        return "Basic " + base64.b64encode(secret.encode()).decode()


def _refused(e: RpcError) -> BroadcastRefused:
    if e.code == S.RPC_DESERIALIZATION_ERROR:
        return BroadcastRefused("TX decode failed", e.message)
    if e.code == S.RPC_VERIFY_ALREADY_IN_CHAIN:
        return BroadcastRefused("txn-already-known", e.message)
    if e.code == S.RPC_VERIFY_ERROR and ("missing" in e.message.lower() or "missingorspent" in e.message):
        return BroadcastRefused("bad-txns-inputs-missingorspent", e.message)
    reason, _, detail = e.message.partition(", ")
    return BroadcastRefused(reason, detail)


# ``getblockchaininfo.chain`` of each configured network, as Bitcoin Core names them.
CHAIN_NAMES = {"mainnet": ("main",), "testnet": ("test", "testnet4"), "signet": ("signet",), "regtest": ("regtest",)}


def check_network(network: str, chain: str, url: str) -> None:
    """Refuse a server on another network. A public test network (signet, testnet) accepts a
    regtest server with a warning: a private chain standing in for it in a trial. Mainnet
    accepts nothing but main, and a regtest node nothing but regtest."""
    if chain in CHAIN_NAMES.get(network, (network,)):
        return
    if chain == "regtest" and network in ("signet", "testnet"):
        log.warning("[chain] network = %s, but the RPC node at %s runs a regtest chain: a private "
                    "trial chain, not %s", network, url, network)
        return
    raise WrongNetwork(f"[chain] network = {network}, but the RPC node at {url} follows "
                       f"{chain or 'an unnamed chain'}: point url at a {network} node")


class RpcChainClient:
    def __init__(self, url: str, creds: RpcCredentials, *, poll: float = 1.0, network: str = "regtest") -> None:
        self.url = url.rstrip("/") + "/"
        self.creds = creds
        self.poll = poll
        self.network = network
        self.listeners: list[Listener] = []
        self.outpoints: set[OutPoint] = set()
        self.scripts: set[bytes] = set()
        self.requests = 0  # requests sent so far (node status: what the node costs the server)
        self._auth = ""
        self._ids = 0
        self._session: aiohttp.ClientSession | None = None
        self._known: dict[int, str] = {}  # height -> hash of the blocks seen (the reorg window)
        self._tip: Tip | None = None
        self._mempool_seen: set[str] = set()
        self._poller: asyncio.Task[None] | None = None
        self._scan_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str, creds: RpcCredentials, *, poll: float = 1.0,
                      network: str = "regtest") -> RpcChainClient:
        """Connect and check the remote node; its first answer must come (else ``ChainUnavailable``)."""
        c = cls(url, creds, poll=poll, network=network)
        try:
            check_network(network, str((await c._call("getblockchaininfo")).get("chain", "")), url)
            tip = await c.tip()
            c._remember(tip.height, tip.block_hash)
            c._tip = tip
            c._mempool_seen = set(await c._call("getrawmempool"))
            indexes = await c._call("getindexinfo")
            missing = [i for i in ("txindex", "txospenderindex") if i not in indexes]
            if missing:
                log.warning("the chain's RPC node lacks %s: some lookups will fail", ", ".join(missing))
        except BaseException:
            await c.close()
            raise
        c._poller = asyncio.get_running_loop().create_task(c._poll_loop())
        return c

    # --- transport ------------------------------------------------------------------------------

    async def _post(self, payload: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        if not self._auth:
            self._auth = self.creds.header()
        body = json.dumps(payload)
        for attempt in (0, 1):
            self.requests += 1
            try:
                async with self._session.post(self.url, data=body, headers={
                        "Authorization": self._auth, "Content-Type": "application/json"}) as resp:
                    if resp.status == 401 and attempt == 0:
                        self._auth = self.creds.header()  # bitcoind may have restarted with a new cookie
                        continue
                    if resp.status == 401:
                        raise ChainUnavailable(f"the chain's RPC at {self.url} refused our credentials")
                    try:
                        return await resp.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        raise ChainUnavailable(f"the chain's RPC at {self.url} answered HTTP {resp.status} "
                                               "without JSON") from None
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise ChainUnavailable(f"cannot reach the chain's RPC at {self.url}: {e or type(e).__name__}") from e
        raise AssertionError("unreachable")

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    @staticmethod
    def _result(reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise ChainUnavailable(f"malformed RPC reply: {reply!r:.200}")
        err = reply.get("error")
        if err:
            raise RpcError(int(err.get("code", S.RPC_MISC_ERROR)), str(err.get("message", "")))
        return reply.get("result")

    async def _call(self, method: str, *params: Any) -> Any:
        return self._result(await self._post({"jsonrpc": "1.0", "id": self._next_id(), "method": method,
                                              "params": list(params)}))

    async def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Results in order; an item that failed is its ``RpcError`` (not raised)."""
        if not calls:
            return []
        first = self._ids + 1
        payload = [{"jsonrpc": "1.0", "id": self._next_id(), "method": m, "params": p} for m, p in calls]
        replies = await self._post(payload)
        if not isinstance(replies, list):
            self._result(replies)  # a whole-batch error
            raise ChainUnavailable("malformed RPC batch reply")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out: list[Any] = []
        for i in range(len(calls)):
            try:
                out.append(self._result(by_id.get(first + i)))
            except RpcError as e:
                out.append(e)
        return out

    # --- ChainBackend -----------------------------------------------------------------------------

    async def tip(self) -> Tip:
        try:
            info = await self._call("getblockchaininfo")
            return Tip(int(info["blocks"]), str(info["bestblockhash"]), int(info["mediantime"]))
        except RpcError as e:
            raise ChainUnavailable(f"getblockchaininfo failed: {e}") from None

    async def get_utxo(self, outpoint: OutPoint) -> Utxo | None:
        # One batch: the height of a confirmed coin needs the tip its confirmations count from.
        count, out = await self._batch([("getblockcount", []),
                                        ("gettxout", [outpoint.txid, outpoint.vout, True])])
        for r in (count, out):
            if isinstance(r, RpcError):
                raise InvalidRequest(f"gettxout {outpoint}: {r}")
        if out is None:
            return None
        conf = int(out["confirmations"])
        height = None if conf == 0 else int(count) - conf + 1
        return Utxo(outpoint, S.sats(out["value"]), bytes.fromhex(out["scriptPubKey"]["hex"]), height,
                    bool(out.get("coinbase", False)))

    async def _mempool_txs(self) -> dict[str, Tx]:
        txids = await self._call("getrawmempool")
        raws = await self._batch([("getrawtransaction", [t, 0]) for t in txids])
        out: dict[str, Tx] = {}
        for t, raw in zip(txids, raws, strict=True):
            if isinstance(raw, str):  # else it left the mempool in between
                try:
                    out[t] = decode_tx(bytes.fromhex(raw))
                except (TxDecodeError, ValueError):
                    log.warning("undecodable mempool transaction %s from the chain's RPC", t)
        return out

    async def list_unspent(self, script_pubkey: bytes) -> list[Utxo]:
        spk = bytes(script_pubkey)
        async with self._scan_lock:  # bitcoind runs one scan at a time ("Scan already in progress")
            scan = await self._call("scantxoutset", "start", [f"raw({spk.hex()})"])
        pool = await self._mempool_txs()
        spent = {(i.prev_txid_hex, i.prev_vout) for tx in pool.values() for i in tx.inputs}
        out = [Utxo(OutPoint(u["txid"], int(u["vout"])), S.sats(u["amount"]), spk, int(u["height"]),
                    bool(u.get("coinbase", False)))
               for u in scan.get("unspents", []) if (u["txid"], int(u["vout"])) not in spent]
        for txid, tx in pool.items():
            for vout, o in enumerate(tx.outputs):
                if o.script_pubkey == spk and (txid, vout) not in spent:
                    out.append(Utxo(OutPoint(txid, vout), o.value, spk, None))
        return out

    async def get_transaction(self, txid: str) -> bytes:
        try:
            return bytes.fromhex(await self._call("getrawtransaction", txid, 0))
        except RpcError as e:
            if e.code == S.RPC_INVALID_ADDRESS_OR_KEY:
                raise UnknownTransaction(f"unknown transaction {txid}") from None
            raise InvalidRequest(str(e)) from None

    async def _height_of(self, block_hash: str) -> int:
        return int((await self._call("getblockheader", block_hash, True))["height"])

    async def tx_status(self, txid: str) -> TxStatus:
        try:
            d = await self._call("getrawtransaction", txid, 1)
        except RpcError as e:
            if e.code == S.RPC_INVALID_ADDRESS_OR_KEY:
                raise UnknownTransaction(f"unknown transaction {txid}") from None
            raise InvalidRequest(str(e)) from None
        bh = d.get("blockhash")
        if not bh or int(d.get("confirmations", 0)) <= 0:
            return TxStatus(txid, True, None, None, 0)
        return TxStatus(txid, False, await self._height_of(bh), bh, int(d["confirmations"]))

    async def spender(self, outpoint: OutPoint) -> Spend | None:
        try:
            rows = await self._call("gettxspendingprevout", [{"txid": outpoint.txid, "vout": outpoint.vout}],
                                    {"return_spending_tx": True})
        except RpcError as e:
            raise InvalidRequest(f"gettxspendingprevout {outpoint}: {e}") from None
        row = rows[0] if rows else {}
        sp = row.get("spendingtxid")
        if not sp:
            return None
        raw = row.get("spendingtx") or await self._call("getrawtransaction", sp, 0)
        tx = decode_tx(bytes.fromhex(raw))
        idx = next(i for i, t in enumerate(tx.inputs)
                   if (t.prev_txid_hex, t.prev_vout) == (outpoint.txid, outpoint.vout))
        bh = row.get("blockhash")
        return Spend(outpoint, sp, idx, await self._height_of(bh) if bh else None)

    async def broadcast(self, raw_tx: bytes) -> str:
        try:
            # maxfeerate 0: the channel sets its own fees (e.g. a penalty may spend a lot on fees).
            return str(await self._call("sendrawtransaction", bytes(raw_tx).hex(), 0))
        except RpcError as e:
            raise _refused(e) from None

    async def estimate_fee(self, target_blocks: int) -> int:
        try:
            d = await self._call("estimatesmartfee", target_blocks)
        except RpcError as e:
            raise InvalidRequest(str(e)) from None
        if d.get("feerate") is not None:
            return S.sats(d["feerate"])
        # No estimate yet (a young chain): the mempool's floor.
        info = await self._call("getmempoolinfo")
        return max(S.sats(info.get("mempoolminfee", 0)), S.sats(info.get("minrelaytxfee", 0.00001)))

    async def watch_outpoint(self, outpoint: OutPoint) -> None:
        self.outpoints.add(outpoint)

    async def watch_script(self, script_pubkey: bytes) -> None:
        self.scripts.add(bytes(script_pubkey))

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, Exception):  # noqa: S110 (the loop's own errors are logged)
                pass
            self._poller = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- regtest extras -------------------------------------------------------------------------

    async def mine(self, n: int, to_script: bytes | None = None) -> list[str]:
        spk = OP_TRUE_P2WSH if to_script is None else bytes(to_script)
        address = script_to_address(spk, {"mainnet": "main", "testnet": "test"}.get(self.network, self.network))
        if address is None:
            raise InvalidRequest("generatetoaddress needs a script with an address")
        try:
            return list(await self._call("generatetoaddress", n, address))
        except RpcError as e:
            if e.code == S.RPC_MISC_ERROR and "refused" in e.message:
                raise NotOwner(e.message) from None
            raise InvalidRequest(str(e)) from None

    # --- subscriptions (polling) ----------------------------------------------------------------

    def _remember(self, height: int, block_hash: str) -> None:
        for h in [h for h in self._known if h >= height]:
            del self._known[h]
        self._known[height] = block_hash
        for h in [h for h in self._known if h <= height - REORG_WINDOW]:
            del self._known[h]

    def _emit(self, ev: ChainEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(ev)
            except Exception:  # supervision boundary: one bad listener must not stop the others
                log.exception("chain listener failed on %r", ev)

    def _tx_events(self, tx: Tx, height: int | None) -> list[ChainEvent]:
        out: list[ChainEvent] = []
        if self.outpoints and not tx.is_coinbase:
            for i, txin in enumerate(tx.inputs):
                op = OutPoint(txin.prev_txid_hex, txin.prev_vout)
                if op in self.outpoints:
                    out.append(OutpointSpent(Spend(op, tx.txid, i, height)))
        if self.scripts:
            for spk in {o.script_pubkey for o in tx.outputs} & self.scripts:
                out.append(ScriptActivity(spk, tx.txid, height))
        return out

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.poll_once()
            except ChainUnavailable as e:
                log.warning("chain RPC poll failed: %s", e)
            except (RpcError, KeyError, ValueError, TypeError, TxDecodeError) as e:
                log.warning("chain RPC poll got something unexpected: %r", e)

    async def poll_once(self) -> None:
        """One look at the remote chain (the loop calls it every ``poll`` seconds)."""
        best = str(await self._call("getbestblockhash"))
        if self._tip is None or best != self._tip.block_hash:
            await self._follow(best)
        if self.outpoints or self.scripts:
            txids = await self._call("getrawmempool")
            new = [t for t in txids if t not in self._mempool_seen]
            raws = await self._batch([("getrawtransaction", [t, 0]) for t in new])
            for raw in raws:
                if isinstance(raw, str):
                    for ev in self._tx_events(decode_tx(bytes.fromhex(raw)), None):
                        self._emit(ev)
            self._mempool_seen = set(txids)
        else:
            self._mempool_seen = set(await self._call("getrawmempool"))

    async def _follow(self, best: str) -> None:
        """Walk back from ``best`` to a block we knew; emit the reorg, the tip and the blocks' events."""
        header = await self._call("getblockheader", best, True)
        connected: list[tuple[int, str]] = []
        h, bh, hdr = int(header["height"]), best, header
        floor = min(self._known) if self._known else h
        while h >= floor and self._known.get(h) != bh:
            connected.append((h, bh))
            prev = hdr.get("previousblockhash")
            if prev is None:
                break
            h, bh = h - 1, str(prev)
            if h >= floor and self._known.get(h) != bh:
                hdr = await self._call("getblockheader", bh, True)
        fork = h if self._known.get(h) == bh else floor - 1
        gone = sorted((x for x in self._known if x > fork), reverse=True)
        if gone:
            self._emit(Reorg(fork, tuple(self._known[x] for x in gone)))
            for x in gone:
                del self._known[x]
        tip = Tip(int(header["height"]), best, int(header["mediantime"]))
        self._tip = tip
        for height, block_hash in reversed(connected):
            self._remember(height, block_hash)
        self._emit(NewTip(tip))
        if self.outpoints or self.scripts:
            # Blocks below the window's floor (a first look after a long absence) are not replayed.
            for height, block_hash in reversed(connected):
                raw = await self._call("getblock", block_hash, 0)
                for tx in decode_block(bytes.fromhex(raw)).txs:
                    for ev in self._tx_events(tx, height):
                        self._emit(ev)
