"""``eschaton microgrid status|hold|ledger|renegotiate``: the running node's metered trade with neighbours."""
from __future__ import annotations

from typing import Any

from eschaton.cli.node_api import add_node_common, call


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("microgrid", help="water and power sold to and bought from neighbours")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))
    p = sub.add_parser("status", help="contracts, metered units, invoiced and paid, supply state")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "microgrid.status"))
    p = sub.add_parser("hold", help="stop paying a seller's invoices for METER (--resume to pay)")
    p.add_argument("meter")
    p.add_argument("--resume", action="store_true", help="pay what is due and resume")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "microgrid.hold", meter=a.meter, paused=not a.resume))
    p = sub.add_parser("ledger", help="every ledger entry (hash chain verified)")
    p.add_argument("--role", choices=("seller", "buyer", "loss"), default="seller")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "microgrid.ledger", role=a.role))
    p = sub.add_parser("renegotiate", help="offer (as seller) or propose (as buyer) new terms for METER")
    p.add_argument("meter")
    p.add_argument("--price-msat", type=int, default=None, help="new price in msat per unit")
    p.add_argument("--credit-limit-sat", type=int, default=None, help="new credit limit")
    p.add_argument("--fee-sat", type=int, default=None, help="new access fee per period")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "microgrid.renegotiate", meter=a.meter, price_msat=a.price_msat,
                                          credit_limit_sat=a.credit_limit_sat, fee_sat=a.fee_sat))
