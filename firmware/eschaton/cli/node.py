"""``eschaton node run|status|health|events|stop``."""
from __future__ import annotations

import argparse
from typing import Any

from eschaton.cli.node_api import add_node_common, call
from eschaton.errors import LocalError


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("node", help="run or query the node daemon")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))
    p = sub.add_parser("run", help="run the node in the foreground (systemd runs this)")
    p.add_argument("--config", required=True, help="the node's TOML config")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--datadir", default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("status", help="identity, chain tip, peers and channels")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "node.status"))
    p = sub.add_parser("health", help="each service of the node, in start order, with its health")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "node.health"))
    p = sub.add_parser("events", help="the node's numbered events (payments, channels, microgrid, links)")
    add_node_common(p)
    p.add_argument("--since", type=int, default=0, help="the last sequence number already seen")
    p.add_argument("--limit", type=int, default=200, help="at most this many (1 to 1000)")
    p.add_argument("--source", default=None, help="net, channel, payments, microgrid, supply or refusals")
    p.set_defaults(handler=lambda a: call(a, "events.since", seq=a.since, limit=a.limit, source=a.source))
    p = sub.add_parser("stop", help="ask the running node to stop cleanly")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "node.stop"))


def cmd_run(args: argparse.Namespace) -> Any:
    import asyncio  # here, not at the top: ``node status`` and ``node stop`` do not need it
    import signal

    from eschaton.config import load_config
    from eschaton.daemon import logs
    from eschaton.daemon.node import Node

    if args.datadir:
        raise LocalError("node run takes its datadir from the config file, not --datadir")
    config = load_config(args.config)
    logs.setup(args.log_level)

    async def main() -> None:
        node = await Node.new(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.stop)
        try:
            await node.run()
        finally:
            await node.close()

    asyncio.run(main())
    return None
