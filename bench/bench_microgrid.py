"""Microgrid settlement costs, each next to a bare baseline measured in the same run.

- Buyer invoice check (parse, ed25519 verify, tariff, tolerance) vs a bare pynacl verify of the
  same bytes: how much our checking adds to the signature cost.
- Seller reading -> signed invoice vs a bare pynacl sign.
- Reading that crosses the credit limit -> actuator called, through ``SellerService`` with its
  fsynced SQLite ledger (the cut path the 1 s deadline applies to) vs a bare SQLite insert+commit
  with synchronous=FULL on the same disk.
Run: .venv/bin/python bench/bench_microgrid.py [--n N]
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from nacl.signing import VerifyKey  # noqa: E402

from eschaton.core.microgrid.buyer import BuyerCore  # noqa: E402
from eschaton.core.microgrid.canonical import encode  # noqa: E402
from eschaton.core.microgrid.decisions import SendInvoice  # noqa: E402
from eschaton.core.microgrid.invoice import INVOICE_DOMAIN, Invoice  # noqa: E402
from eschaton.microgrid.service import SellerService  # noqa: E402
from tests.unit.microgrid.helpers import (  # noqa: E402
    BUYER_KEY,
    METER,
    SELLER_KEY,
    T0,
    make_pair,
    water,
)


def per_second(fn: object, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n

    # 1. seller: reading -> signed invoice
    pair = make_pair(water(1000, credit_limit_sat=10**15))
    sell = per_second(lambda i: pair.seller.on_reading(METER, 1000 * (i + 1), T0 + 1000 * (i + 1),
                                                       T0 + 1000 * (i + 1)), n)
    msg = INVOICE_DOMAIN + b"x" * 120
    bare_sign = per_second(lambda i: SELLER_KEY.sign(msg), n)
    print(f"seller invoices/s      {sell:10.0f}   bare ed25519 sign/s   {bare_sign:10.0f}   "
          f"ratio {sell / bare_sign:.2f}")

    # 2. buyer: invoice check + payment decision
    pair = make_pair(water(1000, credit_limit_sat=10**15))
    invoices = [next(d.invoice for d in pair.seller.on_reading(
        METER, 1000 * (i + 1), T0 + 1000 * (i + 1), T0 + 1000 * (i + 1))
        if isinstance(d, SendInvoice)).to_wire() for i in range(n)]
    buy = per_second(lambda i: pair.buyer.on_invoice(invoices[i], T0 + 1000 * (i + 1)), n)
    vk = VerifyKey(bytes(SELLER_KEY.verify_key))
    signed = [(INVOICE_DOMAIN + encode(Invoice.from_wire(w).body()), w["sig"]) for w in invoices]
    bare_verify = per_second(lambda i: vk.verify(signed[i][0], signed[i][1]), n)
    print(f"buyer invoice checks/s {buy:10.0f}   bare ed25519 verify/s {bare_verify:10.0f}   "
          f"ratio {buy / bare_verify:.2f}")

    # 3. cut latency through the durable ledger, vs a bare fsynced SQLite commit
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        cut_ms: list[float] = []
        for k in range(min(n, 200)):
            seen: list[float] = []
            svc = SellerService.open(Path(d) / f"s{k}.db", SELLER_KEY,
                                     actuator=lambda m, on, seen=seen: seen.append(time.perf_counter()))
            offer = svc.offer(offer_id=b"o" * 16, tariff=water(1000, credit_limit_sat=1),
                              meter_id=METER, start_units=0, now_ms=T0, expires_ms=T0 + 1)
            acc, _ = BuyerCore(BUYER_KEY).accept(offer, T0)
            svc.on_acceptance(acc.to_wire(), T0)
            start = time.perf_counter()
            svc.on_reading(METER, 5000, T0 + 1000, T0 + 1000)
            cut_ms.append((seen[0] - start) * 1000)
            svc.close()
        db = sqlite3.connect(Path(d) / "bare.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        bare_ms: list[float] = []
        for k in range(len(cut_ms)):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?, ?)", (k, b"x" * 300))
            db.execute("COMMIT")
            bare_ms.append((time.perf_counter() - start) * 1000)
        db.close()
    med, worst = statistics.median(cut_ms), max(cut_ms)
    bmed = statistics.median(bare_ms)
    print(f"reading->cut actuator  median {med:.2f} ms  max {worst:.2f} ms (deadline 1000 ms); "
          f"bare fsynced commit median {bmed:.2f} ms; ratio {med / bmed:.2f}")


if __name__ == "__main__":
    main()
