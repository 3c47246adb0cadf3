"""``eschaton invoice create | pay | payment | route | graph``: multi-hop payments (through the
running node's API)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from eschaton.cli.node_api import add_node_common, call


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {n}")
    return n


def _usage(msg: str) -> NoReturn:
    sys.stderr.write(f"eschaton: error: {msg}\n")
    raise SystemExit(2)


def _pay(a: argparse.Namespace) -> Any:
    if a.release:
        if a.target:
            _usage("pay --release PREIMAGE takes nothing else")
        return call(a, "routing.release", preimage=a.release)
    if len(a.target) == 1 and a.target[0].lower().startswith("eschreq1"):
        return call(a, "routing.pay", request=a.target[0], hold=a.hold, id=a.id, max_price=a.max_price)
    if len(a.target) == 2:
        try:
            amount = _positive(a.target[1])
        except argparse.ArgumentTypeError as e:
            _usage(f"pay: amount {e}")
        return call(a, "routing.pay", payee=a.target[0], amount=amount, hold=a.hold, id=a.id,
                    max_price=a.max_price)
    _usage("pay takes REQUEST, or NODE_ID SATS [--hold], or --release PREIMAGE")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("invoice", help="payment requests this node issues")
    isub = p.add_subparsers(dest="cmd", required=True)
    c = isub.add_parser("create", help="a payment request for SATS, signed by this node")
    c.add_argument("amount", type=_positive)
    c.add_argument("--description", default="")
    c.add_argument("--expiry", type=_positive, default=3600, help="seconds (default 3600)")
    add_node_common(c)
    c.set_defaults(handler=lambda a: call(a, "invoice.create", amount=a.amount, description=a.description,
                                          expiry=a.expiry))

    p = sub.add_parser("pay", help="pay a request, or a node id an amount, through the network")
    p.add_argument("target", nargs="*", help="REQUEST | NODE_ID SATS")
    p.add_argument("--hold", action="store_true", help="payer-held: the payee completes once given the preimage")
    p.add_argument("--max-price", type=_positive, default=None, metavar="SATS",
                   help="the most to spend, amount and fees together; a dearer route is refused, nothing paid")
    p.add_argument("--release", default="", metavar="PREIMAGE", help="(payee) complete a payer-held payment")
    p.add_argument("--id", default=None, help="payment id (a retry with it never pays twice)")
    add_node_common(p)
    p.set_defaults(handler=_pay)

    p = sub.add_parser("payment", help="the outcome of a payment sent through the network")
    p.add_argument("id")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "routing.payment", id=a.id))

    p = sub.add_parser("route", help="the route a payment would take now")
    p.add_argument("node")
    p.add_argument("amount", type=_positive)
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "routing.route", payee=a.node, amount=a.amount))

    p = sub.add_parser("graph", help="the channels this node knows of")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "routing.graph"))
