"""``eschaton pay --max-price``: a multi-hop payment whose cheapest route (amount and fees) costs
more than the ceiling is refused with one line and nothing paid (no record, no escrow, the
balances unchanged); within the ceiling it is paid."""
from __future__ import annotations

import pytest

from tests.integration.node.harness import Cluster
from tests.integration.node.test_multihop import AMOUNT, _close_sats, _line

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_route_dearer_than_max_price_is_refused_before_paying(cluster: Cluster) -> None:
    nodes, _cids = _line(cluster, "abc")
    a, c = nodes[0], nodes[-1]
    req = c.cli("invoice", "create", str(AMOUNT))
    route = a.cli("route", c.id, str(AMOUNT))
    total = AMOUNT + sum(route["fees_sat"])
    assert total > AMOUNT  # b charges a fee
    before = {n.name: sum(_close_sats(n).values()) for n in nodes}

    over = a.cli_fail("pay", req["request"], "--id", "mp-1", "--max-price", str(total - 1))
    assert f"exceeds --max-price {total - 1} sat; nothing paid" in over.stderr, over.stderr
    assert "Traceback" not in over.stderr and len(over.stderr.strip().splitlines()) == 1
    under = a.cli_fail("pay", req["request"], "--max-price", str(AMOUNT - 1))
    assert "alone exceeds --max-price" in under.stderr
    assert {n.name: sum(_close_sats(n).values()) for n in nodes} == before
    assert "no payment" in a.cli_fail("payment", "mp-1").stderr  # nothing was recorded

    paid = a.cli("pay", req["request"], "--id", "mp-1", "--max-price", str(total))
    assert paid["state"] == "complete" and paid["fee_sat"] == total - AMOUNT
