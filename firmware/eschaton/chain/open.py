"""``open_chain``: the one way the wallet, the node and the CLI get a ``ChainBackend``.

Rules:
- If no process owns ``<datadir>/chain`` this process becomes the owner: it opens the embedded
  chain directly and (``serve=True``, the default) serves it over Electrum so that other
  processes can share it.
- If another process owns it, connect to its owner socket (``chain/electrum.sock``), which only
  the owner's user (and root) may use and on which every method works, mining included. The
  loopback TCP port (``chain/electrum.port``) is not used here: it is read-only (see the design
  note in ``electrum/server.py``).
- A chain directory of another user is a one-line ``ChainUnavailable``: its modes (0700) keep
  us out, and the owner socket would refuse us anyway.
- Races (two processes opening at once, a server still starting, a stale socket after a
  crash) are retried until ``timeout``; then ``ChainUnavailable``.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from eschaton.chain.backend import ChainBackend
from eschaton.chain.electrum.client import ElectrumChainClient
from eschaton.chain.electrum.server import SOCKET_FILE, ElectrumServer
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainLock, ChainNode
from eschaton.chain.errors import ChainDirUnusable, ChainLocked, ChainUnavailable
from eschaton.store.datadir import resolve_datadir

if TYPE_CHECKING:
    from eschaton.chain.rpc.server import RpcListen

__all__ = ["open_chain", "resolve_datadir"]

# What a directory that cannot be made or written looks like: a file in the way, a read-only or
# foreign parent. Such a setting is one line to the operator, not a traceback.
_DIR_ERRNOS = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS})


@contextlib.contextmanager
def _dir_errors(chain_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        if e.errno not in _DIR_ERRNOS:
            raise
        why = "it is not a directory" if e.errno == errno.EEXIST else e.strerror
        raise ChainDirUnusable(f"chain directory {chain_dir}: cannot use it: {why}") from None


async def open_chain(
    datadir: str | Path | None, *, serve: bool = True, direct_only: bool = False, timeout: float = 10.0,
    also: tuple[str, int] | None = None, rpc: RpcListen | None = None,
) -> ChainBackend:
    """An ``EmbeddedChain`` (owner) or an ``ElectrumChainClient`` (the chain is owned elsewhere).

    ``direct_only``: never connect to a server (raise ``ChainLocked`` instead). ``also``: as the
    owner, serve on that (host, port) too (``[chain] serve``). ``rpc``: as the owner, serve the
    bitcoind-compatible JSON-RPC on 127.0.0.1 too (``[chain] rpc_port``)."""
    base = resolve_datadir(datadir)
    chain_dir = base / "chain"
    deadline = time.monotonic() + timeout

    def foreign() -> ChainUnavailable:
        return ChainUnavailable(f"the chain in {chain_dir} belongs to another user: run this as that user")

    while True:
        try:
            with _dir_errors(chain_dir):
                held = ChainLock.held(chain_dir)
        except ChainDirUnusable:
            # Permission denied on a directory that exists is another user's chain (0700).
            if chain_dir.is_dir() and not os.access(chain_dir, os.R_OK | os.X_OK):
                raise foreign() from None
            raise
        if not held:
            try:
                with _dir_errors(chain_dir):
                    node = ChainNode(base)
            except ChainLocked:
                pass  # lost a race with another opener: connect to it instead
            else:
                chain = EmbeddedChain(node)
                if serve:
                    server = ElectrumServer(node, also=also)
                    try:
                        await server.start()
                    except BaseException:
                        await chain.close()
                        raise
                    chain.server = server
                if rpc is not None:
                    from eschaton.chain.rpc.server import RpcServer

                    rpc_server = RpcServer(node, rpc.port, user=rpc.user, password=rpc.password)
                    try:
                        await rpc_server.start()
                    except BaseException:
                        await chain.close()
                        raise
                    chain.rpc = rpc_server
                return chain
        elif direct_only:
            raise ChainLocked(f"another process owns the chain in {chain_dir}")
        sock = chain_dir / SOCKET_FILE
        if sock.exists():
            try:
                return await ElectrumChainClient.connect_owner(sock)
            except PermissionError:
                raise foreign() from None
            except ChainUnavailable:
                pass  # a socket left by a crash, or a server that is still starting
        if time.monotonic() > deadline:
            raise ChainUnavailable(f"the chain in {chain_dir} is owned by another process that does not answer")
        await asyncio.sleep(0.05)
