"""``SpvChainClient``: the ``ChainBackend`` over the standard Electrum protocol, as an SPV client.

This is ``[chain] backend = "electrum"``: it works against any server that speaks the protocol
(ElectrumX, Fulcrum, electrs, ``eschaton chain serve``) and trusts none of them further than it
can check. Only standard methods are used: ``server.version`` (1.4 to 1.6),
``blockchain.headers.subscribe``, ``blockchain.block.headers``, ``blockchain.scripthash.
subscribe/get_history/listunspent``, ``blockchain.transaction.get/get_merkle/broadcast``,
``blockchain.estimatefee`` and ``blockchain.relayfee`` (1.4) or ``mempool.get_info`` (1.6).

Rules / theory of operation:
- Headers: on connect and on each tip notification the client fetches the headers it lacks
  (chunks of ``blockchain.block.headers``) and offers them to the ``HeaderChain``, which checks
  linkage, proof of work and the network's difficulty rules, and follows the branch with the
  most work. Headers that do not link to ours are a fork further down: the client steps back
  (1, 2, 4, ... headers) until they link. ``tip()`` is our verified chain's tip.
- Confirmations: a height from the server is believed only after a merkle proof
  (``get_merkle``) for the transaction, whose raw bytes we hold and checked, leads to the
  merkle root of our header at that height. Proofs are remembered until a reorg replaces their
  block; after a reorg the next question proves again.
- Watching: the backend's outpoints and scripts are scripthash subscriptions of the output's
  script. A status notification drops that script's cached history and, in order, yields
  ``OutpointSpent`` (the spender found in the script's history: the transaction whose inputs
  spend the outpoint) and ``ScriptActivity`` (a transaction new to, or moved in, the history).
- Notifications are handled by one task in arrival order, so listeners see a ``Reorg`` before
  the ``NewTip`` and before the spends of the new branch.
- A server that lies (a header breaking a rule, a proof not matching our header, a transaction
  not hashing to its txid) is dropped (``ServerPool.drop``: one log line) and the call raises
  ``ServerLied``, a ``ChainUnavailable``: ``ReopeningChain`` then reconnects to the next server.
- Limits (see docs/chain.md): the server still chooses what it tells us. It can withhold a
  transaction or a spend (an SPV client cannot prove absence), and it sees which scripts we
  watch. Several servers limit the first; a channel's own watcher does not depend on the
  server to broadcast its answers (they go to every server we reach, in turn).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from aiorpcx import RPCError, RPCSession, TaskTimeout, connect_rs

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
from eschaton.chain.electrum import protocol as P
from eschaton.chain.electrum.spv import ServerPool, SpvHeaders
from eschaton.chain.errors import ChainUnavailable, InvalidRequest
from eschaton.core.spv import merkle
from eschaton.core.spv.headers import HEADER, BadHeader, Unlinked
from eschaton.core.txcodec import Tx, TxDecodeError, decode_tx

log = logging.getLogger(__name__)

VERSIONS = ("1.4", "1.6")  # the range we speak; the server picks the highest it shares
CHUNK = 2016  # headers per request (ElectrumX's maximum)
REQUEST_TIMEOUT = 60.0
OP_RETURN = 0x6A
METHOD_NOT_FOUND = -32601
FANOUT = 16  # requests one lookup keeps in flight at once


class ServerLied(ChainUnavailable):
    """The server sent something that fails verification; it has been dropped."""


def _sh(spk: bytes) -> str:
    return hashlib.sha256(spk).digest()[::-1].hex()


class _Session(RPCSession):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()

    async def handle_request(self, request: Any) -> None:
        self.inbox.put_nowait((request.method, list(request.args)))


class SpvChainClient:
    def __init__(self, server: tuple[str, int], headers: SpvHeaders, pool: ServerPool | None = None) -> None:
        self.server = server
        self.where = f"{server[0]}:{server[1]}"
        self.h = headers
        self.pool = pool
        self.listeners: list[Listener] = []
        self.requests = 0
        self.version = (1, 4)
        self._conn: Any = None
        self.session: _Session | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._server_tip: tuple[int, bytes] | None = None
        self.outpoints: dict[OutPoint, str | None] = {}  # watched -> scripthash (None: tx not yet known)
        self.scripts: dict[str, bytes] = {}  # scripthash of a watched script -> script
        self._subscribed: set[str] = set()
        self._history: dict[str, list[tuple[str, int]]] = {}  # subscribed scripthash -> history
        self._seen_spends: dict[OutPoint, tuple[str, int | None]] = {}
        self._seen_history: dict[str, set[tuple[str, int]]] = {}
        self._utxos: dict[str, list[Utxo]] = {}  # subscribed scripthash -> its unspent outputs
        self._changes: dict[str, int] = {}  # scripthash -> status notifications so far
        self.lied: str | None = None
        self._abort: asyncio.Task[None] | None = None
        self._fanout = asyncio.Semaphore(FANOUT)

    @classmethod
    async def connect(cls, server: tuple[str, int], headers: SpvHeaders,
                      pool: ServerPool | None = None) -> SpvChainClient:
        c = cls(server, headers, pool)
        try:
            await c._start()
        except BaseException:
            await c.close()
            raise
        return c

    async def _start(self) -> None:
        host, port = self.server
        self._conn = connect_rs(host, port, session_factory=_Session)
        try:
            self.session = await self._conn.__aenter__()
        except OSError as e:
            raise ChainUnavailable(f"cannot reach the Electrum server {self.where}: {e}") from e
        assert self.session is not None
        self.session.sent_request_timeout = REQUEST_TIMEOUT
        answer = await self._call("server.version", "eschaton", list(VERSIONS))
        try:
            self.version = tuple(int(x) for x in str(answer[1]).split(".")[:2])  # type: ignore[assignment]
        except (TypeError, ValueError, IndexError):
            raise ChainUnavailable(f"Electrum server {self.where}: no protocol version in {answer!r:.80}") from None
        if not (1, 4) <= self.version <= (1, 6):
            raise ChainUnavailable(f"Electrum server {self.where} speaks protocol {answer[1]}, not 1.4 to 1.6")
        tip = await self._call("blockchain.headers.subscribe")
        self._note_tip(tip)
        await self._sync_headers()
        log.info("Electrum server %s (%s, protocol %s): headers to %d", self.where, answer[0], answer[1],
                 self.h.chain.height)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    # --- transport ----------------------------------------------------------------------------

    async def _call(self, method: str, *args: Any) -> Any:
        if self.lied is not None:
            raise ServerLied(f"Electrum server {self.where} was dropped: {self.lied}")
        if self.session is None or self.session.is_closing():
            raise ChainUnavailable(f"not connected to the Electrum server {self.where}")
        self.requests += 1
        try:
            return await self.session.send_request(method, args)
        except RPCError as e:
            if e.code == METHOD_NOT_FOUND:  # not a server we can use: let the pool try the next
                raise ChainUnavailable(f"Electrum server {self.where} does not offer {method}") from None
            raise
        except (ConnectionError, OSError, TaskTimeout) as e:
            raise ChainUnavailable(f"Electrum server {self.where} connection lost: {e!r}") from e
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ChainUnavailable(f"Electrum server {self.where} connection lost") from None

    def _lie(self, why: str) -> ServerLied:
        """Drop this server (once) and give the error to raise."""
        if self.lied is None:
            self.lied = why
            if self.pool is not None:
                self.pool.drop(self.server, why)
            else:
                log.error("dropping Electrum server %s: %s", self.where, why)
            if self.session is not None:  # nothing more from it, not even notifications
                self._abort = asyncio.get_running_loop().create_task(self.session.abort())
        return ServerLied(f"Electrum server {self.where} lied: {why}")

    # --- headers ------------------------------------------------------------------------------

    def _note_tip(self, d: Any) -> None:
        try:
            self._server_tip = (int(d["height"]), bytes.fromhex(d["hex"]))
        except (TypeError, KeyError, ValueError) as e:
            raise self._lie(f"malformed tip {d!r:.80}") from e

    async def _headers(self, start: int, count: int) -> list[bytes]:
        d = await self._call("blockchain.block.headers", start, count)
        try:
            if "headers" in d:
                out = [bytes.fromhex(x) for x in d["headers"]]
            else:
                raw = bytes.fromhex(d["hex"])
                out = [raw[i:i + HEADER] for i in range(0, len(raw), HEADER)]
        except (TypeError, KeyError, ValueError) as e:
            raise self._lie(f"malformed headers reply {d!r:.80}") from e
        if len(out) > count or any(len(x) != HEADER for x in out):
            raise self._lie("headers reply of the wrong size")
        return out

    async def _sync_headers(self) -> list[ChainEvent]:
        """Fetch and verify the headers up to the server's tip; the events to tell listeners."""
        async with self._sync_lock:
            return await self._sync_locked()

    async def _sync_locked(self) -> list[ChainEvent]:
        assert self._server_tip is not None
        chain = self.h.chain
        target, tip_raw = self._server_tip
        before = chain.tip_hash()
        reorg: Reorg | None = None
        if target <= chain.height and chain.header(target) == tip_raw:
            return []  # we know it (the server is at or behind our tip)
        start = min(chain.height + 1, max(target, 1))
        back = 1
        pending: list[bytes] = []
        pending_start = start
        while start <= target:
            got = await self._headers(start, min(CHUNK, target - start + 1))
            if not got:
                break
            batch = pending + got
            try:
                r = chain.apply(pending_start, batch)
            except Unlinked:
                if pending:
                    raise self._lie("a branch that stopped linking while we fetched it") from None
                if pending_start <= 1:
                    raise self._lie("headers that do not link to genesis") from None
                start = pending_start = max(1, pending_start - back)
                back *= 2
                continue
            except BadHeader as e:
                raise self._lie(str(e)) from None
            self.h.applied(r)
            if r.fork_height is not None and reorg is None:
                reorg = Reorg(r.fork_height, r.disconnected)
            end = pending_start + len(batch) - 1
            if r.applied or (end <= chain.height and chain.header(end) == batch[-1]):
                pending, pending_start = [], end + 1
            else:
                pending = batch  # a fork with no more work than ours yet: keep fetching
            start = end + 1
        if pending:
            log.warning("Electrum server %s is on a branch with less work than ours (its tip %d)",
                        self.where, target)
        events: list[ChainEvent] = []
        if reorg is not None:
            self._utxos.clear()  # their heights were proven against replaced headers
            log.warning("chain reorganised: fork at %d, %d blocks replaced", reorg.fork_height,
                        len(reorg.disconnected))
            events.append(reorg)
        if chain.tip_hash() != before:
            events.append(NewTip(self._tip()))
        return events

    def _tip(self) -> Tip:
        c = self.h.chain
        return Tip(c.height, c.tip_hash(), c.median_time_past())

    # --- notifications ------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self.session is not None
        inbox = self.session.inbox
        while True:
            method, args = await inbox.get()
            try:
                await self._notification(method, args)
            except ChainUnavailable as e:
                log.warning("Electrum server %s: %s", self.where, e)
                return
            except (RPCError, KeyError, ValueError, TypeError, IndexError, TxDecodeError) as e:
                log.warning("Electrum server %s sent something unexpected: %r", self.where, e)

    async def _notification(self, method: str, args: list[Any]) -> None:
        if method == "blockchain.headers.subscribe":
            self._note_tip(args[0])
            self._emit(await self._sync_headers())
        elif method == "blockchain.scripthash.subscribe":
            sh = str(args[0])
            self._history.pop(sh, None)
            self._utxos.pop(sh, None)
            self._changes[sh] = self._changes.get(sh, 0) + 1
            self._emit(await self._script_events(sh))

    def _emit(self, events: list[ChainEvent]) -> None:
        for ev in events:
            for listener in list(self.listeners):
                try:
                    listener(ev)
                except Exception:  # supervision boundary: one bad listener must not stop the others
                    log.exception("chain listener failed on %r", ev)

    async def _script_events(self, sh: str) -> list[ChainEvent]:
        out: list[ChainEvent] = []
        for op, op_sh in list(self.outpoints.items()):
            if op_sh == sh:
                sp = await self.spender(op)
                if sp is not None and self._seen_spends.get(op) != (sp.txid, sp.height):
                    self._seen_spends[op] = (sp.txid, sp.height)
                    out.append(OutpointSpent(sp))
        spk = self.scripts.get(sh)
        if spk is not None:
            hist = set(await self._get_history(sh))
            for txid, height in sorted(hist - self._seen_history.get(sh, set()), key=lambda x: x[1] <= 0):
                conf = await self._proven_height(txid, height)
                out.append(ScriptActivity(spk, txid, conf))
            self._seen_history[sh] = hist
        return out

    # --- lookups ------------------------------------------------------------------------------

    async def _subscribe(self, sh: str) -> None:
        if sh not in self._subscribed:
            await self._call("blockchain.scripthash.subscribe", sh)
            self._subscribed.add(sh)

    async def _get_history(self, sh: str) -> list[tuple[str, int]]:
        cached = self._history.get(sh)
        if cached is not None:
            return cached
        rows = await self._call("blockchain.scripthash.get_history", sh)
        try:
            hist = [(str(r["tx_hash"]), int(r["height"])) for r in rows]
        except (TypeError, KeyError, ValueError) as e:
            raise self._lie(f"malformed history {rows!r:.80}") from e
        if sh in self._subscribed:
            self._history[sh] = hist
        return hist

    async def _raw_tx(self, txid: str) -> bytes:
        raw = self.h.txs.get(txid)
        if raw is not None:
            return raw
        try:
            hexed = await self._call("blockchain.transaction.get", txid)
        except RPCError as e:
            msg = str(e.message)
            if e.code == P.UNKNOWN_TX or "No such" in msg or "not found" in msg.lower():
                raise UnknownTransaction(f"unknown transaction {txid}") from None
            raise InvalidRequest(f"blockchain.transaction.get {txid}: {msg}") from None
        try:
            raw = bytes.fromhex(hexed)
            tx = decode_tx(raw)
        except (TypeError, ValueError, TxDecodeError) as e:
            raise self._lie(f"undecodable transaction for {txid}") from e
        if tx.txid != txid:
            raise self._lie(f"a transaction hashing to {tx.txid} for {txid}")
        self.h.remember_tx(txid, raw)
        return raw

    async def _tx(self, txid: str) -> Tx:
        return decode_tx(await self._raw_tx(txid))

    async def _proven_height(self, txid: str, height: int) -> int | None:
        """``height`` once a merkle proof binds ``txid`` to our header there; None if unconfirmed."""
        if height <= 0:
            return None
        if self.h.proven_at(txid, height):
            return height
        if height > self.h.chain.height:
            # The server knows a block we have not verified yet: catch up first.
            tip = await self._call("blockchain.headers.subscribe")
            self._note_tip(tip)
            self._emit(await self._sync_headers())
            if height > self.h.chain.height:
                return None
        raw = await self._raw_tx(txid)
        if not merkle.tx_may_be_proven(raw, txid):
            return None  # a 64-byte transaction could pose as a tree node: never believed
        d = await self._call("blockchain.transaction.get_merkle", txid, height)
        try:
            ok = int(d["block_height"]) == height and merkle.proves(
                self.h.chain.header(height), txid, [str(x) for x in d["merkle"]], int(d["pos"]))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise self._lie(f"merkle proof for {txid} at {height} does not match our header "
                            f"{self.h.chain.hash_at(height)} (a lie, or a branch with less work)")
        self.h.proven[txid] = (height, self.h.chain.hash_at(height))
        return height

    @staticmethod
    def _lookup_script(tx: Tx) -> bytes:
        """A script whose history holds ``tx`` (servers do not index OP_RETURN outputs)."""
        for o in tx.outputs:
            if o.script_pubkey[:1] != bytes([OP_RETURN]):
                return o.script_pubkey
        raise InvalidRequest(f"transaction {tx.txid} has no output a server indexes")

    # --- ChainBackend -------------------------------------------------------------------------

    async def tip(self) -> Tip:
        if self.lied is not None or self.session is None or self.session.is_closing():
            raise ChainUnavailable(f"not connected to the Electrum server {self.where}")
        return self._tip()

    async def get_utxo(self, outpoint: OutPoint) -> Utxo | None:
        try:
            tx = await self._tx(outpoint.txid)
        except UnknownTransaction:
            return None
        if outpoint.vout >= len(tx.outputs):
            return None
        out = tx.outputs[outpoint.vout]
        for u in await self.list_unspent(out.script_pubkey):
            if u.outpoint == outpoint:
                return u
        return None

    async def list_unspent(self, script_pubkey: bytes) -> list[Utxo]:
        spk = bytes(script_pubkey)
        sh = _sh(spk)
        cached = self._utxos.get(sh)
        if cached is not None:
            return list(cached)
        generation = self._changes.get(sh, 0)
        # Subscribed, so the answer can be kept until the server says the script changed: a
        # wallet asks about the same scripts again and again, and each request costs a round trip.
        _, rows = await asyncio.gather(self._subscribe(sh),
                                       self._call("blockchain.scripthash.listunspent", sh))
        try:
            coins = [(str(r["tx_hash"]), int(r["tx_pos"]), int(r["value"]), int(r["height"])) for r in rows]
        except (TypeError, KeyError, ValueError) as e:
            raise self._lie(f"malformed listunspent reply {rows!r:.80}") from e

        async def check(txid: str, vout: int, value: int, height: int) -> Utxo:
            async with self._fanout:
                tx = await self._tx(txid)
                if vout >= len(tx.outputs) or tx.outputs[vout].script_pubkey != spk or tx.outputs[vout].value != value:
                    raise self._lie(f"listunspent names {txid}:{vout}, which does not pay that script that much")
                return Utxo(OutPoint(txid, vout), value, spk, await self._proven_height(txid, height), tx.is_coinbase)

        # Concurrently: a new wallet's first look proves every coin, and servers answer a batch
        # of requests far faster than the same requests one after another.
        out = list(await asyncio.gather(*(check(*c) for c in coins)))
        if self._changes.get(sh, 0) == generation:  # no notification meanwhile: still current
            self._utxos[sh] = out
        return list(out)

    async def get_transaction(self, txid: str) -> bytes:
        return await self._raw_tx(txid)

    async def tx_status(self, txid: str) -> TxStatus:
        tx = await self._tx(txid)
        sh = _sh(self._lookup_script(tx))
        height = next((h for t, h in await self._get_history(sh) if t == txid), None)
        if height is None:
            # Known to the server's node but not (yet) to its index: it just arrived in the mempool.
            return TxStatus(txid, True, None, None, 0)
        conf = await self._proven_height(txid, height)
        if conf is None:
            return TxStatus(txid, True, None, None, 0)
        return TxStatus(txid, False, conf, self.h.chain.hash_at(conf), self.h.chain.height - conf + 1)

    async def spender(self, outpoint: OutPoint) -> Spend | None:
        try:
            tx = await self._tx(outpoint.txid)
        except UnknownTransaction:
            return None
        if outpoint.vout >= len(tx.outputs):
            return None
        sh = _sh(tx.outputs[outpoint.vout].script_pubkey)
        if outpoint in self.outpoints and self.outpoints[outpoint] is None:
            self.outpoints[outpoint] = sh  # the funding transaction became known: watch it now
            await self._subscribe(sh)
        others = [(t, h) for t, h in await self._get_history(sh) if t != outpoint.txid]

        async def fetch(txid: str) -> Tx:
            async with self._fanout:
                return await self._tx(txid)

        found: Spend | None = None
        spending_txs = await asyncio.gather(*(fetch(t) for t, _ in others))
        for (txid, height), spending in zip(others, spending_txs, strict=True):
            for i, txin in enumerate(spending.inputs):
                if (txin.prev_txid_hex, txin.prev_vout) == (outpoint.txid, outpoint.vout):
                    conf = await self._proven_height(txid, height)
                    if conf is not None:
                        return Spend(outpoint, txid, i, conf)  # a confirmed spend wins
                    found = found or Spend(outpoint, txid, i, None)
        return found

    async def broadcast(self, raw_tx: bytes) -> str:
        try:
            return str(await self._call("blockchain.transaction.broadcast", bytes(raw_tx).hex()))
        except RPCError as e:
            raise _refused(str(e.message)) from None

    async def estimate_fee(self, target_blocks: int) -> int:
        rate = float(await self._call("blockchain.estimatefee", target_blocks))
        if rate <= 0:  # no estimate yet: the relay floor
            if self.version >= (1, 6):
                rate = float((await self._call("mempool.get_info")).get("minrelaytxfee", 0.00001))
            else:
                rate = float(await self._call("blockchain.relayfee"))
        return round(rate * 1e8)

    async def watch_outpoint(self, outpoint: OutPoint) -> None:
        try:
            tx = await self._tx(outpoint.txid)
        except UnknownTransaction:
            self.outpoints[outpoint] = None  # subscribed once the transaction is known (spender)
            return
        if outpoint.vout >= len(tx.outputs):
            raise InvalidRequest(f"{outpoint}: the transaction has {len(tx.outputs)} outputs")
        sh = _sh(tx.outputs[outpoint.vout].script_pubkey)
        self.outpoints[outpoint] = sh
        await self._subscribe(sh)

    async def watch_script(self, script_pubkey: bytes) -> None:
        spk = bytes(script_pubkey)
        sh = _sh(spk)
        self.scripts[sh] = spk
        await self._subscribe(sh)
        self._seen_history[sh] = set(await self._get_history(sh))

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: S110 (its errors were logged)
                pass
            self._worker = None
        if self.session is not None:
            try:
                await self.session.close(force_after=1)
            except Exception:  # supervision boundary: the server may already be gone
                log.debug("closing the Electrum session failed", exc_info=True)
            self.session = None


def _refused(msg: str) -> BroadcastRefused:
    """A refused broadcast, reason first. ElectrumX: the prefix, a blank line, the node's message
    (``reason, detail`` as bitcoind writes it), then ``[raw tx]``; ours: reason and detail on
    lines three and four."""
    lines = msg.split("\n")
    if lines[0].startswith(P.REFUSED_PREFIX) and len(lines) > 2:
        if len(lines) > 3 and not lines[3].startswith("["):
            return BroadcastRefused(lines[2], lines[3])
        reason, _, detail = lines[2].partition(", ")
        return BroadcastRefused(reason, detail)
    reason, _, detail = msg.partition(", ")
    return BroadcastRefused(reason, detail)
