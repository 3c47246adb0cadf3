"""HTTP JSON control API on a unix socket (and, if configured, 127.0.0.1), guarded by a token.

Rules:
- The socket and the token file live in the node's datadir and are created mode 0600; the
  token is 32 random bytes, regenerated at every start, compared in constant time.
- ``[api] tcp_port``: the same application also listens on 127.0.0.1 at that port, never on
  another address. Every request there needs the same ``Authorization: Bearer <token>`` header
  (any local user can reach a loopback port; only the token's owner can use it).
- ``POST /v1/<command>`` with a JSON object body runs one of the commands the node's services
  own (the table given at construction). Success is
  ``200 {"result": ...}``; a refused request is ``400 {"error": {"type", "message"}}`` (a body
  over ``MAX_BODY`` is ``413``, a missing or wrong token ``401``). A body that is not strict
  JSON (NaN, numbers of more than 4300 digits, nesting deeper than the parser's recursion
  limit) is refused like any other bad input: one line, no traceback in the log. An unexpected
  failure is ``500`` with the message, logged with its traceback (supervision boundary), and
  the node keeps running.
- A client that disconnects before the answer (it timed out, it was killed) cancels its request
  if the command is ``cancellable`` (aiohttp's ``handler_cancellation``): a payment still
  waiting for the turn is not signed later for a caller that is gone, and its id stays free. A
  payment already signed is never withdrawn: it completes, and ``channel.payment ID`` tells its
  outcome. Any other command runs to its end (shielded from the cancellation), its outcome
  logged, because stopping it half way could leave state half done (coins reserved, a
  broadcast taken from the queue but not sent).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from eschaton.api.endpoint import PATH_PREFIX, SOCKET_FILE, TCP_HOST, TOKEN_FILE, auth_header
from eschaton.api.registry import ApiError, Command
from eschaton.errors import EschatonError, LocalError

log = logging.getLogger("eschaton.api")

MAX_BODY = 1 << 20  # bytes; no command takes more than a few hundred
MAX_INT_DIGITS = 20  # a 64-bit integer has at most 20


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
    def __init__(self, node: Any, commands: Mapping[str, Command], socket_path: Path | None,
                 token_path: Path, tcp_port: int | None = None) -> None:
        self.node = node
        self.commands = commands  # the node's services' commands (``eschaton.daemon.service``)
        self.socket_path = socket_path
        self.token_path = token_path
        self.tcp_port = tcp_port
        self.token = ""
        self._runner: web.AppRunner | None = None
        self._running: set[asyncio.Future[Any]] = set()  # commands run to their end (see the rules)

    async def start(self) -> None:
        self.token = write_token(self.token_path)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH_PREFIX + "{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        sock = self.socket_path
        if sock is not None:
            if sock.exists() or sock.is_symlink():
                sock.unlink()
            old = os.umask(0o177)  # the socket is created 0600: only the node's user may connect
            try:
                await web.UnixSite(self._runner, str(sock)).start()
            finally:
                os.umask(old)
        if self.tcp_port is not None:
            try:
                await web.TCPSite(self._runner, TCP_HOST, self.tcp_port).start()
            except OSError as e:  # in use, most likely: one line, not a traceback
                raise LocalError(f"[api] tcp_port: cannot listen on {TCP_HOST}:{self.tcp_port}: "
                                 f"{e.strerror}") from None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._running):  # commands whose callers left stop with the node
            task.cancel()

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), auth_header(self.token).encode()):
            return _error(401, "Unauthorized", "missing or wrong API token")
        cmd = self.commands.get(request.match_info["name"])
        if cmd is None:
            return _error(404, "UnknownCommand", f"no command {request.match_info['name']!r}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "ApiError", f"request body is larger than {MAX_BODY} bytes")
        try:
            body = _parse_json(raw) if raw else {}
        except ApiError as e:
            return _error(400, "ApiError", str(e))
        try:
            args = cmd.validate(body)
            result = await (self._cancellable(cmd, args) if cmd.cancellable else self._to_the_end(cmd, args))
        except EschatonError as e:
            return _error(400, type(e).__name__, str(e))
        except Exception as e:  # supervision boundary: a bug in one command must not stop the node
            log.exception("command %s failed", cmd.name)
            return _error(500, type(e).__name__, str(e))
        return web.json_response({"result": result}, dumps=lambda o: json.dumps(o, default=str))

    async def _cancellable(self, cmd: Command, args: dict[str, Any]) -> Any:
        try:
            return await cmd.fn(self.node, **args)
        except asyncio.CancelledError:
            log.info("%s cancelled: its caller went away", cmd.name)
            raise

    async def _to_the_end(self, cmd: Command, args: dict[str, Any]) -> Any:
        task = asyncio.ensure_future(cmd.fn(self.node, **args))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                log.info("%s: its caller went away; it runs to its end", cmd.name)
                task.add_done_callback(lambda t: _orphan_outcome(cmd, t))
            raise


def _orphan_outcome(cmd: Command, task: asyncio.Future[Any]) -> None:
    """The outcome of a command whose caller went away: logged, not lost."""
    if task.cancelled():
        log.info("%s (caller gone) was cancelled", cmd.name)
    elif (e := task.exception()) is not None:
        log.warning("%s (caller gone) failed: %s: %s", cmd.name, type(e).__name__, e)
    else:
        log.info("%s (caller gone) done", cmd.name)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str) -> int:
    # Decided before int() runs: past 4300 digits Python refuses with a message about its own
    # limit, and no parameter of any command needs more than 64 bits anyway.
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def _parse_json(raw: bytes) -> Any:
    """Strict JSON, or ``ApiError`` in one line."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_int=_parse_int)
    except RecursionError:
        raise ApiError("request body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and ours above
        raise ApiError(f"request body is not JSON: {str(e).splitlines()[0][:120]}") from None


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


__all__ = ["ApiServer", "ApiError", "TCP_HOST", "TOKEN_FILE", "SOCKET_FILE", "write_token"]
