"""Serving the embedded chain over a bitcoind-compatible JSON-RPC (HTTP/1.1, loopback only).

Why: stock Bitcoin software (ElectrumX, the OpenTimestamps client, scripts written for
``bitcoin-cli``) speaks bitcoind's RPC, not Electrum; with this the village's chain is a node
they can index and query.

Rules:
- Listens on 127.0.0.1 only. The port is ``[chain] rpc_port`` or ``eschaton chain serve
  --rpc-port`` (0: one the kernel picks); the port in use is written (0600) to
  ``<datadir>/chain/rpc.port`` once listening, removed on stop.
- Authentication is HTTP Basic, as bitcoind: the cookie ``__cookie__:<64 hex>`` written (0600)
  to ``<datadir>/chain/.cookie`` at every start and removed on stop (only the owner's user and
  root can read it), or ``rpc_user``/``rpc_password`` from the config. A missing or wrong
  password is HTTP 401 with an empty body, as bitcoind does.
- JSON-RPC 1.0 and 2.0, single requests and batches (arrays). Replies carry
  ``Content-Type: application/json`` exactly (ElectrumX refuses anything else). A 1.0 reply has
  both ``result`` and ``error`` (null on success); a 2.0 reply has exactly one of them, as the
  2.0 specification and bitcoind have it; a 2.0 notification (no ``id``) gets no reply. HTTP
  status as bitcoind: 200 for batches and 2.0, for a 1.0 error 404 (method not found), 400
  (invalid request) or 500.
- Making blocks (``generatetoaddress``) is for the owner only, as on the Electrum owner socket:
  the caller's uid must be the chain owner's (or root's). Over loopback TCP the kernel knows it:
  the client's socket is in ``/proc/net/tcp`` with its uid (the TCP twin of ``SO_PEERCRED``).
  Anyone else, whatever password they hold, may read and broadcast.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import secrets
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.errors import ChainError
from eschaton.chain.rpc import shapes as S
from eschaton.chain.rpc.methods import RpcMethods
from eschaton.chain.rpc.shapes import RpcError
from eschaton.store.private import write_private

log = logging.getLogger(__name__)

COOKIE_FILE = ".cookie"
PORT_FILE = "rpc.port"
COOKIE_USER = "__cookie__"
MAX_BODY = 32 * 1024 * 1024  # a batch of large transactions; bitcoind's limit is larger
_JSON = "application/json"


def tcp_peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the client end of a loopback IPv4 TCP connection (``/proc/net/tcp``:
    the row whose local address is the peer's and remote address is ours)."""

    def enc(addr: tuple[str, int]) -> str:
        ip = struct.unpack("=I", socket.inet_aton(addr[0]))[0]
        return f"{ip:08X}:{addr[1]:04X}"

    want_local, want_remote = enc(peer), enc(local)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1] == want_local and cols[2] == want_remote:
                    return int(cols[7])
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None


@dataclass(frozen=True, slots=True)
class RpcListen:
    """Where and to whom the owner serves the RPC (``[chain] rpc_port``, ``rpc_user``/``rpc_password``)."""

    port: int = 0
    user: str | None = None
    password: str | None = None


class RpcServer:
    """The JSON-RPC server over ``node``; ``start()`` returns the port."""

    def __init__(self, node: ChainNode, port: int = 0, *, user: str | None = None, password: str | None = None,
                 network: str = "regtest") -> None:
        self.node = node
        self.port = port
        self.methods = RpcMethods(node, network)
        self.cookie_file: Path = node.chain_dir / COOKIE_FILE
        self.port_file: Path = node.chain_dir / PORT_FILE
        self._creds: list[bytes] = []
        if user is not None and password is not None:
            self._creds.append(f"{user}:{password}".encode())
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> int:
        cookie = f"{COOKIE_USER}:{secrets.token_hex(32)}"
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/", self._handle)
        app.router.add_post("/wallet/{name}", self._handle)  # bitcoin-cli -rpcwallet: same chain, no wallet
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise ChainError(f"cannot serve the chain's RPC on 127.0.0.1:{self.port}: {e.strerror or e}") from None
        self.port = int(self._runner.addresses[0][1])  # the kernel's choice when port was 0
        write_private(self.cookie_file, cookie)
        self._creds.append(cookie.encode())
        write_private(self.port_file, f"{self.port}\n")
        log.info("chain served over JSON-RPC on 127.0.0.1:%d", self.port)
        return self.port

    async def stop(self) -> None:
        for f in (self.cookie_file, self.port_file):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.methods.close()

    # --- HTTP -----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        ok = False
        for cred in self._creds:  # every one compared, in constant time
            ok |= hmac.compare_digest(given, cred)
        return ok

    def _is_owner(self, request: web.Request) -> bool:
        transport = request.transport
        if transport is None:
            return False
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        if not peer or not local:
            return False
        uid = tcp_peer_uid((peer[0], peer[1]), (local[0], local[1]))
        return uid is not None and uid in (os.geteuid(), 0)

    @staticmethod
    def _reply(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=json.dumps(body).encode(), status=status, headers={"Content-Type": _JSON})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"'})
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._reply({"result": None, "error": {"code": S.RPC_PARSE_ERROR, "message": "Parse error"},
                                "id": None}, 500)
        owner: bool | None = None

        def is_owner() -> bool:  # looked up once, and only if a block-making method is called
            nonlocal owner
            if owner is None:
                owner = self._is_owner(request)
            return owner

        if isinstance(body, list):
            replies = [r for r in (self._one(item, is_owner)[0] for item in body) if r is not None]
            return self._reply(replies)
        reply, status = self._one(body, is_owner)
        if reply is None:
            return web.Response(status=204)
        return self._reply(reply, status)

    def _one(self, req: Any, is_owner: Any) -> tuple[dict[str, Any] | None, int]:
        """One request object: (reply or None for a 2.0 notification, HTTP status if alone)."""
        if not isinstance(req, dict):
            return {"result": None, "error": {"code": S.RPC_INVALID_REQUEST, "message": "Invalid Request object"},
                    "id": None}, 400
        v2 = req.get("jsonrpc") == "2.0"
        rid = req.get("id")
        method = req.get("method")
        try:
            if not isinstance(method, str):
                raise RpcError(S.RPC_INVALID_REQUEST, "Method must be a string")
            owner = is_owner() if self.methods.table.get(method) is not None \
                and self.methods.table[method].owner_only else False
            try:
                result = self.methods.call(method, req.get("params"), owner=owner)
            except (RpcError, AssertionError):
                raise
            except Exception as e:  # supervision boundary: one bad request must not stop the server
                log.exception("RPC %s failed", method)
                raise RpcError(S.RPC_MISC_ERROR, f"internal error: {e}") from None
        except RpcError as e:
            if v2 and "id" not in req:
                return None, 204
            err = {"code": e.code, "message": e.message}
            if v2:
                return {"jsonrpc": "2.0", "error": err, "id": rid}, 200
            status = {S.RPC_METHOD_NOT_FOUND: 404, S.RPC_INVALID_REQUEST: 400}.get(e.code, 500)
            return {"result": None, "error": err, "id": rid}, status
        if v2:
            return (None, 204) if "id" not in req else ({"jsonrpc": "2.0", "result": result, "id": rid}, 200)
        return {"result": result, "error": None, "id": rid}, 200


__all__ = ["COOKIE_FILE", "PORT_FILE", "RpcListen", "RpcServer", "tcp_peer_uid"]
