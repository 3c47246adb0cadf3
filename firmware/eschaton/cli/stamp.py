"""``eschaton stamp FILE...``, ``eschaton stamp verify FILE.ots``, ``eschaton stamp status``,
``eschaton stamp after FILE`` (through the running node's API).

``stamp FILE...`` sends each file's sha256 and writes ``FILE.ots`` as soon as its proof is
complete; it is idempotent, so running it again later fetches proofs still pending.
``--wait S`` keeps asking for up to S seconds. ``--upstream PEER`` stamps through that peer
instead of locally, paying its price per digest (at most ``--max-price`` sat each, by default
``[stamp] max_price_sat``); a digest already sent to the peer is never paid for again. ``verify`` checks a proof against the node's
own chain (no other Bitcoin node needed). ``after FILE`` writes ``FILE.after``, a statement
embedding the file's digest and the latest block hashes; stamping that gives both bounds, and
``verify FILE.after.ots`` checks both. A file literally named ``verify``, ``status`` or
``after`` is given as ``./verify``.
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

from eschaton.cli.node_api import add_node_common, call
from eschaton.errors import LocalError


class StampCliError(LocalError):
    pass


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise StampCliError(f"cannot read {path}: {e.strerror}") from None


def _stamp(a: argparse.Namespace, files: list[str]) -> list[dict[str, Any]]:
    digests = {hashlib.sha256(_read(f)).hexdigest(): f for f in files}
    deadline = time.monotonic() + a.wait
    done: dict[str, dict[str, Any]] = {}
    while True:
        todo = [d for d in digests if d not in done]
        extra: dict[str, Any] = {}
        if a.upstream:
            extra = {"upstream": a.upstream, "max_price": -1 if a.max_price is None else a.max_price}
        r = call(a, "stamp.submit", digests=",".join(todo), **extra)
        for item in r["digests"]:
            f = digests[item["digest"]]
            if item["ots"]:
                out = Path(f + ".ots")
                out.write_bytes(bytes.fromhex(item["ots"]))
                done[item["digest"]] = {"file": f, "state": "proven", "ots": str(out)}
        if len(done) == len(digests) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return [done.get(d, {"file": f, "state": "pending"}) for d, f in digests.items()]


def _verify(a: argparse.Namespace, proof_path: str) -> Any:
    if not proof_path.endswith(".ots"):
        raise StampCliError(f"{proof_path}: a proof file ends in .ots")
    target = a.file or proof_path[:-4]
    data = _read(target)
    out = {"file": target, **call(a, "stamp.verify", ots=_read(proof_path).hex(),
                                  digest=hashlib.sha256(data).hexdigest())}
    if target.endswith(".after"):  # an 'after' statement: made after its blocks, before the proof's
        out.update(call(a, "stamp.after_check", statement=data.hex()))
    return out


def _after(a: argparse.Namespace, path: str) -> Any:
    r = call(a, "stamp.after", digest=hashlib.sha256(_read(path)).hexdigest())
    out = Path(path + ".after")
    out.write_bytes(bytes.fromhex(r["statement"]))
    return {"statement": str(out), "after_height": r["after_height"]}


def _dispatch(a: argparse.Namespace) -> Any:
    first, rest = a.args[0], a.args[1:]
    if first == "status":
        return call(a, "stamp.status")
    if first == "after":
        if len(rest) != 1:
            raise StampCliError("usage: eschaton stamp after FILE (then stamp FILE.after)")
        return _after(a, rest[0])
    if first == "verify":
        if len(rest) != 1:
            raise StampCliError("usage: eschaton stamp verify FILE.ots [--file FILE]")
        return _verify(a, rest[0])
    return _stamp(a, a.args)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("stamp", help="timestamp files (OpenTimestamps proofs), verify, status")
    p.add_argument("args", nargs="+", metavar="FILE | verify FILE.ots | status | after FILE")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for complete proofs")
    p.add_argument("--file", default=None, help="verify: the stamped file (default: the .ots name without .ots)")
    p.add_argument("--upstream", default="", metavar="PEER", help="stamp through this peer (node id), paying it")
    p.add_argument("--max-price", type=int, default=None, metavar="SAT",
                   help="with --upstream: the most to pay per digest (default: [stamp] max_price_sat)")
    add_node_common(p)
    p.set_defaults(handler=_dispatch)
