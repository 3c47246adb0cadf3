"""HTTP JSON control API on a unix socket, guarded by a 0600 token file.

Rules:
- The socket and the token file live in the node's datadir and are created mode 0600; the
  token is 32 random bytes, regenerated at every start, compared in constant time.
- ``POST /v1/<command>`` with a JSON object body runs a registered command. Success is
  ``200 {"result": ...}``; a refused request is ``400 {"error": {"type", "message"}}``; an
  unexpected failure is ``500`` with the message, logged with its traceback (supervision
  boundary), and the node keeps running.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from eschaton.api.registry import COMMANDS, ApiError
from eschaton.errors import EschatonError

log = logging.getLogger("eschaton.api")

TOKEN_FILE = "api.token"
SOCKET_FILE = "api.sock"


def write_token(path: Path) -> str:
    token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


class ApiServer:
    def __init__(self, node: Any, socket_path: Path, token_path: Path) -> None:
        self.node = node
        self.socket_path = socket_path
        self.token_path = token_path
        self.token = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.token = write_token(self.token_path)
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/v1/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = self.socket_path
        if sock.exists() or sock.is_symlink():
            sock.unlink()
        old = os.umask(0o177)  # the socket is created 0600: only the node's user may connect
        try:
            await web.UnixSite(self._runner, str(sock)).start()
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
            return _error(401, "Unauthorized", "missing or wrong API token")
        cmd = COMMANDS.get(request.match_info["name"])
        if cmd is None:
            return _error(404, "UnknownCommand", f"no command {request.match_info['name']!r}")
        try:
            body = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "ApiError", "request body is not JSON")
        try:
            args = cmd.validate(body)
            result = await cmd.fn(self.node, **args)
        except EschatonError as e:
            return _error(400, type(e).__name__, str(e))
        except Exception as e:  # supervision boundary: a bug in one command must not stop the node
            log.exception("command %s failed", cmd.name)
            return _error(500, type(e).__name__, str(e))
        return web.json_response({"result": result}, dumps=lambda o: json.dumps(o, default=str))


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


__all__ = ["ApiServer", "ApiError", "TOKEN_FILE", "SOCKET_FILE", "write_token"]
