"""A demo node process: ``eschaton node run`` plus the emulated pipes of ``eschaton.demo.flows``.

``python -m eschaton.demo.node_process --config NODE.toml --flows FLOWS.json``. The flows drive the
node's *mock* meter pins, which live in this process, so they are started here, once the node
is up, and stopped before it closes. The node itself knows nothing of the demo.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from eschaton.config import load_config
from eschaton.daemon import logs
from eschaton.daemon.node import Node
from eschaton.demo.flows import Flows
from eschaton.errors import EschatonError


async def _run(config_path: str, flows_path: str) -> None:
    node = await Node.new(load_config(config_path))
    flows = None
    if node.metering is not None and node.metering.hw.backend.name == "MOCK":
        flows = Flows.from_file(node.metering, flows_path).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    try:
        await node.run()
    finally:
        if flows is not None:
            flows.stop()
        await node.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eschaton.demo.node_process")
    p.add_argument("--config", required=True)
    p.add_argument("--flows", required=True)
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logs.setup(a.log_level)
    try:
        asyncio.run(_run(a.config, a.flows))
    except EschatonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
