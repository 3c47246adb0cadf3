"""Client for the local control API, used by the CLI."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from eschaton.api.server import SOCKET_FILE, TOKEN_FILE
from eschaton.errors import LocalError, RemoteError, TransientError


class NodeNotRunning(TransientError):
    pass


class CommandFailed(RemoteError):
    pass


async def call_async(datadir: Path, name: str, args: dict[str, Any], timeout: float = 60.0,
                     socket_path: Path | None = None, token_path: Path | None = None) -> Any:
    sock = socket_path or datadir / SOCKET_FILE
    token_file = token_path or datadir / TOKEN_FILE
    try:
        token = token_file.read_text().strip()
    except FileNotFoundError as e:
        raise NodeNotRunning(f"no node is running with datadir {datadir}") from e
    except PermissionError as e:
        raise LocalError(f"cannot read {token_file}: permission denied") from e
    conn = aiohttp.UnixConnector(path=str(sock))
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(f"http://node/v1/{name}", json=args,
                              headers={"Authorization": f"Bearer {token}"}) as r:
                body = await r.json(content_type=None)
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as e:
        raise NodeNotRunning(f"no node is answering on {sock}") from e
    except TimeoutError as e:
        raise TransientError(f"node did not answer {name} within {timeout:.0f}s") from e
    if "error" in body:
        err = body["error"]
        raise CommandFailed(f"{err.get('type', 'Error')}: {err.get('message', '')}")
    return body.get("result")


def call(datadir: Path, name: str, args: dict[str, Any], timeout: float = 60.0,
         socket_path: Path | None = None, token_path: Path | None = None) -> Any:
    return asyncio.run(call_async(datadir, name, args, timeout, socket_path, token_path))
