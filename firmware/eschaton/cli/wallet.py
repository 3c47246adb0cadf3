"""``eschaton wallet address|balance|send|psbt-create|psbt-sign|psbt-finalize``; ``restore``,
``show-mnemonic`` and ``descriptors`` live in ``wallet_seed``.

The wallet lives in ``<datadir>/wallet`` and reaches the chain through ``open_chain``: directly,
or through the node (or ``chain serve``) that owns it. Amounts are integer satoshis; an amount of
zero or less, above the balance, a malformed address or PSBT is a one-line error, exit code 1.
"""
from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from eschaton.cli.node_api import add_node_common as add_common
from eschaton.errors import LocalError


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("wallet", help="the node's BIP84 wallet")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))

    p = sub.add_parser("address", help="a fresh receive address")
    add_common(p)
    p.set_defaults(handler=cmd_address)

    p = sub.add_parser("balance", help="confirmed, unconfirmed and immature satoshis")
    add_common(p)
    p.set_defaults(handler=cmd_balance)

    p = sub.add_parser("send", help="pay SATS to ADDRESS and broadcast")
    p.add_argument("address")
    p.add_argument("sats", type=_sats, metavar="SATS")
    add_common(p)
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("psbt-create", help="an unsigned PSBT paying SATS to ADDRESS, for an external signer")
    p.add_argument("address")
    p.add_argument("sats", type=_sats, metavar="SATS")
    add_common(p)
    p.set_defaults(handler=cmd_psbt_create)

    p = sub.add_parser("psbt-sign", help="add this wallet's signatures to a base64 PSBT")
    p.add_argument("psbt")
    add_common(p)
    p.set_defaults(handler=cmd_psbt_sign)

    p = sub.add_parser("psbt-finalize", help="check signatures, finalize and broadcast a base64 PSBT")
    p.add_argument("psbt")
    p.add_argument("--no-broadcast", action="store_true", help="only print the final transaction")
    add_common(p)
    p.set_defaults(handler=cmd_psbt_finalize)

    from eschaton.cli import wallet_seed

    wallet_seed.register(sub)


def _sats(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"amount must be a whole number of satoshis, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"amount must be positive, got {n}")
    return n


def _datadir(args: argparse.Namespace) -> Any:
    """--config FILE names the node whose wallet this is; else --datadir / $ESCHATON_DATADIR.
    Only [node] and [api] are read: with a node running, the command is a thin API client."""
    from eschaton.store.datadir import resolve_datadir

    if getattr(args, "config", None):
        from eschaton.config import load_client_config

        return load_client_config(args.config).node.datadir
    return resolve_datadir(args.datadir)


def _dirs(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(node datadir holding wallet/, directory holding the chain/ this wallet uses, network)."""
    from eschaton.store.datadir import resolve_datadir

    if getattr(args, "config", None):
        from eschaton.cli.wallet_seed import network_name
        from eschaton.config import load_config

        cfg = load_config(args.config)
        return cfg.node.datadir, cfg.chain.datadir or cfg.node.datadir, network_name(cfg.chain.network)
    base = resolve_datadir(args.datadir)
    return base, base, "regtest"


def _via_node(args: argparse.Namespace, name: str, **params: Any) -> Any | None:
    """Ask the running node that owns this datadir, if any; None when no node answers.

    A running node may use a shared chain elsewhere, so its wallet must be asked through it."""
    from eschaton.api.client import NodeNotRunning, call
    from eschaton.api.endpoint import SOCKET_FILE

    base = _datadir(args)
    if not (base / SOCKET_FILE).exists():
        return None
    try:
        return call(base, name, params)
    except NodeNotRunning:
        return None


def with_wallet(args: argparse.Namespace, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    import asyncio

    from eschaton.chain.open import open_chain
    from eschaton.wallet.wallet import Wallet

    async def run() -> Any:
        base, chain_base, network = _dirs(args)
        chain = await open_chain(chain_base, serve=False)
        try:
            return await fn(Wallet(base / "wallet", chain, network))
        finally:
            await chain.close()

    return asyncio.run(run())


def cmd_address(args: argparse.Namespace) -> Any:
    r = _via_node(args, "wallet.address")
    if r is not None:
        return r if args.json else r["address"]

    async def go(w: Any) -> Any:
        addr = w.new_address()
        return {"address": addr} if args.json else addr

    return with_wallet(args, go)


def cmd_balance(args: argparse.Namespace) -> Any:
    r = _via_node(args, "wallet.balance")
    if r is not None:
        return r

    async def go(w: Any) -> Any:
        b = await w.balance()
        return {"confirmed": b.confirmed, "unconfirmed": b.unconfirmed, "immature": b.immature,
                "spendable": b.spendable}

    return with_wallet(args, go)


def cmd_send(args: argparse.Namespace) -> Any:
    r = _via_node(args, "wallet.send", address=args.address, sats=args.sats)
    if r is not None:
        return r if args.json else r["txid"]

    async def go(w: Any) -> Any:
        txid = await w.send(args.address, args.sats)
        return {"txid": txid} if args.json else txid

    return with_wallet(args, go)


def cmd_psbt_create(args: argparse.Namespace) -> Any:
    from eschaton.core import script
    from eschaton.core.tx import TxOut

    async def go(w: Any) -> Any:
        spk = script.address_to_script(args.address, w.network)
        b64 = await w.create_psbt([TxOut(args.sats, spk)])
        return {"psbt": b64} if args.json else b64

    return with_wallet(args, go)


def cmd_psbt_sign(args: argparse.Namespace) -> Any:
    async def go(w: Any) -> Any:
        b64 = w.sign_psbt(args.psbt)
        return {"psbt": b64} if args.json else b64

    return with_wallet(args, go)


def cmd_psbt_finalize(args: argparse.Namespace) -> Any:
    from eschaton.core import psbt
    from eschaton.core.tx import serialize, txid

    async def go(w: Any) -> Any:
        tx = psbt.finalize(args.psbt)
        raw = serialize(tx)
        if args.no_broadcast:
            return {"txid": txid(tx), "hex": raw.hex()}
        return {"txid": await w.backend.broadcast(raw), "hex": raw.hex()}

    if not args.psbt.strip():
        raise LocalError("empty PSBT")
    return with_wallet(args, go)
