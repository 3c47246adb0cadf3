"""Payments cost the chain server nothing: with no block mined, N payments both ways add a
constant number of requests (at most the watcher's slow periodic look and the status reads),
whatever N is. Counted by the nodes' real Electrum clients (``node.status`` chain.requests) over
a separate ``chain serve``. Blocks still wake the watcher: a cooperative close is broadcast and
seen confirmed afterwards."""
from __future__ import annotations

import pytest

from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    channel_pair,
    mirrored,
    pay,
    poll,
)

pytestmark = pytest.mark.timeout(240)

# One watcher pass over one channel is a tip query and two per channel; the periodic timer may
# fire once in the window, and each status read costs a tip query.
BOUND = 8


def _requests(n: NodeProc) -> int:
    return int(n.api("node.status")["chain"]["requests"])


def _payments(payer: NodeProc, cid: str, count: int) -> None:
    for i in range(count):
        st = payer.api("channel.pay", channel=cid, amount=1)
        assert st["payment_state"] == "complete", (i, st)


def test_payments_make_no_chain_requests(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, 4_000_000, "--step", "1", serve=True)
    pay(a, b, cid, 100_000)
    height = cluster.chain.height()

    spent: list[dict[str, int]] = []
    for n_pay in (5, 30):
        before = {n.name: _requests(n) for n in (a, b)}
        _payments(a, cid, n_pay)
        _payments(b, cid, n_pay)  # one direction switch each way: the turn moves too
        _payments(a, cid, 1)
        mirrored(a, b, cid)
        spent.append({n.name: _requests(n) - before[n.name] for n in (a, b)})
    assert cluster.chain.height() == height  # no block: nothing on chain changed
    for d in spent:
        assert all(v <= BOUND for v in d.values()), f"chain requests during payments: {spent}"

    # The watcher still follows the chain: a cooperative close is broadcast, and the block that
    # confirms it wakes both watchers (nothing else happens on the channels by then).
    syncs = b.api("node.status")["channel_watcher_syncs"]
    a.cli("channel", "close", cid)
    cluster.chain.mine(1)
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: channel CLOSED")
    assert b.api("node.status")["channel_watcher_syncs"] > syncs
