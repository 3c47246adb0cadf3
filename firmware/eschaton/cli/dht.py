"""``eschaton dht put|get|find|query|stats`` (through the running node's API)."""
from __future__ import annotations

import argparse
from typing import Any

from eschaton.cli.node_api import add_node_common, call


def _sats(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of satoshis, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {n}")
    return n


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
    p = sub.add_parser("query", help="a paid query over the records under a key (docs/dht.md)")
    p.add_argument("key", help="DHT key (64 hex digits), or a digest with --alg")
    p.add_argument("query", help='the query as JSON, e.g. \'["has", ["data"]]\'')
    p.add_argument("--alg", default="", choices=("", "sha256", "sha256d", "hash160"))
    p.add_argument("--max-price", type=_sats, default=-1, metavar="SATS",
                   help="the most to pay; a higher quote is refused, nothing paid ([dht] max_price_sat)")
    p.add_argument("--hops", type=int, default=-1, help="how often it may be forwarded ([dht] forward_hops)")
    p.add_argument("--id", default="", help="query id (32 hex digits): a retry with it never pays twice")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "dht.query", key=a.key, query=a.query, max_price=a.max_price,
                                          alg=a.alg, hops=a.hops, id=a.id))
    p = sub.add_parser("stats", help="contacts, records held, refusals")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "dht.stats"))
