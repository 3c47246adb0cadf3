"""Client for the local control API, used by the CLI."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from eschaton.api.server import SOCKET_FILE, TCP_HOST, TOKEN_FILE
from eschaton.errors import LocalError, RemoteError, TransientError


class NodeNotRunning(TransientError):
    pass


class CommandFailed(RemoteError):
    pass


def _read_token(datadir: Path, token_file: Path) -> str:
    try:
        return token_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NodeNotRunning(f"no node is running with datadir {datadir}") from e
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not a token"
        raise LocalError(f"cannot read {token_file}: {why}") from e


async def call_async(datadir: Path, name: str, args: dict[str, Any], timeout: float = 60.0,
                     socket_path: Path | None = None, token_path: Path | None = None,
                     tcp_port: int | None = None) -> Any:
    """Run command ``name`` on the node. ``tcp_port``: over 127.0.0.1 at that port instead of
    the unix socket (a node configured with ``[api] socket = ""`` and a ``tcp_port``)."""
    sock = socket_path or datadir / SOCKET_FILE
    token = _read_token(datadir, token_path or datadir / TOKEN_FILE)
    if tcp_port is not None:
        conn: aiohttp.BaseConnector = aiohttp.TCPConnector()
        base, where = f"http://{TCP_HOST}:{tcp_port}", f"{TCP_HOST}:{tcp_port}"
    else:
        conn = aiohttp.UnixConnector(path=str(sock))
        base, where = "http://node", str(sock)
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(f"{base}/v1/{name}", json=args,
                              headers={"Authorization": f"Bearer {token}"}) as r:
                status, text = r.status, await r.text()
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as e:
        raise NodeNotRunning(f"no node is answering on {where}") from e
    except TimeoutError as e:
        raise TransientError(f"node did not answer {name} within {timeout:.0f}s") from e
    try:
        body = json.loads(text)
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
    return asyncio.run(call_async(datadir, name, args, timeout, socket_path, token_path, tcp_port))
