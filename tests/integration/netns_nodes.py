"""Node processes inside network namespaces a test created: start, mine on their chain, wait, stop.

Shared by the tests that put nodes on separate "machines" (``ip netns``): the node API is a unix
socket in the node's datadir, so the test process reaches every node from the host namespace;
the chain's owner is reached through the CLI run inside the owner's namespace (its Electrum
server is on that namespace's loopback).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from eschaton.demo.village import House, stop_node


def start_in(ns: str, h: House) -> None:
    """``eschaton node run`` for house ``h`` inside namespace ``ns``, logging to ``h.log``."""
    env = dict(os.environ)
    env.pop("ESCHATON_DEMO_FLOWS", None)
    logf = open(h.log, "ab")  # noqa: SIM115 - handed to the child
    try:
        h.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "eschaton", "node", "run",
             "--config", str(h.config)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    finally:
        logf.close()


def mine(ns: str, chain_base: Path, n: int, to: str | None = None) -> None:
    """Mine ``n`` blocks on the chain in ``chain_base`` through its owner in namespace ``ns``."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "eschaton", "chain", "mine", str(n),
           "--datadir", str(chain_base), *(["--to", to] if to else [])]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


async def until(what: str, pred: Callable[[], Awaitable[bool]], timeout: float,
                poll: float = 0.3) -> None:
    end = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(poll)


def stop_and_show(*houses: House) -> None:
    """Stop the nodes in the order given (chain owner last), then print each log's tail."""
    for h in houses:
        with contextlib.suppress(Exception):
            stop_node(h)
    for h in houses:
        if h.log.exists():
            print(f"--- {h.name} log tail:\n{h.log.read_text(errors='replace')[-3000:]}")
