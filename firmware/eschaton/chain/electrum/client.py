"""``ElectrumChainClient``: the ``ChainBackend`` over the owner's Electrum server (aiorpcx).

The client of ``open_chain``: a process of the same user reaching the chain's owner through its
owner socket (``connect_owner``), where every method works, mining included. It trusts the
owner as itself and so uses the Eschaton server's extensions. ``[chain] backend = "electrum"``
is the SPV client instead (``spvclient.SpvChainClient``: standard methods only, nothing
believed unverified). This one talks to the Eschaton chain server
(``eschaton.chain.electrum.server``), using the standard methods where they carry what the
interface needs and the ``eschaton.*`` extensions otherwise
(tx status, full UTXO records, spender input index, typed events). Errors map back to the
backend's types: ``BroadcastRefused`` (with bitcoind's reason), ``UnknownTransaction``,
``BlockRejected``, ``NotOwner``, ``InvalidRequest``; a lost connection is ``ChainUnavailable``.

``connect(host, port)`` is a TCP session: read-only plus broadcast. ``connect_owner(path)`` is a
session on the owner's unix socket, the only one on which ``mine``/``mine_branch``/
``submit_block`` work (see the server's design note).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiorpcx import RPCError, RPCSession, TaskTimeout, connect_rs, connect_us

from eschaton.chain.backend import (
    BroadcastRefused,
    Listener,
    OutPoint,
    Spend,
    Tip,
    TxStatus,
    UnknownTransaction,
    Utxo,
)
from eschaton.chain.electrum import protocol as P
from eschaton.chain.errors import BlockRejected, ChainUnavailable, InvalidRequest, NotOwner

log = logging.getLogger(__name__)


class _ClientSession(RPCSession):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_notification: Any = None

    async def handle_request(self, request: Any) -> None:
        if self.on_notification is not None:
            self.on_notification(request.method, request.args)


class ElectrumChainClient:
    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._conn: Any = None
        self.session: _ClientSession | None = None
        self.requests = 0  # requests sent to the server so far (node status: what the node costs it)

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 50001) -> ElectrumChainClient:
        return await cls()._start(connect_rs(host, port, session_factory=_ClientSession), f"{host}:{port}")

    @classmethod
    async def connect_owner(cls, path: Path) -> ElectrumChainClient:
        """The owner's unix socket (``<datadir>/chain/electrum.sock``). ``PermissionError`` (the
        socket belongs to another user) is raised as it is, so that callers can tell it from a
        server that is not there yet (``ChainUnavailable``)."""
        return await cls()._start(connect_us(str(path), session_factory=_ClientSession), str(path),
                                  owner=True)

    async def _start(self, conn: Any, where: str, *, owner: bool = False) -> ElectrumChainClient:
        self._conn = conn
        try:
            self.session = await self._conn.__aenter__()
        except PermissionError:
            if owner:
                raise
            raise ChainUnavailable(f"cannot reach the chain server at {where}: permission denied") from None
        except OSError as e:
            raise ChainUnavailable(f"cannot reach the chain server at {where}: {e}") from e
        assert self.session is not None
        self.session.on_notification = self._on_notification
        await self._call("server.version", "eschaton", P.PROTOCOL_VERSION)
        await self._call("eschaton.subscribe_events")
        return self

    async def _call(self, method: str, *args: Any) -> Any:
        if self.session is None or self.session.is_closing():
            raise ChainUnavailable("not connected to the chain server")
        self.requests += 1
        try:
            return await self.session.send_request(method, args)
        except RPCError as e:
            msg = str(e.message)
            if e.code == P.TX_REFUSED:
                lines = msg.split("\n")
                reason = lines[2] if len(lines) > 2 else msg
                detail = lines[3] if len(lines) > 3 else ""
                raise BroadcastRefused(reason, detail) from None
            if e.code == P.UNKNOWN_TX:
                raise UnknownTransaction(msg) from None
            if e.code == P.DAEMON_ERROR and msg.startswith("block rejected"):
                parts = msg.split("\n") + ["", "", ""]
                raise BlockRejected(parts[1], parts[2], parts[3]) from None
            if e.code == P.NOT_OWNER:
                raise NotOwner(msg) from None
            raise InvalidRequest(msg) from None
        except (ConnectionError, OSError, TaskTimeout) as e:
            raise ChainUnavailable(f"chain server connection lost: {e!r}") from e
        except asyncio.CancelledError:
            # aiorpcx cancels pending replies when the connection drops; only a cancellation of
            # our own task is a real cancellation.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ChainUnavailable("chain server connection lost") from None

    def _on_notification(self, method: str, args: list[Any]) -> None:
        if method != "eschaton.event":
            return
        try:
            ev = P.event_from(args[0])
        except (KeyError, ValueError, TypeError, IndexError):
            log.warning("malformed event from the chain server: %r", args)
            return
        for listener in list(self.listeners):
            try:
                listener(ev)
            except Exception:  # supervision boundary: one bad listener must not stop the others
                log.exception("chain listener failed on %r", ev)

    # --- ChainBackend -------------------------------------------------------------------------

    async def tip(self) -> Tip:
        return P.tip_from(await self._call("eschaton.tip"))

    async def block_production(self) -> dict[str, Any] | None:
        """The owner's automatic block production (``BlockProduction.to_json``), or None."""
        d = await self._call("eschaton.block_production")
        return d if isinstance(d, dict) else None

    async def get_utxo(self, outpoint: OutPoint) -> Utxo | None:
        d = await self._call("eschaton.utxo", outpoint.txid, outpoint.vout)
        return P.utxo_from(d) if d else None

    async def list_unspent(self, script_pubkey: bytes) -> list[Utxo]:
        rows = await self._call("blockchain.scripthash.listunspent", P.scripthash(bytes(script_pubkey)))
        return [P.utxo_from(r, bytes(script_pubkey)) for r in rows]

    async def get_transaction(self, txid: str) -> bytes:
        return bytes.fromhex(await self._call("blockchain.transaction.get", txid))

    async def tx_status(self, txid: str) -> TxStatus:
        return P.status_from(await self._call("eschaton.tx_status", txid))

    async def spender(self, outpoint: OutPoint) -> Spend | None:
        d = await self._call("eschaton.spender", outpoint.txid, outpoint.vout)
        return P.spend_from(d) if d else None

    async def broadcast(self, raw_tx: bytes) -> str:
        return str(await self._call("blockchain.transaction.broadcast", bytes(raw_tx).hex()))

    async def estimate_fee(self, target_blocks: int) -> int:
        btc_per_kb = await self._call("blockchain.estimatefee", target_blocks)
        return round(float(btc_per_kb) * 1e8)

    async def watch_outpoint(self, outpoint: OutPoint) -> None:
        await self._call("eschaton.watch_outpoint", outpoint.txid, outpoint.vout)

    async def watch_script(self, script_pubkey: bytes) -> None:
        await self._call("eschaton.watch_script", bytes(script_pubkey).hex())

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def close(self) -> None:
        if self._conn is not None and self.session is not None:
            try:
                await self.session.close(force_after=1)
            except Exception:  # supervision boundary: the server may already be gone
                log.debug("closing the chain client failed", exc_info=True)
        self.session = None

    # --- regtest extras -----------------------------------------------------------------------

    async def mine(self, n: int, to_script: bytes | None = None) -> list[str]:
        return list(await self._call("eschaton.mine", n, None if to_script is None else to_script.hex()))

    async def mine_branch(self, from_hash: str, n: int, txs: list[bytes] | None = None,
                          to_script: bytes | None = None) -> list[str]:
        return list(await self._call("eschaton.mine_branch", from_hash, n, [t.hex() for t in txs or []],
                                     None if to_script is None else to_script.hex()))

    async def submit_block(self, raw: bytes) -> tuple[str, bool]:
        d = await self._call("eschaton.submit_block", raw.hex())
        return str(d["hash"]), bool(d["active"])
