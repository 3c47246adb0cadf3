"""Payments requested at the same time from both ends of a channel (and two at once on one end)
all complete: requests on one node are signed one after the other (and pipeline while their acks
are outstanding), the turn passes back and forth,
with every satoshi accounted for on both sides."""
from __future__ import annotations

import asyncio

import pytest

from eschaton.api.client import call_async
from eschaton.core.channel.params import DEFAULT_MAX_CONTRACTS, min_fee_step
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    channel_pair,
    mirrored,
    pay,
)

pytestmark = pytest.mark.timeout(180)

CAPACITY = 6_000_000
FEE_STEP = min_fee_step(DEFAULT_MAX_CONTRACTS)  # the node's channel parameters: fee step paid by whoever switches direction


async def _pays(node: NodeProc, cid: str, amounts: list[int]) -> list[object]:
    out: list[object] = []
    for amount in amounts:
        try:
            out.append(await call_async(node.datadir, "channel.pay", {"channel": cid, "amount": amount},
                                        timeout=60))
        except Exception as e:  # recorded and asserted on below, with the message
            out.append(e)
    return out


def test_concurrent_pays_from_both_sides(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY, "--step", "1")
    pay(a, b, cid, 2_000_000)
    a0, b0 = mirrored(a, b, cid)

    from_a = [1_000 + i for i in range(15)]
    from_a2 = [50 + i for i in range(5)]  # a second stream of requests on the same node
    from_b = [700 + i for i in range(15)]

    async def all_at_once() -> list[list[object]]:
        return list(await asyncio.gather(_pays(a, cid, from_a), _pays(b, cid, from_b),
                                         _pays(a, cid, from_a2)))

    logged = {n.name: len(n.logs) for n in (a, b)}
    results = asyncio.run(all_at_once())
    failures = [r for rs in results for r in rs if isinstance(r, Exception)]
    assert not failures, failures
    # 35 payments and their direction switches: per-payment events are counted into a summary
    # line (daemon/activity.py), not logged one by one (that was ~1.4 lines per payment).
    for n in (a, b):
        new_lines = [r.get("msg", "") for r in n.logs[logged[n.name]:]]
        assert len(new_lines) <= 5, new_lines

    a1, b1 = mirrored(a, b, cid)
    sent_a, sent_b = sum(from_a) + sum(from_a2), sum(from_b)
    assert a1["version"] == a0["version"] + len(from_a) + len(from_a2) + len(from_b)
    # Each side paid exactly its payments plus whole fee steps for the switches it made.
    fee_a = a0["local_sat"] - sent_a + sent_b - a1["local_sat"]
    fee_b = b0["local_sat"] + sent_a - sent_b - b1["local_sat"]
    assert fee_a >= 0 and fee_b >= 0 and fee_a % FEE_STEP == 0 and fee_b % FEE_STEP == 0, (fee_a, fee_b)
    assert fee_a + fee_b == a1["fee_sat"] - a0["fee_sat"]
    assert a1["local_sat"] + a1["remote_sat"] + a1["fee_sat"] == CAPACITY
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
    pay(b, a, cid, 10)  # and plain sequential use goes on


def test_many_simultaneous_pays_pipeline_on_one_channel(cluster: Cluster) -> None:
    """Forty payments requested at once on one node (each its own API call) while the peer pays
    back: the payer's versions pipeline (at most 32 in flight: the rest wait for acks), queued
    requests share group commits, each call returns once the ack covering it is in, and both
    nodes agree on every satoshi."""
    a, b, cid = channel_pair(cluster, CAPACITY, "--step", "1")
    pay(a, b, cid, 1_000_000)
    a0, b0 = mirrored(a, b, cid)
    commits0 = a.api("node.status")["channel_store_commits"]
    burst = [2_000 + i for i in range(40)]  # more than the core's 32 versions in flight
    back = [300 + i for i in range(5)]

    async def all_at_once() -> list[list[object]]:
        return list(await asyncio.gather(*(_pays(a, cid, [x]) for x in burst), _pays(b, cid, back)))

    logged = {n.name: len(n.logs) for n in (a, b)}
    results = asyncio.run(all_at_once())
    failures = [r for rs in results for r in rs if isinstance(r, Exception)]
    assert not failures, failures
    # 35 payments and their direction switches: per-payment events are counted into a summary
    # line (daemon/activity.py), not logged one by one (that was ~1.4 lines per payment).
    for n in (a, b):
        new_lines = [r.get("msg", "") for r in n.logs[logged[n.name]:]]
        assert len(new_lines) <= 5, new_lines
    a1, b1 = mirrored(a, b, cid)
    commits = a.api("node.status")["channel_store_commits"] - commits0
    assert a1["version"] == a0["version"] + len(burst) + len(back)
    # Requests that queue up share group commits (one fsync for several versions): far fewer
    # store transactions than payments (one commit per request gave about one per payment here).
    assert commits < len(burst), commits
    fees = a1["fee_sat"] - a0["fee_sat"]
    assert a1["local_sat"] + b1["local_sat"] + a1["fee_sat"] == CAPACITY
    assert (a0["local_sat"] - sum(burst) + sum(back)) - a1["local_sat"] + \
        (b0["local_sat"] + sum(burst) - sum(back)) - b1["local_sat"] == fees
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
