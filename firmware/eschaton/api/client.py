"""Client for the local control API, used by the CLI.

Rules:
- Standard library only (``http.client`` over the unix socket or loopback TCP): a CLI command
  that asks the running node must start fast, so this module imports nothing of the server
  (aiohttp), of the chain (libbitcoinkernel) or of the channel code. A test
  (``tests/integration/node/test_cli_imports.py``) keeps it that way.
- One request per connection, closed after the answer: the CLI makes one call per process.
- Every failure is a one-line ``EschatonError``: no token file or nobody listening is
  ``NodeNotRunning``; no answer within ``timeout`` seconds is ``TransientError``; an answer that
  is not our API's JSON, or an ``{"error": ...}`` answer, is ``CommandFailed``.
- ``call_async`` runs the same call on a thread of its own, so that callers on an event loop
  (tests, benchmarks, the demo) can have many calls in flight at once.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

from eschaton.api.endpoint import PATH_PREFIX, SOCKET_FILE, TCP_HOST, TOKEN_FILE, auth_header
from eschaton.errors import LocalError, RemoteError, TransientError


class NodeNotRunning(TransientError):
    pass


class CommandFailed(RemoteError):
    pass


class UnixHTTPConnection(http.client.HTTPConnection):
    """``HTTPConnection`` to a unix socket (the ``Host`` header says ``node``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("node", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def _read_token(datadir: Path, token_file: Path) -> str:
    try:
        return token_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NodeNotRunning(f"no node is running with datadir {datadir}") from e
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not a token"
        raise LocalError(f"cannot read {token_file}: {why}") from e


def _exchange(conn: http.client.HTTPConnection, name: str, body: bytes, token: str,
              timeout: float, where: str) -> tuple[int, bytes]:
    """POST and read the whole answer within ``timeout`` seconds in all (not per read).

    ``TimeoutError`` passes through (the caller names the command); any other failure to connect,
    or a connection closed before a whole answer, is a node that is not (or no longer) there."""
    deadline = time.monotonic() + timeout
    try:
        conn.connect()
        conn.request("POST", f"{PATH_PREFIX}{name}", body=body,
                     headers={"Authorization": auth_header(token), "Content-Type": "application/json"})
        if conn.sock is not None:  # the answer may take long (``--wait``), but not past the deadline
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
        r = conn.getresponse()
        return r.status, r.read()
    except TimeoutError:
        raise
    except (OSError, http.client.RemoteDisconnected, http.client.IncompleteRead) as e:
        raise NodeNotRunning(f"no node is answering on {where}") from e
    except http.client.HTTPException as e:  # something answered, but not in HTTP
        raise CommandFailed(f"{where} answered something that is not HTTP ({type(e).__name__})") from e


def _result(status: int, raw: bytes, where: str) -> Any:
    try:
        body = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        body = None
    if not isinstance(body, dict):  # not our API answering (or a proxy's error page)
        raise CommandFailed(f"{where} answered HTTP {status} without a JSON object")
    if "error" in body:
        err = body["error"] if isinstance(body["error"], dict) else {}
        raise CommandFailed(f"{err.get('type', 'Error')}: {err.get('message', '')}")
    return body.get("result")


def call(datadir: Path, name: str, args: dict[str, Any], timeout: float = 60.0,
         socket_path: Path | None = None, token_path: Path | None = None,
         tcp_port: int | None = None) -> Any:
    """Run command ``name`` on the node. ``tcp_port``: over 127.0.0.1 at that port instead of
    the unix socket (a node configured with ``[api] socket = ""`` and a ``tcp_port``)."""
    token = _read_token(datadir, token_path or datadir / TOKEN_FILE)
    conn: http.client.HTTPConnection
    if tcp_port is not None:
        conn = http.client.HTTPConnection(TCP_HOST, tcp_port, timeout=timeout)
        where = f"{TCP_HOST}:{tcp_port}"
    else:
        sock = socket_path or datadir / SOCKET_FILE
        conn = UnixHTTPConnection(str(sock), timeout=timeout)
        where = str(sock)
    body = json.dumps(args).encode()
    try:
        status, raw = _exchange(conn, name, body, token, timeout, where)
    except TimeoutError as e:
        raise TransientError(f"node did not answer {name} within {timeout:.0f}s") from e
    finally:
        conn.close()
    return _result(status, raw, where)


async def call_async(datadir: Path, name: str, args: dict[str, Any], timeout: float = 60.0,
                     socket_path: Path | None = None, token_path: Path | None = None,
                     tcp_port: int | None = None) -> Any:
    """``call`` from an event loop: on a thread of its own (not the loop's default executor,
    whose few workers would queue calls that the node answers concurrently)."""
    import asyncio
    import concurrent.futures
    import threading

    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(call(datadir, name, args, timeout, socket_path, token_path, tcp_port))
        except BaseException as e:  # handed to the awaiting task, which re-raises it
            fut.set_exception(e)

    threading.Thread(target=run, name=f"api-{name}", daemon=True).start()
    return await asyncio.wrap_future(fut)
