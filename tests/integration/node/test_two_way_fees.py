"""Two-way trade that costs almost nothing: 1-sat payments flowing both ways at once on a
channel with the node's default parameters, no block mined. Every payment is accounted for on
both sides; the turn holder's dwell batches each side's payments into few direction switches;
and the cooperative close gives the fee steps back, so the close transaction read from the
chain pays only the fee a close of an unused channel pays."""
from __future__ import annotations

import asyncio
import time

import pytest

from eschaton.api.client import call_async
from eschaton.core import tx as T
from eschaton.core.channel.params import DEFAULT_MAX_CONTRACTS, min_fee_step
from tests.integration.node.harness import Cluster, NodeProc, channel_pair, mirrored, pay, poll

pytestmark = pytest.mark.timeout(180)

CAPACITY = 2_000_000
FEE_STEP = min_fee_step(DEFAULT_MAX_CONTRACTS)  # the node's default
RUN_S = 3.0  # each caller pays for this long
CALLERS = 3  # concurrent callers on each side


async def _stream(node: NodeProc, cid: str, tag: str, until: float) -> tuple[list[str], list[object]]:
    """1-sat payments, one after the other, with ids, until ``until``: (ids paid, failures)."""
    done: list[str] = []
    failed: list[object] = []
    n = 0
    while time.monotonic() < until:
        pid = f"{tag}-{n}"
        n += 1
        try:
            st = await call_async(node.datadir, "channel.pay", {"channel": cid, "amount": 1, "id": pid},
                                  timeout=30)
            if st.get("payment_state") != "complete":
                failed.append((pid, st))
            else:
                done.append(pid)
        except Exception as e:  # recorded and asserted on below, with the message
            failed.append((pid, e))
    return done, failed


def _close_txid(node: NodeProc, cid: str, start: int) -> str:
    rec = node.wait_log(lambda r: str(r.get("msg", "")).startswith("broadcast close")
                        and f"channel {cid[:12]}:" in str(r.get("msg", ""))
                        and "refused" not in str(r.get("msg", "")), f"close of {cid[:12]}", start=start)
    return str(rec["msg"]).rsplit(": ", 1)[1]


def test_two_way_one_sat_payments_batch_switches_and_the_close_pays_only_its_own_fee(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY)  # the node's default lifetime, step, fee step, dwell
    opened, _ = mirrored(a, b, cid)
    base_fee = opened["fee_sat"]  # the initial refund's fee: what a close of an unused channel pays
    pay(a, b, cid, 100_000)  # b needs a balance of its own to pay fee steps when it takes the turn
    a0, b0 = mirrored(a, b, cid)

    async def both_ways() -> list[tuple[list[str], list[object]]]:
        until = time.monotonic() + RUN_S
        return list(await asyncio.gather(*(_stream(a, cid, f"a{i}", until) for i in range(CALLERS)),
                                         *(_stream(b, cid, f"b{i}", until) for i in range(CALLERS))))

    results = asyncio.run(both_ways())
    failures = [f for _, fs in results for f in fs]
    assert not failures, failures[:5]
    sent_a = sum(len(d) for d, _ in results[:CALLERS])
    sent_b = sum(len(d) for d, _ in results[CALLERS:])
    payments = sent_a + sent_b
    assert sent_a > 0 and sent_b > 0, (sent_a, sent_b)

    # Every payment accounted for on both sides: one version each, and each side's balance plus
    # its fee share moved by exactly what it received less what it paid.
    a1, b1 = mirrored(a, b, cid)
    assert a1["version"] - a0["version"] == payments
    assert (a1["local_sat"] + a1["fee_paid_sat"]) - (a0["local_sat"] + a0["fee_paid_sat"]) == sent_b - sent_a
    assert (b1["local_sat"] + b1["fee_paid_sat"]) - (b0["local_sat"] + b0["fee_paid_sat"]) == sent_a - sent_b
    for node, tag in ((a, "a"), (b, "b")):
        for i in range(CALLERS):
            rec = node.api("channel.payment", id=f"{tag}{i}-0")
            assert rec["state"] == "complete", rec
    # Direction switches: each one reserved a fee step; far fewer than the payments.
    switches = (a1["fee_sat"] - a0["fee_sat"]) // FEE_STEP
    assert (a1["fee_sat"] - a0["fee_sat"]) % FEE_STEP == 0
    # (about one switch per 3 payments without the dwell here, one per 15-20 with it)
    assert switches * 5 <= payments, (switches, payments)
    assert a.api("node.status")["turn_dwells"] + b.api("node.status")["turn_dwells"] > 0

    # The cooperative close, read from the chain: only the close's own fee, the same as for an
    # unused channel; the reserve of every switch came back to whoever paid it.
    mark = {n.name: len(n.logs) for n in (a, b)}
    assert a1["close_sat"] == a1["local_sat"] + a1["fee_paid_sat"] - base_fee, a1
    assert b1["close_sat"] == b1["local_sat"] + b1["fee_paid_sat"], b1
    st = a.cli("channel", "close", cid)
    assert st["state"] in ("CLOSING", "CLOSED"), st
    poll(lambda: (b.channel(cid) or {}).get("state") in ("CLOSING", "CLOSED"), "b sees the close")
    try:
        txid = _close_txid(b, cid, mark["b"])
    except AssertionError:
        txid = _close_txid(a, cid, mark["a"])
    cluster.chain.mine(1)
    tx = cluster.chain.tx(txid)
    assert tx["confirmations"] >= 1
    outs = sorted(o.value for o in T.outputs_of(T.parse_tx(bytes.fromhex(tx["hex"]))))
    fee_on_chain = CAPACITY - sum(outs)
    assert outs == sorted([a1["close_sat"], b1["close_sat"]])
    assert fee_on_chain == base_fee
    moved = payments  # 1 sat each
    # What the two-way trade cost on chain beyond the close every channel pays once: nothing.
    # (Before the reserve, the close paid every step: switches x FEE_STEP.)
    assert fee_on_chain - base_fee <= moved // 100, (fee_on_chain, base_fee, moved)
    print(f"two-way: {payments} payments ({sent_a} a->b, {sent_b} b->a) in {RUN_S} s, {switches} switches, "
          f"reserve at close {a1['fee_sat'] - base_fee} sat returned, close fee {fee_on_chain} sat")
