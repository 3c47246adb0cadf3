"""``eschaton dht put|get|find|stats`` (through the running node's API)."""
from __future__ import annotations

from typing import Any

from eschaton.cli.node_api import add_node_common, call


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("dht", help="the distributed database")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))
    p = sub.add_parser("put", help="publish a preimage record (prints its key and digest)")
    p.add_argument("data", help="the preimage: text, or hex with --hex")
    p.add_argument("--alg", default="sha256", choices=("sha256", "sha256d", "hash160"))
    p.add_argument("--hex", action="store_true", help="DATA is hex")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "dht.put", data=a.data, alg=a.alg, hex=a.hex))
    p = sub.add_parser("get", help="records under a DHT key, or a preimage by digest with --alg")
    p.add_argument("key", help="DHT key (64 hex digits), or a digest with --alg")
    p.add_argument("--alg", default="", choices=("", "sha256", "sha256d", "hash160"))
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "dht.get", key=a.key, alg=a.alg))
    p = sub.add_parser("find", help="the closest reachable nodes to a DHT id")
    p.add_argument("target", help="DHT id (64 hex digits) or text to hash")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "dht.find", target=a.target))
    p = sub.add_parser("stats", help="contacts, records held, refusals")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "dht.stats"))
