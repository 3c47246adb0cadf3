"""``eschaton peer list|connect`` (through the running node's API)."""
from __future__ import annotations

from typing import Any

from eschaton.cli.node_api import add_node_common, call


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("peer", help="peers of the running node")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))
    p = sub.add_parser("list", help="linked peers and discovered neighbours")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "peer.list"))
    p = sub.add_parser("connect", help="dial a peer")
    p.add_argument("id", help="peer node id (64 hex digits)")
    p.add_argument("url", help="transport URL, e.g. tcp://127.0.0.1:9735")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "peer.connect", id=a.id, url=a.url))
