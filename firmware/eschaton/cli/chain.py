"""``eschaton chain mine|info|broadcast|tx|serve``: the embedded regtest chain from the shell.

If a process (``chain serve`` or the node daemon) owns the datadir's chain, the commands talk to
it over Electrum; otherwise they open the chain directly for the duration of the command.
Bad input (a malformed or non-regtest address, bad hex, an unknown txid, N <= 0) is a one-line
error with exit code 1.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from eschaton.chain.backend import ChainBackend
from eschaton.chain.electrum.protocol import MAX_BLOCKS_PER_CALL
from eschaton.chain.errors import InvalidRequest
from eschaton.cli.args import seconds, whole
from eschaton.cli.main import add_common


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("chain", help="the embedded regtest chain: mine, info, broadcast, tx, serve")
    sub = g.add_subparsers(dest="cmd", required=True, parser_class=type(g))

    p = sub.add_parser("mine", help="mine N blocks (packing the mempool)")
    p.add_argument("n", type=whole(1, MAX_BLOCKS_PER_CALL), metavar="N")
    p.add_argument("--to", dest="address", default=None, help="regtest address for the coinbase")
    add_common(p)
    p.set_defaults(handler=cmd_mine)

    p = sub.add_parser("info", help="tip height, hash and median time past")
    add_common(p)
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("broadcast", help="submit a raw transaction to the mempool")
    p.add_argument("rawhex")
    add_common(p)
    p.set_defaults(handler=cmd_broadcast)

    p = sub.add_parser("tx", help="status and raw bytes of a transaction")
    p.add_argument("txid")
    add_common(p)
    p.set_defaults(handler=cmd_tx)

    p = sub.add_parser("serve", help="own the chain and serve it over Electrum (and bitcoind's RPC) until SIGTERM")
    p.add_argument("--mine-every", type=seconds(0, 86_400), default=None, metavar="SECONDS",
                   help="mine a block at this interval (demos)")
    p.add_argument("--rpc-port", type=whole(0, 65535), default=None, metavar="PORT",
                   help="also serve bitcoind's JSON-RPC on 127.0.0.1:PORT (0: any free port, written to "
                        "chain/rpc.port), with the cookie in chain/.cookie")
    add_common(p)
    p.set_defaults(handler=cmd_serve)


def address_to_script(address: str) -> bytes:
    """A regtest address (bcrt1..., or base58 with the test prefixes) to its scriptPubKey."""
    from eschaton.core.script import address_to_script as decode

    return decode(address, "regtest")


def _hex(s: str, what: str) -> bytes:
    try:
        return bytes.fromhex(s.strip())
    except ValueError:
        raise InvalidRequest(f"{what} is not valid hex") from None


def _txid(s: str) -> str:
    if len(s.strip()) != 64 or len(_hex(s, "txid")) != 32:
        raise InvalidRequest("txid must be 64 hex characters")
    return s.strip().lower()


def _with_chain(args: argparse.Namespace, fn: Callable[[ChainBackend], Awaitable[Any]]) -> Any:
    from eschaton.chain.open import open_chain

    async def run() -> Any:
        chain = await open_chain(args.datadir, serve=False)
        try:
            return await fn(chain)
        finally:
            await chain.close()

    return asyncio.run(run())


def cmd_mine(args: argparse.Namespace) -> Any:
    if args.n <= 0:
        raise InvalidRequest(f"N must be positive, got {args.n}")
    spk = address_to_script(args.address) if args.address else None

    async def go(chain: ChainBackend) -> Any:
        hashes = await chain.mine(args.n, spk)  # type: ignore[attr-defined]
        tip = await chain.tip()
        return {"blocks": hashes, "height": tip.height}

    result = _with_chain(args, go)
    return result if args.json else [f"mined {len(result['blocks'])} blocks, tip height {result['height']}"]


def cmd_info(args: argparse.Namespace) -> Any:
    async def go(chain: ChainBackend) -> Any:
        tip = await chain.tip()
        # The owner's automatic block production (null: off, or nobody else owns the chain).
        ask = getattr(chain, "block_production", None)
        return {
            "height": tip.height,
            "hash": tip.block_hash,
            "median_time_past": tip.median_time_past,
            "backend": type(chain).__name__,
            "block_production": await ask() if ask is not None else None,
        }

    return _with_chain(args, go)


def cmd_broadcast(args: argparse.Namespace) -> Any:
    raw = _hex(args.rawhex, "raw transaction")

    async def go(chain: ChainBackend) -> Any:
        return {"txid": await chain.broadcast(raw)}

    r = _with_chain(args, go)
    return r if args.json else r["txid"]


def cmd_tx(args: argparse.Namespace) -> Any:
    txid = _txid(args.txid)

    async def go(chain: ChainBackend) -> Any:
        st = await chain.tx_status(txid)
        raw = await chain.get_transaction(txid)
        return {
            "txid": st.txid,
            "in_mempool": st.in_mempool,
            "height": st.height,
            "block_hash": st.block_hash,
            "confirmations": st.confirmations,
            "hex": raw.hex(),
        }

    return _with_chain(args, go)


def cmd_serve(args: argparse.Namespace) -> Any:
    from eschaton.chain.embedded.chain import EmbeddedChain
    from eschaton.chain.open import open_chain

    if args.mine_every is not None and args.mine_every <= 0:
        raise InvalidRequest("--mine-every must be positive")

    async def run() -> Any:
        rpc = None
        if args.rpc_port is not None:
            from eschaton.chain.rpc.server import RpcListen

            rpc = RpcListen(args.rpc_port)
        chain = await open_chain(args.datadir, serve=True, direct_only=True, rpc=rpc)
        assert isinstance(chain, EmbeddedChain) and chain.server is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tip = await chain.tip()
        if args.mine_every is not None:
            chain.start_auto_mining(args.mine_every)
        rpc_note = f", JSON-RPC on 127.0.0.1:{chain.rpc.port}" if chain.rpc is not None else ""
        sys.stdout.write(f"serving chain at height {tip.height} on 127.0.0.1:{chain.server.port}{rpc_note}\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await chain.close()
        return None

    return asyncio.run(run())
