"""``eschaton channel open|pay|payment|escrow [offer|fulfil|fail]|settle|reanchor|close|list`` (through the
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


def _escrow(a: argparse.Namespace) -> Any:
    """``channel escrow``: the old two-argument form, or its offer / fulfil / fail forms."""
    w = a.words
    if w[0] == "offer" and len(w) == 3:
        if not a.hash:
            _usage("channel escrow offer: --hash is required (the payee's payment hash)")
        return call(a, "channel.escrow_offer", target=w[1], amount=_amount(w[2]), hash=a.hash,
                    timeout=a.timeout or 0, id=a.id)
    if w[0] == "fulfil" and len(w) == 3:
        return call(a, "channel.escrow_fulfil", escrow=w[1], preimage=w[2])
    if w[0] == "fail" and len(w) == 2:
        return call(a, "channel.escrow_fail", escrow=w[1], reason=a.reason)
    if len(w) == 2 and w[0] not in ("offer", "fulfil", "fail"):
        return call(a, "channel.escrow", channel=w[0], amount=_amount(w[1]))
    _usage("channel escrow takes CHANNEL AMOUNT | offer TARGET AMOUNT --hash H [--timeout BLOCKS] [--id ID] "
           "| fulfil ESCROW PREIMAGE | fail ESCROW [--reason CODE]")


def _usage(message: str) -> NoReturn:
    """An argument error: one line, exit 2 (as the parser's own)."""
    sys.stderr.write(f"eschaton: error: {message}\n")
    raise SystemExit(2)


def _amount(text: str) -> int:
    try:
        return _positive(text)
    except argparse.ArgumentTypeError as e:
        _usage(f"channel escrow: amount {e}")


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("channel", help="trade channels of the running node")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))

    p = sub.add_parser("list", help="channels, states and balances")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.list"))

    p = sub.add_parser("open", help="open a channel to a linked peer, funded by this node's wallet")
    p.add_argument("peer", help="peer node id")
    p.add_argument("capacity", type=_positive, help="satoshis this node puts in")
    p.add_argument("--lifetime", type=_positive, default=None,
                   help="blocks until the first refund matures (default: the network's, regtest 1008)")
    p.add_argument("--step", type=_positive, default=None,
                   help="blocks nLockTime moves per direction switch (default: the network's, regtest 6)")
    p.add_argument("--wait", action="store_true", help="wait until the channel is open")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.open", peer=a.peer, capacity=a.capacity,
                                          lifetime=a.lifetime or 0, step=a.step or 0, wait=a.wait))

    p = sub.add_parser("pay", help="pay the peer (retrying with the same --id never pays twice)")
    p.add_argument("channel", help="channel id")
    p.add_argument("amount", type=_positive, help="satoshis")
    p.add_argument("--id", default=None, help="payment id (default: the node makes one and prints it)")
    p.add_argument("--created", type=float, default=None,
                   help="(a retry) unix time of the first attempt: refused, not paid, if the node may have "
                        "pruned that payment's record")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.pay", channel=a.channel, amount=a.amount, id=a.id,
                                          **({"created": a.created} if a.created is not None else {})))

    p = sub.add_parser("payment", help="a payment's outcome: pending, complete or failed")
    p.add_argument("id", help="payment id")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.payment", id=a.id))

    p = sub.add_parser("escrow", help="escrows: CHANNEL AMOUNT (this node keeps the preimage), or "
                       "offer TARGET AMOUNT --hash H [--timeout BLOCKS] [--id ID], fulfil ESCROW PREIMAGE, "
                       "fail ESCROW [--reason CODE]")
    p.add_argument("words", nargs="+", metavar="ARG", help="CHANNEL AMOUNT | offer ... | fulfil ... | fail ...")
    p.add_argument("--hash", default=None, help="(offer) payment hash, 64 hex digits")
    p.add_argument("--timeout", type=_positive, default=None,
                   help="(offer) blocks from the tip until the payer may reclaim on chain")
    p.add_argument("--id", default=None, help="(offer) payment id: a retry with it never locks twice")
    p.add_argument("--reason", default="failed", help="(fail) reason code told to the payer")
    add_node_common(p)
    p.set_defaults(handler=_escrow)

    p = sub.add_parser("settle", help="commit an escrow by revealing its preimage (or --rollback)")
    p.add_argument("channel", help="channel id")
    p.add_argument("escrow", type=int, help="escrow id")
    p.add_argument("--rollback", action="store_true", help="return the escrow to its payer instead")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.settle", channel=a.channel, escrow=a.escrow,
                                          rollback=a.rollback))

    p = sub.add_parser("reanchor", help="move the channel to a new output with a fresh nLockTime budget")
    p.add_argument("channel", help="channel id")
    p.add_argument("--lifetime", type=_positive, default=None, help="blocks of the new budget")
    p.add_argument("--wait", action="store_true", help="wait until the new anchor confirms")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.reanchor", channel=a.channel, lifetime=a.lifetime or 0,
                                          wait=a.wait))

    p = sub.add_parser("close", help="close cooperatively (or --force: unilaterally)")
    p.add_argument("channel", help="channel id")
    p.add_argument("--force", action="store_true")
    add_node_common(p)
    p.set_defaults(handler=lambda a: call(a, "channel.close", channel=a.channel, force=a.force))
