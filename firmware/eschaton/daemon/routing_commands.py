"""API commands of the routing service: requests, payments through the network, routes, the graph."""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from eschaton.api.registry import ApiError, CommandTable, Param
from eschaton.errors import EschatonError

ROUTING = CommandTable()
_ID = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,55}$")
"""A payment id as the channels' (letters, digits, . _ : -), at most 56 long: attempt n of
payment P offers its escrow as P.n, which must stay a channel payment id (64)."""


def _svc(node: Any) -> Any:
    return node.service("routing")


def _check_id(pid: str | None) -> str:
    if pid is None or pid == "":
        return os.urandom(16).hex()
    if not _ID.match(pid):
        raise ApiError(f"bad payment id {pid[:80]!r}: 1 to 56 letters, digits or . _ : -")
    return pid


@ROUTING.command("invoice.create", "make a payment request signed by this node (it keeps the preimage)",
                 Param("amount", int, "satoshis"),
                 Param("description", str, "what it is for (at most 256 bytes)", required=False, default=""),
                 Param("expiry", int, "seconds it holds", required=False, default=3600))
async def invoice_create(node: Any, amount: int, description: str, expiry: int) -> dict[str, Any]:
    if amount <= 0 or expiry <= 0:
        raise ApiError("amount and expiry must be positive")
    try:
        req = _svc(node).create_request(amount, description, expiry)
    except EschatonError as e:
        raise ApiError(str(e)) from None
    return {"request": req.encode(), "hash": req.payment_hash.hex(), "amount_sat": req.amount,
            "expires": req.expires, "payee": req.payee.hex(), "description": req.description}


@ROUTING.command("routing.pay", "pay a payment request, or a node id an amount, through the network; the same "
                 "id never pays twice",
                 Param("request", str, "a payment request (eschreq1...)", required=False, default=""),
                 Param("payee", str, "the payee's node id (instead of a request)", required=False, default=""),
                 Param("amount", int, "satoshis (with a node id)", required=False, default=0),
                 Param("hold", bool, "payer-held: answer once the escrows are on their way, with the "
                       "preimage, which the payee needs (routing.release) to complete", required=False, default=False),
                 Param("id", str, "payment id (default: the node makes one)", required=False),
                 Param("max_price", int, "the most to spend, amount and route fees together (satoshis)",
                       required=False))
async def routing_pay(node: Any, request: str, payee: str, amount: int, hold: bool,
                      id: str | None, max_price: int | None = None) -> dict[str, Any]:
    import time

    from eschaton.core.routing.invoice import BadRequest, PaymentRequest
    from eschaton.daemon.routing import node_id

    target = payee
    svc = _svc(node)
    pid = _check_id(id)
    if request:
        if target or amount:
            raise ApiError("give a request, or a node id and an amount, not both")
        try:
            req = PaymentRequest.decode(request)
            req.check(int(time.time()))
        except BadRequest as e:
            raise ApiError(str(e)) from None
        to, amt, h, secret, pre = req.payee, req.amount, req.payment_hash, req.secret, None
        if hold:
            raise ApiError("--hold is for payments to a node id (a request's payee holds its preimage)")
    else:
        if not target or amount <= 0:
            raise ApiError("give a request, or a node id and a positive amount")
        try:
            to = node_id(target)
        except EschatonError as e:
            raise ApiError(str(e)) from None
        known = svc.payment(pid)
        # A retry of a payment to a node id reuses its preimage (it is stored with the payment).
        pre = known.secret if known is not None and known.secret else os.urandom(32)
        amt, h = amount, hashlib.sha256(pre).digest()
        secret = bytes(32) if hold else pre
        if known is not None:
            h = known.hash
    if to == svc.me:
        raise ApiError("that is this node")
    if max_price is not None and max_price < amt:
        raise ApiError(f"the amount {amt} sat alone exceeds --max-price {max_price} sat; nothing paid")
    try:
        row = await svc.pay(pid, to, amt, h, secret, pre, hold, max_price)
    except EschatonError as e:
        raise ApiError(str(e)) from None
    return row.to_json()  # type: ignore[no-any-return]


@ROUTING.command("routing.payment", "the outcome of a payment sent through the network, by id",
                 Param("id", str, "payment id"))
async def routing_payment(node: Any, id: str) -> dict[str, Any]:
    row = _svc(node).payment(id)
    if row is None:
        raise ApiError(f"no payment {id[:80]!r} (never sent, or refused before anything was locked)")
    return row.to_json()  # type: ignore[no-any-return]


@ROUTING.command("routing.release", "(payee of a payer-held payment) complete it with the preimage the payer "
                 "gave", Param("preimage", str, "64 hex digits"))
async def routing_release(node: Any, preimage: str) -> dict[str, Any]:
    try:
        pre = bytes.fromhex(preimage)
    except ValueError:
        pre = b""
    if len(pre) != 32:
        raise ApiError("bad preimage: expected 64 hex digits")
    released = _svc(node).release(pre)
    if not released:
        raise ApiError("no held payment for that preimage's hash")
    return {"hash": hashlib.sha256(pre).hexdigest(), "released": released}


@ROUTING.command("routing.route", "the route a payment to a node would take now (fees, timeouts)",
                 Param("payee", str, "the payee's node id"), Param("amount", int, "satoshis"))
async def routing_route(node: Any, payee: str, amount: int) -> dict[str, Any]:
    from eschaton.daemon.routing import node_id

    try:
        to = node_id(payee)
    except EschatonError as e:
        raise ApiError(str(e)) from None
    if amount <= 0:
        raise ApiError("amount must be positive")
    svc = _svc(node)
    route = svc.find(to, amount)
    if route is None:
        raise ApiError(f"no route to {to.hex()[:12]} for {amount} sat")
    return {"hops": [{"node": e.target.hex(), "channel": e.channel.hex(), "amount_sat": a, "timeout": t}
                     for e, a, t in zip(route.edges, route.amounts, route.timeouts, strict=True)],
            "fees_sat": list(route.fees), "total_sat": route.total, "lockup_blocks": route.lockup}


@ROUTING.command("routing.graph", "the channels this node knows of (announced, checked on chain)")
async def routing_graph(node: Any) -> dict[str, Any]:
    return {"channels": _svc(node).peers_graph()}
