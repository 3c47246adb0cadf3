"""The stamp service stops even when its stop lands in the same loop turn as a chain event that
wakes its loop (Python 3.11's ``wait_for`` swallowed that cancel, and ``stop()`` waited for ever:
a node making blocks every fraction of a second hung on SIGTERM)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainNode
from eschaton.config import parse_config
from eschaton.daemon.stamp import StampService


def test_a_stop_in_the_same_turn_as_a_block_returns(tmp_path: Path) -> None:
    async def go() -> None:
        chain = EmbeddedChain(ChainNode(tmp_path / "c"))
        node = SimpleNamespace(config=parse_config(f'[node]\ndatadir = "{tmp_path}"\n', "node.toml"),
                               datadir=tmp_path, chain=chain)
        svc = StampService(node)  # type: ignore[arg-type]
        try:
            await svc.start()
            await asyncio.sleep(0.3)  # its first step done: the loop waits for a wake-up
            chain.node.mine(1)  # a new tip wakes it (its event is set) ...
            stop = asyncio.ensure_future(svc.stop())  # ... and the stop cancels it in the same turn
            await asyncio.wait({stop}, timeout=10)  # a bound, not a measurement: it takes one turn
            assert stop.done(), "stop() still waits for the stamp loop"
        finally:
            if svc._task is not None and not svc._task.done():
                svc._task.cancel()  # what a second SIGTERM would do: end the test either way
                await asyncio.sleep(0)
            await chain.close()

    asyncio.run(go())
