"""One client's Electrum session: the method table, argument checks, subscriptions.

The methods and the two levels of trust are described in ``server.py``; this module holds the
per-connection side (each session has its own subscriptions and notification queue; what it
reads comes from the server's shared ``ScriptIndex``)."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiorpcx import ReplyAndDisconnect, RPCError, RPCSession, handler_invocation

from eschaton.chain.backend import BroadcastRefused, OutPoint, UnknownTransaction
from eschaton.chain.electrum import protocol as P
from eschaton.chain.electrum import versions as V
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import NodeUpdate
from eschaton.chain.embedded.policy import MIN_RELAY_FEE
from eschaton.chain.errors import BlockRejected
from eschaton.core.txcodec import TxDecodeError, decode_tx
from eschaton.errors import EschatonError

if TYPE_CHECKING:
    from eschaton.chain.electrum.server import ElectrumServer

log = logging.getLogger(__name__)

SOCKET_FILE = "electrum.sock"
# Methods that make blocks: only sessions on the owner socket may call them (server.py).
OWNER_METHODS = frozenset({"eschaton.mine", "eschaton.mine_branch", "eschaton.submit_block"})
MAX_HEADERS = 2016  # headers per blockchain.block.headers call: one retarget period, as the protocol advises


def _hex(s: Any, what: str, length: int | None = None) -> bytes:
    if not isinstance(s, str):
        raise RPCError(P.BAD_REQUEST, f"{what} must be a hex string")
    try:
        b = bytes.fromhex(s)
    except ValueError:
        raise RPCError(P.BAD_REQUEST, f"{what} is not valid hex") from None
    if length is not None and len(b) != length:
        raise RPCError(P.BAD_REQUEST, f"{what} must be {length} bytes")
    return b


def _txid(s: Any) -> str:
    _hex(s, "txid", 32)
    return str(s).lower()


def _index(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
        raise RPCError(P.BAD_REQUEST, "output index must be an integer")
    return v


def _height(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0x7FFFFFFF:
        raise RPCError(P.BAD_REQUEST, f"{what} must be a non-negative integer")
    return v


def _sh(s: Any) -> bytes:
    try:
        return P.scripthash_bytes(s)
    except (ValueError, TypeError, AttributeError):
        raise RPCError(P.BAD_REQUEST, f"bad script hash {str(s)[:80]!r}") from None


def _raw_tx(s: Any) -> bytes:
    try:
        return bytes.fromhex(s) if isinstance(s, str) else b""
    except ValueError:
        raise BroadcastRefused("TX decode failed", "not hex") from None


def _txid_of(raw: bytes) -> str:
    try:
        return decode_tx(raw).txid
    except TxDecodeError:
        return ""


def _count(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= P.MAX_BLOCKS_PER_CALL:
        raise RPCError(P.BAD_REQUEST, f"number of blocks must be between 1 and {P.MAX_BLOCKS_PER_CALL}")
    return v


class ElectrumSession(RPCSession):  # type: ignore[misc]
    cost_hard_limit = 0  # local, trusted clients: no resource throttling

    def __init__(self, transport: Any, *, server: ElectrumServer, owner_socket: bool = False) -> None:
        super().__init__(transport)
        self.server = server
        # Trusted only on the owner socket, and only for the owner's user (or root, who can
        # read the datadir anyway): the socket's mode is the first check, this the second.
        uid = getattr(transport, "peer_uid", None)
        self.owner = owner_socket and uid is not None and uid in (os.geteuid(), 0)
        if owner_socket and not self.owner:
            log.warning("a connection to the owner socket from uid %s: read-only", uid)
        self.version: V.Version = V.MIN  # until server.version says otherwise (versions.py)
        self.negotiated = False
        self.scripts = server.scripts
        self.chain = EmbeddedChain(server.node, owns_node=False)
        self.chain.subscribe(self._on_event)
        self.events = False
        self.headers = False
        self.scripthashes: dict[str, str | None] = {}
        self.outpoints: dict[tuple[str, int], dict[str, Any]] = {}
        self.queue: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
        self.sender = asyncio.get_event_loop().create_task(self._send_loop())
        server.node.listeners.append(self._on_update)
        server.sessions.add(self)
        # One table: every method this server answers (``versions.has_method`` gates by version).
        self.handlers: dict[str, Callable[..., Awaitable[Any]]] = {
            "server.version": self.server_version,
            "server.ping": self.ping,
            "server.banner": self.banner,
            "server.donation_address": self.donation_address,
            "server.features": self.features,
            "server.peers.subscribe": self.peers_subscribe,
            "server.add_peer": self.add_peer,
            "blockchain.headers.subscribe": self.headers_subscribe,
            "blockchain.block.header": self.block_header,
            "blockchain.block.headers": self.block_headers,
            "blockchain.scripthash.get_history": self.get_history,
            "blockchain.scripthash.get_mempool": self.get_mempool,
            "blockchain.scripthash.listunspent": self.listunspent,
            "blockchain.scripthash.get_balance": self.get_balance,
            "blockchain.scripthash.subscribe": self.scripthash_subscribe,
            "blockchain.scripthash.unsubscribe": self.scripthash_unsubscribe,
            "blockchain.transaction.get": self.transaction_get,
            "blockchain.transaction.get_merkle": self.get_merkle,
            "blockchain.transaction.id_from_pos": self.id_from_pos,
            "blockchain.transaction.broadcast": self.transaction_broadcast,
            "blockchain.transaction.broadcast_package": self.broadcast_package,
            "blockchain.estimatefee": self.estimatefee,
            "blockchain.relayfee": self.relayfee,
            "mempool.get_info": self.mempool_info,
            "mempool.get_fee_histogram": self.fee_histogram,
            "blockchain.outpoint.subscribe": self.outpoint_subscribe,
            "blockchain.outpoint.unsubscribe": self.outpoint_unsubscribe,
            "eschaton.tip": self.tip,
            "eschaton.block_production": self.block_production,
            "eschaton.tx_status": self.tx_status,
            "eschaton.utxo": self.utxo,
            "eschaton.spender": self.spender,
            "eschaton.subscribe_events": self.subscribe_events,
            "eschaton.watch_outpoint": self.watch_outpoint,
            "eschaton.watch_script": self.watch_script,
            "eschaton.mine": self.mine,
            "eschaton.mine_branch": self.mine_branch,
            "eschaton.submit_block": self.submit_block,
        }

    # --- plumbing -----------------------------------------------------------------------------

    async def handle_request(self, request: Any) -> Any:
        if request.method in OWNER_METHODS and not self.owner:
            # The socket's name, not its path: a mesh peer has no business learning the datadir.
            raise RPCError(P.NOT_OWNER, f"{request.method} refused: only the chain's owner may make blocks, "
                                        f"through chain/{SOCKET_FILE} as the owner's user; "
                                        "this connection is read-only (and may broadcast transactions)")
        handler = self.handlers.get(request.method) if V.has_method(request.method, self.version) else None
        coro = handler_invocation(handler, request)  # an unknown method: JSON-RPC's -32601
        try:
            return await coro()
        except (RPCError, ReplyAndDisconnect):
            raise
        except BroadcastRefused as e:
            raise RPCError(P.TX_REFUSED, f"{P.REFUSED_PREFIX}\n\n{e.reason}\n{e.detail}") from None
        except UnknownTransaction as e:
            raise RPCError(P.UNKNOWN_TX, f"No such mempool or blockchain transaction. {e}") from None
        except BlockRejected as e:
            raise RPCError(P.DAEMON_ERROR, f"block rejected\n{e.reason}\n{e.block_hash}\n{e.detail}") from None
        except (EschatonError, ValueError, TypeError) as e:
            raise RPCError(P.BAD_REQUEST, str(e)) from None

    async def connection_lost(self) -> None:
        await super().connection_lost()
        self.detach()

    def detach(self) -> None:
        self.sender.cancel()
        if self._on_update in self.server.node.listeners:
            self.server.node.listeners.remove(self._on_update)
        self.chain.close_sync()
        self.server.sessions.discard(self)

    async def _send_loop(self) -> None:
        # One sender keeps notifications in the order the chain produced them.
        while True:
            method, args = await self.queue.get()
            try:
                await self.send_notification(method, args)
            except Exception:  # supervision boundary: a dead client must not stop the server
                log.debug("notification to a closed session dropped", exc_info=True)
                return

    def _on_event(self, ev: Any) -> None:
        if self.events:
            self.queue.put_nowait(("eschaton.event", [P.event_json(ev)]))

    def _on_update(self, update: NodeUpdate) -> None:
        if self.headers and (update.connected or update.disconnected):
            self.queue.put_nowait(("blockchain.headers.subscribe", [self._header_json()]))
        for sh, old in list(self.scripthashes.items()):
            new = self.scripts.status(P.scripthash_bytes(sh))
            if new != old:
                self.scripthashes[sh] = new
                self.queue.put_nowait(("blockchain.scripthash.subscribe", [sh, new]))
        for (txid, vout), old_st in list(self.outpoints.items()):
            new_st = self._outpoint_status(txid, vout)
            if new_st != old_st:
                self.outpoints[(txid, vout)] = new_st
                self.queue.put_nowait(("blockchain.outpoint.subscribe", [[txid, vout], new_st]))

    def _header_json(self) -> dict[str, Any]:
        tip = self.server.node.tip_row()
        return {"hex": self._header(tip.height), "height": tip.height}

    def _header(self, height: int) -> str:
        assert self.server.node.index is not None
        hdr = self.server.node.index.headers(height, 1)
        if not hdr:
            raise RPCError(P.BAD_REQUEST, f"height {height} out of range")
        return hdr[0].hex()

    def _checkpoint(self, last: int, cp_height: Any) -> int:
        """A valid ``cp_height`` for a proof of heights up to ``last`` (0: no proof asked)."""
        cp = _height(cp_height, "cp_height")
        tip = self.server.node.tip_row().height
        if cp and not last <= cp <= tip:
            raise RPCError(P.BAD_REQUEST, f"cp_height {cp} must be between {last} and the tip {tip}")
        return cp

    def _outpoint_status(self, txid: str, vout: int) -> dict[str, Any]:
        node = self.server.node
        assert node.index is not None
        st: dict[str, Any] = {}
        if txid in node.mempool:
            st["height"] = 0
        else:
            loc = node.index.tx_location(txid)
            if loc is None:
                return {}
            st["height"] = loc[0]
        sp = self.chain.spender_sync(OutPoint(txid, vout))
        if sp is not None:
            st["spender_txhash"] = sp.txid
            st["spender_height"] = sp.height or 0
        return st

    # --- server.* ---------------------------------------------------------------------------

    async def server_version(self, client_name: Any = "", protocol_version: Any = None, *_ignored: Any) -> list[str]:
        if self.negotiated:
            raise RPCError(P.BAD_REQUEST, "server.version already sent")
        try:
            self.version = V.negotiate(protocol_version)
        except V.VersionRefused as e:
            # The protocol: no version in common, and the server closes the connection.
            raise ReplyAndDisconnect(RPCError(P.BAD_REQUEST, str(e))) from None
        self.negotiated = True
        return [P.SERVER_NAME, V.text(self.version)]

    async def ping(self) -> None:
        return None

    async def banner(self) -> str:
        tip = self.server.node.tip_row()
        return f"{P.SERVER_NAME}: an Eschaton village's chain, at height {tip.height}"

    async def donation_address(self) -> str:
        return ""

    async def features(self) -> dict[str, Any]:
        node = self.server.node
        assert node.index is not None
        genesis = node.index.block_at(0)
        assert genesis is not None
        hosts = {h: {"tcp_port": p, "ssl_port": None} for h, p in self.server.listening()}
        return {"hosts": hosts, "genesis_hash": genesis.hash, "hash_function": "sha256",
                "server_version": P.SERVER_NAME, "protocol_min": V.text(V.MIN),
                "protocol_max": V.text(V.MAX), "pruning": None}

    async def peers_subscribe(self) -> list[Any]:
        return []  # one village, one server: no peer discovery

    async def add_peer(self, features: Any = None) -> bool:
        return False

    # --- headers ----------------------------------------------------------------------------

    async def headers_subscribe(self) -> dict[str, Any]:
        self.headers = True
        return self._header_json()

    async def block_header(self, height: Any, cp_height: Any = 0) -> Any:
        h = _height(height, "height")
        cp = self._checkpoint(h, cp_height)
        hdr = self._header(h)
        if not cp:
            return hdr
        return {"header": hdr, **self.scripts.header_proof(h, cp)}

    async def block_headers(self, start_height: Any, count: Any, cp_height: Any = 0) -> dict[str, Any]:
        start = _height(start_height, "start_height")
        n = min(_height(count, "count"), MAX_HEADERS)
        cp = self._checkpoint(start + n - 1, cp_height) if n else 0
        assert self.server.node.index is not None
        hdrs = self.server.node.index.headers(start, n)
        out: dict[str, Any] = {"count": len(hdrs), "max": MAX_HEADERS}
        if self.version >= V.V1_6:
            out["headers"] = [h.hex() for h in hdrs]
        else:
            out["hex"] = b"".join(hdrs).hex()
        if cp and hdrs:
            out.update(self.scripts.header_proof(start + len(hdrs) - 1, cp))
        return out

    # --- script hashes ----------------------------------------------------------------------

    async def get_history(self, scripthash: Any) -> list[dict[str, Any]]:
        return self.scripts.history(_sh(scripthash))

    async def get_mempool(self, scripthash: Any) -> list[dict[str, Any]]:
        return self.scripts.mempool_of(_sh(scripthash))

    async def listunspent(self, scripthash: Any) -> list[dict[str, Any]]:
        return self.scripts.unspent(_sh(scripthash))

    async def get_balance(self, scripthash: Any) -> dict[str, int]:
        return self.scripts.balance(_sh(scripthash))

    async def scripthash_subscribe(self, scripthash: Any) -> str | None:
        st = self.scripts.status(_sh(scripthash))
        self.scripthashes[str(scripthash).lower()] = st
        return st

    async def scripthash_unsubscribe(self, scripthash: Any) -> bool:
        _sh(scripthash)
        return self.scripthashes.pop(str(scripthash).lower(), 0) != 0

    # --- transactions -----------------------------------------------------------------------

    async def transaction_get(self, tx_hash: Any, verbose: Any = False) -> Any:
        raw = await self.chain.get_transaction(_txid(tx_hash))
        return self.scripts.verbose_tx(raw) if verbose else raw.hex()

    async def get_merkle(self, tx_hash: Any, height: Any) -> dict[str, Any]:
        txid, h = _txid(tx_hash), _height(height, "height")
        proof = self.scripts.merkle(txid, h)
        if proof is None:
            raise RPCError(P.BAD_REQUEST, f"tx {txid} not in block at height {h}")
        return proof

    async def id_from_pos(self, height: Any, tx_pos: Any, merkle: Any = False) -> Any:
        h, pos = _height(height, "height"), _height(tx_pos, "tx_pos")
        out = self.scripts.id_from_pos(h, pos, bool(merkle))
        if out is None:
            raise RPCError(P.BAD_REQUEST, f"no tx at position {pos} in a block at height {h}")
        return out

    async def transaction_broadcast(self, raw_tx: Any) -> str:
        return await self.chain.broadcast(_raw_tx(raw_tx))

    async def broadcast_package(self, raw_txs: Any, verbose: Any = False) -> dict[str, Any]:
        if not isinstance(raw_txs, list) or not raw_txs:
            raise RPCError(P.BAD_REQUEST, "raw_txs must be a non-empty list of hex transactions")
        errors = []
        for r in raw_txs:
            raw = b""
            try:
                raw = _raw_tx(r)
                await self.chain.broadcast(raw)
            except BroadcastRefused as e:
                errors.append({"txid": _txid_of(raw), "error": e.reason})
        return {"success": True} if not errors else {"success": False, "errors": errors}

    async def estimatefee(self, number: Any, mode: Any = None) -> float:
        return self.chain.estimate_fee_sync(_count(number)) / 1e8

    async def relayfee(self) -> float:
        return MIN_RELAY_FEE / 1e8

    async def mempool_info(self) -> dict[str, float]:
        rate = MIN_RELAY_FEE / 1e8
        return {"mempoolminfee": rate, "minrelaytxfee": rate, "incrementalrelayfee": rate}

    async def fee_histogram(self) -> list[list[float | int]]:
        return self.scripts.fee_histogram()

    async def outpoint_subscribe(self, tx_hash: str, txout_idx: int, spk_hint: str | None = None) -> dict[str, Any]:
        key = (_txid(tx_hash), _index(txout_idx))
        st = self._outpoint_status(*key)
        self.outpoints[key] = st
        await self.chain.watch_outpoint(OutPoint(*key))
        return st

    async def outpoint_unsubscribe(self, tx_hash: str, txout_idx: int) -> bool:
        return self.outpoints.pop((_txid(tx_hash), _index(txout_idx)), None) is not None

    # --- extensions -----------------------------------------------------------------------------

    async def tip(self) -> dict[str, Any]:
        return P.tip_json(await self.chain.tip())

    async def block_production(self) -> dict[str, Any] | None:
        """The owner's automatic block production (``[chain] block_interval_s``...), or null."""
        produced = self.server.node.production
        return None if produced is None else produced.to_json()

    async def tx_status(self, txid: str) -> dict[str, Any]:
        return P.status_json(self.chain.tx_status_sync(_txid(txid)))

    async def utxo(self, txid: str, vout: int) -> dict[str, Any] | None:
        u = self.chain.utxo_sync(OutPoint(_txid(txid), _index(vout)))
        return P.utxo_json(u) if u else None

    async def spender(self, txid: str, vout: int) -> dict[str, Any] | None:
        s = self.chain.spender_sync(OutPoint(_txid(txid), _index(vout)))
        return P.spend_json(s) if s else None

    async def subscribe_events(self) -> bool:
        self.events = True
        return True

    async def watch_outpoint(self, txid: str, vout: int) -> bool:
        await self.chain.watch_outpoint(OutPoint(_txid(txid), _index(vout)))
        return True

    async def watch_script(self, script_hex: str) -> bool:
        await self.chain.watch_script(_hex(script_hex, "script"))
        return True

    async def mine(self, n: int, script_hex: str | None = None) -> list[str]:
        spk = _hex(script_hex, "script") if script_hex is not None else None
        return await self.chain.mine(_count(n), spk)

    async def mine_branch(self, from_hash: str, n: int, txs_hex: list[str] | None = None,
                          script_hex: str | None = None) -> list[str]:
        spk = _hex(script_hex, "script") if script_hex is not None else None
        txs = [_hex(t, "transaction") for t in (txs_hex or [])]
        _hex(from_hash, "block hash", 32)
        return await self.chain.mine_branch(from_hash, _count(n), txs, spk)

    async def submit_block(self, raw_hex: str) -> dict[str, Any]:
        bh, active = await self.chain.submit_block(_hex(raw_hex, "block"))
        return {"hash": bh, "active": active}
