"""Serving one embedded chain to several processes over the Electrum protocol.

Design note (why Electrum): libbitcoinkernel needs exclusive access to its datadir, so exactly
one process (the owner, holding ``<datadir>/chain/LOCK``) runs the ``ChainNode``. Every other
process on the node (the daemon, the wallet, the CLI) needs the same small surface: tip, UTXOs
by script, transactions, broadcast, spenders and notifications. The Electrum protocol is exactly
that surface, is newline-framed JSON-RPC that aiorpcx (the library of Electrum and ElectrumX)
implements, and keeps a later switch to a public Electrum server or a stock Electrum client
(the Debian ``electrum`` package pointed at this regtest server) a configuration change rather
than a rewrite. What the protocol lacks, the backend interface needs, so a few documented
``eschaton.*`` methods are added; standard clients simply never call them.

Two kinds of listener, two levels of trust (only the owner may make blocks):
- The owner socket ``<datadir>/chain/electrum.sock``: a unix socket, mode 0600 inside the 0700
  chain directory, and each connection's peer credentials (``SO_PEERCRED``) must be the owner's
  uid or root's. Its sessions may use every method, including the block-producing ones below.
  This is how the node's own processes (the CLI, the wallet, a second node sharing the chain,
  the demo, tests) reach the owner (``open_chain``).
- TCP: 127.0.0.1 on an ephemeral port, written (0600) to ``<datadir>/chain/electrum.port``
  after it starts listening and removed on shutdown, and with ``[chain] serve`` a (host, port)
  on the mesh. Any local user can reach a loopback port, and any machine of the mesh the served
  address, so TCP sessions are read-only plus ``blockchain.transaction.broadcast``: a request
  for ``eschaton.mine``, ``eschaton.mine_branch`` or ``eschaton.submit_block`` there is refused
  with error ``NOT_OWNER`` and changes nothing. Otherwise anyone who can connect could mine and
  reorganise the chain under everyone's channels.

Standard methods, protocol 1.4 to 1.6 (``session.py``: one connection's method table and
subscriptions; ``versions.py``: negotiation and per-version shapes; ``history.py``: history,
status hashes, proofs):
- ``server.version`` (first message; only the first counts; no version in common: a refusal and
  the connection closed), ``server.ping``, ``server.banner``, ``server.donation_address``,
  ``server.features``, ``server.peers.subscribe`` (empty: no peer discovery), ``server.add_peer``
  (declined)
- ``blockchain.headers.subscribe`` (notifies new tips), ``blockchain.block.header`` and
  ``blockchain.block.headers`` (up to 2016; 1.4: one ``hex`` string, 1.6: a ``headers`` list),
  both with ``cp_height`` proofs over the header hashes up to that height
- ``blockchain.scripthash.get_history`` / ``get_mempool`` / ``get_balance`` / ``listunspent`` /
  ``subscribe`` / ``unsubscribe`` (1.4.2+), with the protocol's status hash; ``listunspent``
  entries also carry ``script`` and ``coinbase``
- ``blockchain.transaction.get`` (``verbose``: bitcoind's fields), ``get_merkle``,
  ``id_from_pos``, ``broadcast`` (refusals are error ``-26`` whose message holds bitcoind's
  reason on its third line), ``broadcast_package`` (1.6; each transaction is accepted on its
  own, in order: no package fee rate)
- ``blockchain.estimatefee`` (BTC/kB), ``blockchain.relayfee`` (up to 1.4.2),
  ``mempool.get_info`` (1.6), ``mempool.get_fee_histogram``
- ``blockchain.outpoint.subscribe`` / ``unsubscribe`` (the protocol draft's outpoint
  subscription: funding and spender heights), in every version

Eschaton extensions:
- ``eschaton.tip`` -> {height, hash, mtp}
- ``eschaton.tx_status(txid)``, ``eschaton.utxo(txid, vout)``, ``eschaton.spender(txid, vout)``
- ``eschaton.subscribe_events`` then ``eschaton.watch_outpoint(txid, vout)`` /
  ``eschaton.watch_script(script_hex)``: the session receives ``eschaton.event`` notifications
  carrying the backend's ``ChainEvent`` objects (``protocol.event_json``) in chain order.
- regtest only, owner socket only (``OWNER_METHODS``): ``eschaton.mine(n, script_hex=None)``,
  ``eschaton.mine_branch(from_hash, n, txs_hex=[], script_hex=None)``,
  ``eschaton.submit_block(raw_hex)``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from functools import partial
from pathlib import Path
from typing import Any

from aiorpcx import serve_rs
from aiorpcx.session import SessionKind
from aiorpcx.unixsocket import USTransport

from eschaton.chain.electrum.history import ScriptIndex
from eschaton.chain.electrum.session import MAX_HEADERS, OWNER_METHODS, SOCKET_FILE, ElectrumSession
from eschaton.chain.embedded.engine import ChainNode, NodeUpdate
from eschaton.chain.errors import ChainError
from eschaton.store.private import FILE_MODE, write_private

log = logging.getLogger(__name__)

PORT_FILE = "electrum.port"
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes, with the terminating NUL


def _peer_uid(transport: Any) -> int | None:
    """The uid of the process at the other end of a unix socket (``SO_PEERCRED``)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _OwnerTransport(USTransport):  # type: ignore[misc]
    """aiorpcx's unix transport, noting the peer's uid before the session is made."""

    peer_uid: int | None = None

    def connection_made(self, transport: Any) -> None:
        self.peer_uid = _peer_uid(transport)
        super().connection_made(transport)


class ElectrumServer:
    """Serves ``node`` on the owner socket ``<datadir>/chain/electrum.sock`` (every method) and,
    read-only, on 127.0.0.1 (port advertised in ``<datadir>/chain/electrum.port``) and with
    ``also`` on that (host, port) as well (``[chain] serve``: other nodes of the mesh)."""

    def __init__(self, node: ChainNode, host: str = "127.0.0.1", port: int = 0, *,
                 also: tuple[str, int] | None = None) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.also = also
        self.sessions: set[ElectrumSession] = set()
        self.scripts = ScriptIndex(node)
        self._server: Any = None  # asyncio.Server
        self._also_server: Any = None
        self._owner_server: Any = None
        self.port_file: Path = node.chain_dir / PORT_FILE
        self.socket_path: Path = node.chain_dir / SOCKET_FILE

    def listening(self) -> list[tuple[str, int]]:
        """The TCP (host, port) pairs served, for ``server.features``."""
        out = [(self.host, self.port)] if self._server is not None else []
        if self._also_server is not None and self.also is not None:
            out.append(self.also)
        return out

    def _changed(self, update: NodeUpdate) -> None:
        self.scripts.changed()  # before the sessions (listeners run in order) compute statuses

    async def start(self) -> int:
        self.node.listeners.insert(0, self._changed)
        if self.also is not None:
            # First, so a taken port fails the start before local clients are told of us.
            try:
                self._also_server = await serve_rs(partial(ElectrumSession, server=self), *self.also)
            except OSError as e:
                raise ChainError(f"cannot serve the chain on {self.also[0]}:{self.also[1]}: "
                                 f"{e.strerror or e}") from None
            log.info("chain served over Electrum on %s:%d", *self.also)
        try:
            await self._serve_owner_socket()
            self._server = await serve_rs(partial(ElectrumSession, server=self), self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            write_private(self.port_file, f"{self.port}\n")  # readers never see a half-written file
        except BaseException:
            await self.stop()  # no listener, socket or port file left behind
            raise
        log.info("chain served over Electrum on %s:%d (read-only) and %s", self.host, self.port,
                 self.socket_path)
        return self.port

    async def _serve_owner_socket(self) -> None:
        path = str(self.socket_path)
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            raise ChainError(f"the chain's owner socket path is too long for a unix socket "
                             f"({len(path)} > {_SUN_PATH_MAX} bytes): {path}; use a shorter datadir")
        try:
            self.socket_path.unlink()  # left by an owner that crashed; we hold the chain's LOCK
        except FileNotFoundError:
            pass
        factory = partial(_OwnerTransport, partial(ElectrumSession, server=self, owner_socket=True),
                          None, SessionKind.SERVER)
        old = os.umask(0o177)  # born 0600: no moment when another user could connect
        try:
            self._owner_server = await asyncio.get_running_loop().create_unix_server(factory, path)
        finally:
            os.umask(old)
        os.chmod(path, FILE_MODE)

    async def stop(self) -> None:
        if self._changed in self.node.listeners:
            self.node.listeners.remove(self._changed)
        for f in (self.port_file, self.socket_path):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        owner, self._owner_server = self._owner_server, None
        if owner is not None:
            owner.close()  # its sessions are in ``sessions`` too, closed below
        also, self._also_server = self._also_server, None
        if also is not None:
            also.close()  # its sessions are in ``sessions`` too, closed below
        if self._server is not None:
            self._server.close()
            for s in list(self.sessions):
                try:
                    await s.close(force_after=1)
                except Exception:  # supervision boundary: closing a broken session
                    log.debug("closing a session failed", exc_info=True)
                s.detach()
            await self._server.wait_closed()
            self._server = None
        if also is not None:
            await also.wait_closed()
        if owner is not None:
            await owner.wait_closed()


__all__ = ["MAX_HEADERS", "OWNER_METHODS", "SOCKET_FILE", "ChainError", "ElectrumServer", "ElectrumSession"]
