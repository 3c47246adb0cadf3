"""The real ElectrumX (PyPI ``e-x`` 2.0.0) over a chain's JSON-RPC, as ``test_electrumx`` starts it."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from aiorpcx import RPCSession, connect_rs

from tests.integration.chain.test_electrumx import _electrumx, until
from tests.integration.node.harness import free_port


def _env(db: Path, rpc_url: str, port: int) -> dict[str, str]:
    return {**os.environ, "COIN": "Bitcoin", "NET": "regtest", "DB_ENGINE": "leveldb", "DB_DIRECTORY": str(db),
            "DAEMON_URL": rpc_url, "SERVICES": f"tcp://127.0.0.1:{port}", "PEER_DISCOVERY": "off",
            "PEER_ANNOUNCE": "", "ALLOW_ROOT": "1", "LOG_LEVEL": "info", "CACHE_MB": "64",
            # It polls the daemon (5 s by default); a short poll keeps tests short.
            "DAEMON_POLL_INTERVAL_BLOCKS": "200", "DAEMON_POLL_INTERVAL_MEMPOOL": "200"}


@contextlib.asynccontextmanager
async def electrumx(workdir: Path, rpc_url: str, **extra_env: str) -> AsyncIterator[int]:
    """ElectrumX indexing the chain behind ``rpc_url`` (``http://user:pw@127.0.0.1:PORT/``); yields
    its TCP port once it answers. Its log is ``workdir/electrumx.log``."""
    exe = _electrumx()
    port = free_port()
    db = workdir / "electrumx-db"
    db.mkdir(parents=True, exist_ok=True)
    env = {**_env(db, rpc_url, port), **extra_env}
    log = (workdir / "electrumx.log").open("w")
    proc = await asyncio.create_subprocess_exec(exe, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        async def answers() -> bool:
            async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
                await s.send_request("server.version", ["probe", "1.4"])
            return True

        await until("ElectrumX to listen", answers)
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


def start_electrumx(workdir: Path, rpc_url: str) -> tuple[subprocess.Popen[bytes], int]:
    """The same, for tests that are not async: the process (the caller stops it) and its port
    once it answers."""
    exe = _electrumx()
    port = free_port()
    db = workdir / "electrumx-db"
    db.mkdir(parents=True, exist_ok=True)
    env = _env(db, rpc_url, port)
    with (workdir / "electrumx.log").open("w") as log:
        proc = subprocess.Popen([exe], env=env, stdout=log, stderr=subprocess.STDOUT)

    async def answers() -> bool:
        async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
            await s.send_request("server.version", ["probe", "1.4"])
        return True

    try:
        asyncio.run(until("ElectrumX to listen", answers))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port
